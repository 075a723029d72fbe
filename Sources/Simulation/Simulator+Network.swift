import KeyrackCore
import SecretSharing
import TrustQuorum

// Applying events: the simulated network (one FIFO queue per directed link),
// crashes, partitions and the nodes' processing of their output.

extension Simulator {
    // MARK: - Applying events

    /// Applies one event and checks the invariants.
    public func apply(_ event: SimulationEvent) {
        log.append(event)
        let count = nodes.count
        func valid(_ index: Int) -> Bool { (0..<count).contains(index) }
        switch event {
        case .deliver(let from, let to):
            guard valid(from), valid(to), let message = pop(from, to) else { break }
            if options.faults.contains(.byzantine) { capture(message) }
            nodes[to].node.received(from: ids[from], message: message)
            process(to)
        case .drop(let from, let to):
            guard valid(from), valid(to) else { break }
            _ = pop(from, to)
        case .duplicate(let from, let to):
            guard valid(from), valid(to), let message = queues[from * count + to].peek() else { break }
            nodes[to].node.received(from: ids[from], message: message)
            process(to)
        case .reorder(let from, let to):
            guard valid(from), valid(to), let message = pop(from, to) else { break }
            push(message, from, to)
        case .partition(let mask):
            partitionMask = mask
            updateConnectivity()
        case .heal:
            partitionMask = nil
            updateConnectivity()
        case .crash(let node):
            guard valid(node) else { break }
            crash(node)
        case .crashForEpochs(let node, let epochs):
            guard valid(node) else { break }
            crash(node)
            let span = UInt64(min(max(0, epochs), 1_000_000))
            nodes[node].downUntilEpoch = Epoch(controlPlane.highestEpoch.value &+ span)
        case .restart(let node):
            guard valid(node), !nodes[node].up else { break }
            nodes[node].node = Node(
                platformId: ids[node], rackId: rackId, persistentState: nodes[node].persisted,
                operatorVerifier: operatorVerifier)
            nodes[node].up = true
            available.insert(ids[node])
            nodes[node].downUntilEpoch = nil
            process(node)
            updateConnectivity()
        case .reconnectAll:
            updateConnectivity(bounce: true)
        case .tick:
            controlPlaneStep()
        case .rotate:
            startReconfiguration(targetMembers)
        case .addNode(let node) where controlPlane.inLrtq:
            guard valid(node), !targetMembers.contains(node), !controlPlane.isReconfiguring else { break }
            addUnderLrtq(node)
        case .addNode(let node):
            guard valid(node), !targetMembers.contains(node), !controlPlane.isReconfiguring else { break }
            if retired.contains(node) {
                // A removed node is wiped before it joins again.
                retired.remove(node)
                nodes[node].persisted = .empty
                nodes[node].node = Node(platformId: ids[node], rackId: rackId, operatorVerifier: operatorVerifier)
                loadedBy[node] = nil
                markDirty(node)
                if nodes[node].up { updateConnectivity(bouncing: node) }
            }
            startReconfiguration(targetMembers.union([node]))
        case .removeNode(let node):
            guard valid(node) else { break }
            if startReconfiguration(targetMembers.subtracting([node])) { retired.insert(node) }
        case .loadSecret(let node, let epoch):
            guard valid(node) else { break }
            load(node, Epoch(epoch))
        case .upgradeFromLrtq:
            startUpgrade(targetMembers)
        case .forge(let target, let seed):
            forge(target: target, seed: seed)
        }
        checkInvariants()
    }

    func pop(_ from: Int, _ to: Int) -> Message? {
        let link = from * nodes.count + to
        let message = queues[link].pop()
        if queues[link].isEmpty { deactivate(link) }
        return message
    }

    func push(_ message: Message, _ from: Int, _ to: Int) {
        let link = from * nodes.count + to
        queues[link].push(message)
        if activePosition[link] < 0 {
            activePosition[link] = activeLinks.count
            activeLinks.append(link)
        }
    }

    /// The messages waiting on the link `from → to`, oldest first (for the debugger).
    func queuedMessages(from: Int, to: Int) -> [Message] {
        let queue = queues[from * nodes.count + to]
        return Array(queue.items[queue.head...])
    }

    func deactivate(_ link: Int) {
        let position = activePosition[link]
        guard position >= 0 else { return }
        let last = activeLinks.removeLast()
        if last != link {
            activeLinks[position] = last
            activePosition[last] = position
        }
        activePosition[link] = -1
    }

    /// Carries out a node's output: persist first, then send, and record alarms.
    func process(_ index: Int) {
        markDirty(index)
        var output = nodes[index].node.drainOutput()
        outputTamper?(index, &output)
        if output.persistentStateChanged { nodes[index].persisted = nodes[index].node.persistentState }
        if !output.alarms.isEmpty {
            nodes[index].alarms += output.alarms
            alarmCount += output.alarms.count
        }
        warningCount += output.warnings.count
        for outgoing in output.messages {
            messagesSent += 1
            guard let to = indexOf[outgoing.to], linkUp[index * nodes.count + to] else { continue }
            var message = outgoing.message
            if options.wireEncoding {
                switch InvariantChecker.checkWireRoundTrip(message) {
                case .success(let decoded):
                    message = decoded
                case .failure(var violation):
                    violation.eventIndex = log.count - 1
                    violations.append(violation)
                    continue
                }
            }
            push(message, index, to)
        }
    }

    func crash(_ index: Int) {
        guard nodes[index].up else { return }
        nodes[index].up = false
        loadedBy[index] = nil  // its cached secrets are gone
        markDirty(index)
        available.remove(ids[index])
        nodes[index].node = Node(
            platformId: ids[index], rackId: rackId, persistentState: nodes[index].persisted,
            operatorVerifier: operatorVerifier)
        _ = nodes[index].node.drainOutput()
        updateConnectivity()
    }

    /// Opens and closes links to match who is up and the partition; with
    /// `bounce`, closes every open link first.
    func updateConnectivity(bounce: Bool = false) {
        let count = nodes.count
        for a in 0..<count {
            for b in (a + 1)..<count {
                let sameSide = partitionMask.map { (($0 >> UInt64(a)) & 1) == (($0 >> UInt64(b)) & 1) } ?? true
                let shouldBeUp = nodes[a].up && nodes[b].up && sameSide
                let isUp = linkUp[a * count + b]
                if isUp && (!shouldBeUp || bounce) { closeLink(a, b) }
                if shouldBeUp && !linkUp[a * count + b] { openLink(a, b) }
            }
        }
    }

    /// Closes and reopens every link of `node` (it was replaced by a fresh process).
    func updateConnectivity(bouncing node: Int) {
        let count = nodes.count
        for other in 0..<count where other != node && linkUp[node * count + other] {
            closeLink(min(node, other), max(node, other))
        }
        updateConnectivity()
    }

    func closeLink(_ a: Int, _ b: Int) {
        let count = nodes.count
        linkUp[a * count + b] = false
        linkUp[b * count + a] = false
        for link in [a * count + b, b * count + a] {
            queues[link].clear()
            deactivate(link)
        }
        if nodes[a].up {
            nodes[a].node.disconnected(ids[b])
            process(a)
        }
        if nodes[b].up {
            nodes[b].node.disconnected(ids[a])
            process(b)
        }
    }

    func openLink(_ a: Int, _ b: Int) {
        let count = nodes.count
        linkUp[a * count + b] = true
        linkUp[b * count + a] = true
        nodes[a].node.connected(ids[b])
        process(a)
        nodes[b].node.connected(ids[a])
        process(b)
    }
}
