/// What a challenge store needs from Redis: commands, scripts, a readiness
/// probe. ``RedisClient`` (one server) conforms; a Redis Cluster client
/// routes each command to the master of its key's slot.
public protocol RedisCommanding: Sendable {
    /// Sends one command and returns the reply. On a cluster the command's
    /// first key (its second word) chooses the node.
    func send(_ command: [RESPArgument]) async throws(RedisError) -> RESPValue

    /// Runs a Lua script with `EVALSHA`, loading it when the server lacks it.
    /// On a cluster every key must hash to one slot.
    func evaluate(
        _ script: RedisScript,
        keys: [RESPArgument],
        arguments: [RESPArgument]
    ) async throws(RedisError) -> RESPValue

    /// Succeeds when the store can serve (`PING` answered; on a cluster, every master).
    func checkReady() async throws(RedisError)

    /// Closes every connection and refuses further commands.
    func shutdown()
}

extension RedisClient: RedisCommanding {
    public func checkReady() async throws(RedisError) {
        _ = try await send(["PING"])
    }
}
