import TrustQuorum

/// A step-through debugger over a recorded simulator run.
///
/// It replays the logged events one at a time on a fresh ``Simulator``
/// (replay is deterministic, so every step is exactly what the recorded run
/// did) and answers commands, as text:
///
/// - `step [N]`: apply the next event (or N), stopping early at a violation.
/// - `run`: apply events until the end of the log, a breakpoint or a violation.
/// - `break event N | node ID | alarm`: stop once event N is applied, after
///   any event that names node ID or changes what `show node ID` prints, or
///   after an event that raises an alarm. `break` alone lists them,
///   `delete [N]` removes one (or all).
/// - `rewind [N]`: go back one event (or N) by replaying from the start.
/// - `show node ID`: its configurations, shares (as digests only), commits
///   and coordinator phase. A node is named by its index (`3` or `n3`) or
///   by its serial.
/// - `diff`: what the last step changed.
/// - `events [FROM TO]`: the logged events, around the position by default.
/// - `summary`: position, control plane, nodes, alarms and violations.
///
/// A run stops at its first violation; the debugger names the invariant.
public final class Debugger {
    /// A condition that stops `run`.
    public enum Breakpoint: Equatable, Sendable, CustomStringConvertible {
        /// Once the event with this index is applied.
        case event(Int)
        /// After an event that names the node or changes its state.
        case node(Int)
        /// After an event that raises an alarm.
        case alarm

        public var description: String {
            switch self {
            case .event(let index): return "event \(index)"
            case .node(let index): return "node \(index)"
            case .alarm: return "alarm"
            }
        }
    }

    /// The options of the recorded run.
    public let options: SimulationOptions
    /// The recorded events.
    public let events: [SimulationEvent]
    /// The breakpoints, in the order they were set.
    public private(set) var breakpoints: [Breakpoint] = []

    private let makeSimulator: (SimulationOptions) -> Simulator
    private(set) var simulator: Simulator
    /// The state before and after the last step, for `diff`.
    private var lastStep: (index: Int, before: DebugSnapshot, after: DebugSnapshot)?

    /// A debugger at the start of the run of `options` and `events`.
    ///
    /// `makeSimulator` builds the simulator to replay on; tests pass one
    /// with a deliberately broken node variant (``Simulator/outputTamper``).
    public init(
        options: SimulationOptions,
        events: [SimulationEvent],
        makeSimulator: @escaping (SimulationOptions) -> Simulator = { Simulator(options: $0) }
    ) {
        self.options = options
        self.events = events
        self.makeSimulator = makeSimulator
        simulator = makeSimulator(options)
    }

    /// A debugger over an event log written by `keyrack sim` (``EventLog``).
    public convenience init(logText: String) throws(EventLog.ParseError) {
        let (options, events) = try EventLog.decode(logText)
        self.init(options: options, events: events)
    }

    /// How many events have been applied; the next event has this index.
    public var position: Int { simulator.log.count }

    /// The first violation seen so far, if any.
    public var violation: Violation? { simulator.violations.first }

    /// The simulator's state digest (``Simulator/stateSummary``), to compare
    /// a replay with the recorded run.
    public var stateSummary: String { simulator.stateSummary }

    // MARK: - Commands

