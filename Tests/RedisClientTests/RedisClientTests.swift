import KeyrackTestSupport
import NIOCore
import Testing

@testable import RedisClient

@Suite("Redis client against a real redis-server", .serialized)
struct RedisClientTests {
    let server: RedisServer
    let client: RedisClient

    init() throws {
        server = try RedisServer()
        var configuration = try RedisConfiguration(url: server.url(database: 2))
        // These tests are not about timeouts (one test sets its own); a busy
        // machine must not turn a slow reply into a failure.
        configuration.commandTimeout = .seconds(15)
        client = RedisClient(configuration: configuration)
    }

    @Test("strings, binary values, integers, nulls and arrays round trip")
    func roundTrip() async throws {
        #expect(try await client.send(["PING"]) == .simpleString("PONG"))
        let binary: [UInt8] = [0, 255, 13, 10, 36]
        _ = try await client.send(["SET", "k", .bytes(binary)])
        #expect(try await client.send(["GET", "k"]) == .bulkString(binary))
        #expect(try await client.send(["GET", "missing"]).isNull)
        #expect(try await client.send(["INCRBY", "n", .int(41)]).integer == 41)
        _ = try await client.send(["RPUSH", "l", "a", "b"])
        #expect(try await client.send(["LRANGE", "l", "0", "-1"]) == .array([.bulkString([97]), .bulkString([98])]))
        // The database in the URL is selected.
        #expect(try await client.send(["CLIENT", "INFO"]).string?.contains("db=2") == true)
    }

    @Test("an error reply is thrown and the connection stays usable")
    func serverError() async throws {
        await #expect(throws: RedisError.self) { try await client.send(["NOSUCHCOMMAND"]) }
        do {
            _ = try await client.send(["INCR", "text-key", "extra"])
            Issue.record("expected an error")
        } catch {
            guard case .server(let message) = error else { throw error }
            #expect(message.hasPrefix("ERR"))
        }
        #expect(try await client.send(["PING"]) == .simpleString("PONG"))
    }

    @Test("many concurrent commands on a small pool all complete, in order per connection")
    func concurrency() async throws {
        let small = RedisClient(
            configuration: RedisConfiguration(host: "127.0.0.1", port: server.port, maximumConnections: 3)
        )
        defer { small.shutdown() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<300 {
                group.addTask {
                    _ = try await small.send(["INCR", "counter"])
                    let echoed = try await small.send(["ECHO", .string("value-\(index)")])
                    #expect(echoed.string == "value-\(index)")
                }
            }
            try await group.waitForAll()
        }
        #expect(try await small.send(["GET", "counter"]).integer == 300)
    }

    @Test("pipelined mode: many concurrent callers share two connections and each gets its own reply")
    func pipelined() async throws {
        let shared = RedisClient(
            configuration: RedisConfiguration(host: "127.0.0.1", port: server.port, pipelinedConnections: 2)
        )
        defer { shared.shutdown() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<500 {
                group.addTask {
                    _ = try await shared.send(["INCR", "pipelined"])
                    let echoed = try await shared.send(["ECHO", .string("value-\(index)")])
                    #expect(echoed.string == "value-\(index)")
                }
            }
            try await group.waitForAll()
        }
        #expect(try await shared.send(["GET", "pipelined"]).integer == 500)
        let clients = try #require(try await shared.send(["CLIENT", "LIST"]).string)
        #expect(clients.split(separator: "\n").count <= 3)  // the two shared ones and this one's answerer
        // An error reply fails only its own command.
        await #expect(throws: RedisError.self) { try await shared.send(["NOSUCHCOMMAND"]) }
        #expect(try await shared.send(["PING"]) == .simpleString("PONG"))
    }

    @Test("pipelined mode: server down, unavailable; back up, the same client reconnects")
    func pipelinedOutage() async throws {
        let shared = RedisClient(
            configuration: RedisConfiguration(host: "127.0.0.1", port: server.port, pipelinedConnections: 2)
        )
        defer { shared.shutdown() }
        #expect(try await shared.send(["PING"]) == .simpleString("PONG"))
        server.stop()
        for _ in 0..<4 {
            do {
                _ = try await shared.send(["PING"])
                Issue.record("PING succeeded with the server down")
            } catch {
                guard case .unavailable = error else { throw error }
            }
        }
        try server.restart()
        for _ in 0..<4 { #expect(try await shared.send(["PING"]) == .simpleString("PONG")) }
    }

    @Test("scripts run with EVALSHA and are reloaded after SCRIPT FLUSH")
    func scripts() async throws {
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        #expect(try await client.evaluate(script, keys: ["s"], arguments: [.int(5)]).integer == 5)
        _ = try await client.send(["SCRIPT", "FLUSH"])
        #expect(try await client.evaluate(script, keys: ["s"], arguments: [.int(2)]).integer == 7)
    }

    @Test("a command that takes too long times out")
    func timeout() async throws {
        let impatient = RedisClient(
            configuration: RedisConfiguration(
                host: "127.0.0.1",
                port: server.port,
                commandTimeout: .milliseconds(200)
            )
        )
        defer { impatient.shutdown() }
        await #expect(throws: RedisError.timeout) {
            try await impatient.send(["BLPOP", "never-filled", "2"])
        }
        // The pool recovers with a fresh connection.
        #expect(try await impatient.send(["PING"]) == .simpleString("PONG"))
    }

    @Test("server down: commands fail as unavailable; back up: the same client works again")
    func outage() async throws {
        #expect(try await client.send(["PING"]) == .simpleString("PONG"))
        server.stop()
        for _ in 0..<3 {
            do {
                _ = try await client.send(["PING"])
                Issue.record("PING succeeded with the server down")
            } catch {
                guard case .unavailable = error else { throw error }
            }
        }
        try server.restart()
        #expect(try await client.send(["PING"]) == .simpleString("PONG"))
    }

    @Test("nothing listening: unavailable, quickly")
    func nothingListening() async throws {
        let port = try freeLoopbackPort()
        let lonely = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: port))
        await #expect(throws: RedisError.self) { try await lonely.send(["PING"]) }
    }
}
