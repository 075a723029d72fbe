import Foundation
import Testing

@testable import Simulation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// Counts elements and lanes while parsing an SVG document.
final class SVGCounter: NSObject, XMLParserDelegate {
    var root: String?
    var lanes: [String] = []
    var classes: [String: Int] = [:]

    func parser(
        _ parser: XMLParser,
        didStartElement elementName: String,
        namespaceURI: String?,
        qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        if root == nil { root = elementName }
        if let kind = attributes["class"] { classes[kind, default: 0] += 1 }
        if elementName == "g", attributes["class"] == "lane", let node = attributes["data-node"] { lanes.append(node) }
    }
}

@Suite("The SVG timeline")
struct TimelineTests {
    func parse(_ svg: String) -> (Bool, SVGCounter) {
        let parser = XMLParser(data: Data(svg.utf8))
        let counter = SVGCounter()
        parser.delegate = counter
        return (parser.parse(), counter)
    }

    @Test("well-formed SVG with one lane per node, crashes, partitions and commits drawn")
    func wellFormed() {
        let options = SimulationOptions(nodes: 5, seed: 9, events: 3000)
        let simulator = Simulator(options: options)
        _ = record(simulator)
        let timeline = Timeline.record(options: options, events: simulator.log)
        let svg = timeline.svg()
        let (ok, counter) = parse(svg)
        #expect(ok, "the SVG is not well-formed XML")
        #expect(counter.root == "svg")
        #expect(counter.lanes == (0..<simulator.nodes.count).map(String.init))
        #expect(counter.lanes.count == options.nodes + options.spareNodes)
        let crashes = simulator.log.filter {
            if case .crash = $0 { return true }
            if case .crashForEpochs = $0 { return true }
            return false
        }
        #expect(!crashes.isEmpty)
        #expect(counter.classes["crash"] ?? 0 > 0)
        #expect(counter.classes["partition"] ?? 0 > 0)
        #expect(counter.classes["state"] ?? 0 >= counter.lanes.count)
        // Every lane covers every event, in order, without gaps.
        for lane in timeline.lanes {
            #expect(lane.segments.first?.start == 0)
            #expect(lane.segments.last?.end == simulator.log.count - 1)
            for (a, b) in zip(lane.segments, lane.segments.dropFirst()) { #expect(a.end + 1 == b.start) }
        }
        #expect(svg.contains("committed epoch"))
    }

    @Test("a broken node's violation and the behind/caught-up states show")
    func violationAndLag() {
        let options = SimulationOptions(nodes: 4, seed: 5, events: 800)
        let simulator = brokenSimulator(options)
        _ = record(simulator)
        let index = simulator.violations.first?.eventIndex
        #expect(index != nil)
        let timeline = Timeline.record(options: options, events: simulator.log, makeSimulator: brokenSimulator)
        #expect(timeline.violations.first?.event == index)
        let (ok, counter) = parse(timeline.svg())
        #expect(ok)
        #expect(counter.classes["violation"] == 1)
        #expect(counter.lanes.count == options.nodes + options.spareNodes)
    }

    @Test("lanes record falling behind and catching up")
    func behindAndCaughtUp() {
        let options = SimulationOptions(nodes: 5, seed: 21, events: 4000)
        let simulator = Simulator(options: options)
        _ = record(simulator)
        let timeline = Timeline.record(options: options, events: simulator.log)
        let states = timeline.lanes.flatMap(\.segments).map(\.state)
        #expect(states.contains { $0.member && $0.committed != nil && !$0.caughtUp && $0.up })
        #expect(states.contains { $0.caughtUp })
        // At the end (healed and settled) every member is caught up.
        for lane in timeline.lanes {
            if let last = lane.segments.last?.state, last.member { #expect(last.caughtUp, "n\(lane.node)") }
        }
    }
}