    /// Runs every command of `script` (one a line; blank lines and lines
    /// starting with `#` are skipped) and returns the transcript: each
    /// command after a `(sim) ` prompt, then its output.
    public func run(script: String) -> String {
        var transcript = ""
        for raw in script.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingSpaces()
            if line.isEmpty || line.hasPrefix("#") { continue }
            transcript += "(sim) \(line)\n"
            let output = execute(line)
            if !output.isEmpty { transcript += output + "\n" }
        }
        return transcript
    }

    /// Runs one command and returns what it prints (no trailing newline).
    public func execute(_ line: String) -> String {
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let command = words.first else { return "" }
        let arguments = Array(words.dropFirst())
        switch command {
        case "step", "s": return step(arguments)
        case "run", "r", "continue", "c": return runToBreak()
        case "break", "b": return setBreakpoint(arguments)
        case "delete": return deleteBreakpoint(arguments)
        case "rewind": return rewind(arguments)
        case "show": return show(arguments)
        case "diff": return diff()
        case "events": return listEvents(arguments)
        case "summary": return summary()
        case "help", "?": return Self.help
        default: return "unknown command '\(command)'; try help"
        }
    }

    /// The list of commands.
    public static let help = """
        step [N]                        apply the next event (or N)
        run                             apply events to the end, a breakpoint or a violation
        break event N | node ID | alarm stop once event N is applied / after an event touching node ID / after an alarm
        break                           list breakpoints
        delete [N]                      delete breakpoint N (numbered from 1), or all
        rewind [N]                      go back one event (or N)
        show node ID                    configurations, shares (digests only), commits, coordinator phase
        diff                            what the last step changed
        events [FROM TO]                the logged events (around the position by default)
        summary                         position, control plane, nodes, alarms, violations
        quit                            leave (interactive mode)
        """

    private func step(_ arguments: [String]) -> String {
        let count: Int
        if let first = arguments.first {
            guard let value = Int(first), value >= 1 else { return "step takes a positive count" }
            count = value
        } else {
            count = 1
        }
        if let stopped = cannotAdvance() { return stopped }
        var lines: [String] = []
        for _ in 0..<count {
            guard position < events.count, violation == nil else { break }
            lines.append(applyNext())
        }
        if lines.count > 8 {
            lines = ["… \(lines.count - 5) events …"] + lines.suffix(5)
        }
        return (lines + stopReport()).joined(separator: "\n")
    }

    private func runToBreak() -> String {
        if let stopped = cannotAdvance() { return stopped }
        let start = position
        var hit: Breakpoint?
        while position < events.count, violation == nil, hit == nil {
            let index = position
            let event = events[index]
            let watched = watchedNodes()
            let before = watched.map { DebugSnapshot.node($0, in: simulator) }
            let alarms = simulator.alarmCount
            simulator.apply(event)
            for breakpoint in breakpoints where hit == nil {
                switch breakpoint {
                case .event(let target):
                    if target == index { hit = breakpoint }
                case .alarm:
                    if simulator.alarmCount > alarms { hit = breakpoint }
                case .node(let node):
                    let slot = watched.firstIndex(of: node)!
                    if Self.names(event, node) || before[slot] != DebugSnapshot.node(node, in: simulator) {
                        hit = breakpoint
                    }
                }
            }
        }
        var lines = ["ran \(position - start) event(s)"]
        if position > 0 { lines.append(describe(position - 1)) }
        if let hit { lines.append("breakpoint: \(hit)") }
        return (lines + stopReport()).joined(separator: "\n")
    }

    private func watchedNodes() -> [Int] {
        breakpoints.compactMap { if case .node(let node) = $0 { return node } else { return nil } }
    }

    private static func names(_ event: SimulationEvent, _ node: Int) -> Bool {
        switch event {
        case .deliver(let from, let to), .drop(let from, let to), .duplicate(let from, let to),
            .reorder(let from, let to):
            return from == node || to == node
        case .crash(let index), .crashForEpochs(let index, _), .restart(let index), .addNode(let index),
            .removeNode(let index), .loadSecret(let index, _):
            return index == node
        case .forge(let target, _):
            return target == node
        case .partition, .heal, .reconnectAll, .tick, .rotate, .upgradeFromLrtq:
            return false
        }
    }

    private func cannotAdvance() -> String? {
        if let violation {
            return
                "stopped at a violation of \(violation.invariant.rawValue) (event \(violation.eventIndex ?? -1)); rewind to go back"
        }
        if position >= events.count { return "at the end of the log (\(events.count) events)" }
        return nil
    }

    /// Applies the next event, remembering the change for `diff`, and describes it.
    private func applyNext() -> String {
        let index = position
        let before = DebugSnapshot(simulator)
        let message = headMessage(events[index])
        simulator.apply(events[index])
        lastStep = (index, before, DebugSnapshot(simulator))
        return describe(index, message: message)
    }

    /// What the violation or the end of the log means, if either was reached.
    private func stopReport() -> [String] {
        if let violation {
            return [
                "VIOLATION of invariant \(violation.invariant.rawValue) at event \(violation.eventIndex ?? -1): \(violation.detail)"
            ]
        }
        if position >= events.count { return ["end of the log (\(events.count) events)"] }
        return []
    }

    private func headMessage(_ event: SimulationEvent) -> Message? {
        switch event {
        case .deliver(let from, let to), .drop(let from, let to), .duplicate(let from, let to),
            .reorder(let from, let to):
            guard simulator.nodes.indices.contains(from), simulator.nodes.indices.contains(to) else { return nil }
            return simulator.queuedMessages(from: from, to: to).first
        default:
            return nil
        }
    }

    private func describe(_ index: Int, message: Message? = nil) -> String {
        let text = "event \(index): \(Self.describe(events[index]))"
        return message.map { text + " (\($0))" } ?? text
    }

    /// One line per event, nodes named by index.
    static func describe(_ event: SimulationEvent) -> String {
        switch event {
        case .deliver(let from, let to): return "deliver n\(from) → n\(to)"
        case .drop(let from, let to): return "drop n\(from) → n\(to)"
        case .duplicate(let from, let to): return "duplicate n\(from) → n\(to)"
        case .reorder(let from, let to): return "reorder n\(from) → n\(to)"
        case .partition(let mask):
            return "partition \(describeMask(mask))"
        case .heal: return "heal the partition"
        case .crash(let node): return "crash n\(node)"
        case .crashForEpochs(let node, let epochs): return "crash n\(node) for \(epochs) epochs"
        case .restart(let node): return "restart n\(node)"
        case .reconnectAll: return "reconnect every link"
        case .tick: return "control-plane tick"
        case .rotate: return "operator: rotate the secret"
        case .upgradeFromLrtq: return "operator: upgrade from LRTQ to the trust quorum"
        case .addNode(let node): return "operator: add n\(node)"
        case .removeNode(let node): return "operator: remove n\(node)"
        case .loadSecret(let node, let epoch): return "n\(node) loads the secret of epoch \(epoch)"
        case .forge(let target, let seed):
            return "the Byzantine node sends n\(target) forgery \(seed % 6) (seed \(seed))"
        }
    }

    private static func describeMask(_ mask: UInt64) -> String {
        let side = (0..<64).filter { (mask >> UInt64($0)) & 1 == 1 }.map { "n\($0)" }
        return side.isEmpty ? "(everyone on one side)" : "{\(side.joined(separator: " "))} from the rest"
    }

    private func setBreakpoint(_ arguments: [String]) -> String {
        guard let kind = arguments.first else {
            if breakpoints.isEmpty { return "no breakpoints" }
            return breakpoints.enumerated().map { "\($0.offset + 1): \($0.element)" }.joined(separator: "\n")
        }
        let breakpoint: Breakpoint
        switch kind {
        case "event":
            guard arguments.count == 2, let index = Int(arguments[1]), index >= 0 else {
                return "usage: break event N"
            }
            breakpoint = .event(index)
        case "node":
            guard arguments.count == 2 else { return "usage: break node ID" }
            guard let node = node(named: arguments[1]) else { return "no node \(arguments[1])" }
            breakpoint = .node(node)
        case "alarm":
            breakpoint = .alarm
        default:
            return "usage: break event N | node ID | alarm"
        }
        if !breakpoints.contains(breakpoint) { breakpoints.append(breakpoint) }
        return "breakpoint \(breakpoints.firstIndex(of: breakpoint)! + 1): \(breakpoint)"
    }

    private func deleteBreakpoint(_ arguments: [String]) -> String {
        guard let first = arguments.first else {
            breakpoints.removeAll()
            return "deleted all breakpoints"
        }
        guard let number = Int(first), (1...breakpoints.count).contains(number) else {
            return "no breakpoint \(first)"
        }
        let removed = breakpoints.remove(at: number - 1)
        return "deleted breakpoint \(number): \(removed)"
    }

    private func rewind(_ arguments: [String]) -> String {
        var count = 1
        if let first = arguments.first {
            guard let value = Int(first), value >= 1 else { return "rewind takes a positive count" }
            count = value
        }
        let target = max(0, position - count)
        rebuild(to: target)
        return target == 0 ? "rewound to the start" : "rewound to after \(describe(target - 1))"
    }

    /// Replays from the start to `target` events, keeping the last step for `diff`.
    private func rebuild(to target: Int) {
        simulator = makeSimulator(options)
        lastStep = nil
        guard target > 0 else { return }
        for event in events[..<(target - 1)] { simulator.apply(event) }
        let before = DebugSnapshot(simulator)
        simulator.apply(events[target - 1])
        lastStep = (target - 1, before, DebugSnapshot(simulator))
    }

    private func node(named name: String) -> Int? {
        let bare = name.hasPrefix("n") ? String(name.dropFirst()) : name
        if let index = Int(bare), simulator.nodes.indices.contains(index) { return index }
        return simulator.ids.firstIndex { $0.serial == name || $0.description == name }
    }

    private func show(_ arguments: [String]) -> String {
        guard arguments.count == 2, arguments[0] == "node" else { return "usage: show node ID" }
        guard let index = node(named: arguments[1]) else { return "no node \(arguments[1])" }
        let entity = DebugSnapshot.node(index, in: simulator)
        var lines = ["node \(index) (\(simulator.ids[index])) after \(position) event(s)"]
        for (key, value) in entity.facts { lines.append("  \(key): \(value)") }
        let waiting = simulator.nodes.indices.map { simulator.queuedMessages(from: $0, to: index).count }
            .reduce(0, +)
        lines.append("  messages waiting for it: \(waiting)")
        return lines.joined(separator: "\n")
    }

    private func diff() -> String {
        guard position > 0 else { return "no step yet" }
        if lastStep?.index != position - 1 {
            // `run` does not snapshot every step: replay to just before the last one.
            rebuild(to: position)
        }
        guard let lastStep else { return "no step yet" }
        let changes = lastStep.after.diff(from: lastStep.before)
        let header = "\(describe(lastStep.index)) changed:"
        return ([header] + (changes.isEmpty ? ["  nothing"] : changes.map { "  " + $0 })).joined(separator: "\n")
    }

    private func listEvents(_ arguments: [String]) -> String {
        var from = max(0, position - 5)
        var to = min(events.count - 1, position + 5)
        if arguments.count == 2, let first = Int(arguments[0]), let last = Int(arguments[1]) {
            from = max(0, first)
            to = min(events.count - 1, last)
        } else if !arguments.isEmpty {
            return "usage: events [FROM TO]"
        }
        guard from <= to else { return "no events in that range (the log has \(events.count))" }
        return (from...to).map { index in
            let marker = index == position - 1 ? ">" : " "
            return "\(marker) \(index): \(Self.describe(events[index]))"
        }.joined(separator: "\n")
    }

    private func summary() -> String {
        var lines = [
            "position: \(position) of \(events.count) events"
                + (position > 0 ? " (last applied: \(describe(position - 1)))" : ""),
            "run: \(options.nodes) nodes + \(options.spareNodes) spares, seed \(options.seed), "
                + "faults \(DebugSnapshot.list(options.faults.names))",
        ]
        for (key, value) in DebugSnapshot.controlPlane(simulator).facts {
            lines.append("control plane \(key): \(value)")
        }
        let up = simulator.nodes.indices.filter { simulator.nodes[$0].up }.map { "n\($0)" }
        let down = simulator.nodes.indices.filter { !simulator.nodes[$0].up }.map { "n\($0)" }
        lines.append("nodes up: \(DebugSnapshot.list(up)); down: \(DebugSnapshot.list(down))")
        let committed = simulator.nodes.indices.map { index -> String in
            let node = simulator.nodes[index]
            let state = node.up ? node.node.persistentState : node.persisted
            return "n\(index)=\(state.latestCommittedEpoch?.description ?? "-")"
        }
        lines.append("latest committed epoch per node: \(committed.joined(separator: " "))")
        let inFlight = simulator.nodes.indices.flatMap { from in
            simulator.nodes.indices.map { simulator.queuedMessages(from: from, to: $0).count }
        }.reduce(0, +)
        lines.append("messages in flight: \(inFlight)")
        lines.append("breakpoints: \(DebugSnapshot.list(breakpoints.map(\.description)))")
        if let violation {
            lines.append(
                "violation: \(violation.invariant.rawValue) at event \(violation.eventIndex ?? -1): \(violation.detail)"
            )
        } else {
            lines.append("violations: none")
        }
        return lines.joined(separator: "\n")
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        return String(self.drop(while: isSpace).reversed().drop(while: isSpace).reversed())
    }
}
