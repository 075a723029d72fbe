import Foundation

/// The event log: JSON lines. The first line holds the options, each further
/// line one event with its index, so that a run can be replayed exactly
/// (``Simulator/replay(_:events:)``).
public enum EventLog {
    private struct Header: Codable {
        var keyrackSimulationLog: Int
        var options: SimulationOptions
    }

    private struct Line: Codable {
        var index: Int
        var event: SimulationEvent
    }

    /// Why a log could not be read.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        /// The 1-based line number.
        public let line: Int
        /// What is wrong.
        public let reason: String

        public var description: String { "event log line \(line): \(reason)" }
    }

    /// The log of a run with `options` and `events`.
    public static func encode(options: SimulationOptions, events: [SimulationEvent]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var lines: [String] = []
        lines.reserveCapacity(events.count + 1)
        let header = Header(keyrackSimulationLog: 1, options: options)
        lines.append(String(decoding: try! encoder.encode(header), as: UTF8.self))
        for (index, event) in events.enumerated() {
            lines.append(String(decoding: try! encoder.encode(Line(index: index, event: event)), as: UTF8.self))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Reads a log written by ``encode(options:events:)``.
    public static func decode(_ text: String) throws(ParseError) -> (SimulationOptions, [SimulationEvent]) {
        let decoder = JSONDecoder()
        var options: SimulationOptions?
        var events: [SimulationEvent] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            let data = Data(line.utf8)
            if options == nil {
                guard let header = try? decoder.decode(Header.self, from: data), header.keyrackSimulationLog == 1
                else { throw ParseError(line: number + 1, reason: "not a keyrack simulation log header") }
                options = header.options
                continue
            }
            guard let entry = try? decoder.decode(Line.self, from: data) else {
                throw ParseError(line: number + 1, reason: "not an event")
            }
            guard entry.index == events.count else {
                throw ParseError(line: number + 1, reason: "event index \(entry.index), expected \(events.count)")
            }
            events.append(entry.event)
        }
        guard let options else { throw ParseError(line: 1, reason: "empty log") }
        guard (3...32).contains(options.nodes), (0...32).contains(options.spareNodes), options.stallTicks >= 1,
            options.events >= 0
        else { throw ParseError(line: 1, reason: "options out of range") }
        return (options, events)
    }
}
