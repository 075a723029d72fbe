extension Timeline {
    /// Layout of the picture, in SVG user units.
    private enum Layout {
        static let left = 190.0
        static let right = 30.0
        static let top = 96.0
        static let laneHeight = 34.0
        static let barHeight = 20.0
        static let plotWidth = 1200.0
    }

    /// The timeline as a standalone SVG document.
    ///
    /// Each node is a `<g class="lane">` with a `data-node` attribute; bars
    /// carry a `<title>` describing the interval.
    public func svg() -> String {
        let width = Layout.left + Layout.plotWidth + Layout.right
        let height = Layout.top + Layout.laneHeight * Double(lanes.count + 1) + 40
        let span = Double(max(eventCount, 1))
        func x(_ event: Int) -> Double { Layout.left + Layout.plotWidth * Double(event) / span }
        func w(_ start: Int, _ end: Int) -> Double { max(0.6, x(end + 1) - x(start)) }
        func laneY(_ lane: Int) -> Double { Layout.top + Layout.laneHeight * Double(lane + 1) }

        var out: [String] = []
        out.append(##"<?xml version="1.0" encoding="UTF-8"?>"##)
        out.append(
            ##"<svg xmlns="http://www.w3.org/2000/svg" width="\##(f(width))" height="\##(f(height))" "##
                + ##"viewBox="0 0 \##(f(width)) \##(f(height))" font-family="sans-serif" font-size="11">"##
        )
        out.append("<title>keyrack simulation: \(lanes.count) nodes, \(eventCount) events</title>")
        out.append(
            """
            <defs><pattern id="down" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">\
            <rect width="6" height="6" fill="#d0d0d0"/><line x1="0" y1="0" x2="0" y2="6" stroke="#808080" stroke-width="2"/>\
            </pattern></defs>
            """
        )
        out.append(##"<rect width="100%" height="100%" fill="white"/>"##)
        out.append(##"<text x="10" y="20" font-size="14" font-weight="bold">keyrack sim timeline</text>"##)
        legend(into: &out)

        // Partitions: a band across every lane.
        for partition in partitions {
            out.append(
                ##"<rect class="partition" x="\##(f(x(partition.start)))" y="\##(f(Layout.top - 4))" "##
                    + ##"width="\##(f(w(partition.start, partition.end)))" "##
                    + ##"height="\##(f(Layout.laneHeight * Double(lanes.count + 1) + 4))" fill="#4060ff" "##
                    + ##"fill-opacity="0.08"><title>partition, events \##(partition.start)–\##(partition.end): "##
                    + ##"\##(escape(partition.side))</title></rect>"##
            )
        }

        // The control plane's committed epoch.
        let planeY = Layout.top
        out.append(##"<g class="control-plane">"##)
        out.append(##"<text x="10" y="\##(f(planeY + 14))">control plane</text>"##)
        for interval in controlPlane {
            guard let epoch = interval.epoch else { continue }
            out.append(
                ##"<rect x="\##(f(x(interval.start)))" y="\##(f(planeY + 2))" width="\##(f(w(interval.start, interval.end)))" "##
                    + ##"height="\##(f(Layout.barHeight))" fill="\##(epochColor(epoch))" stroke="white" stroke-width="0.5">"##
                    + ##"<title>control plane committed epoch \##(epoch), events \##(interval.start)–\##(interval.end)</title></rect>"##
            )
            label("\(epoch)", interval.start, interval.end, y: planeY + 16, into: &out, x: x)
        }
        out.append("</g>")

        for (position, lane) in lanes.enumerated() {
            let y = laneY(position)
            out.append(##"<g class="lane" data-node="\##(lane.node)">"##)
            out.append(
                ##"<text x="10" y="\##(f(y + 14))">n\##(lane.node) \##(escape(lane.platformId))</text>"##
            )
            out.append(
                ##"<line x1="\##(f(Layout.left))" y1="\##(f(y + Layout.barHeight + 4))" "##
                    + ##"x2="\##(f(Layout.left + Layout.plotWidth))" y2="\##(f(y + Layout.barHeight + 4))" stroke="#eeeeee"/>"##
            )
            for segment in lane.segments {
                let (fill, what) = style(segment.state)
                out.append(
                    ##"<rect class="state" x="\##(f(x(segment.start)))" y="\##(f(y + 2))" "##
                        + ##"width="\##(f(w(segment.start, segment.end)))" height="\##(f(Layout.barHeight))" fill="\##(fill)">"##
                        + ##"<title>n\##(lane.node), events \##(segment.start)–\##(segment.end): \##(escape(what))</title></rect>"##
                )
                if segment.state.up, let committed = segment.state.committed, !segment.state.expunged {
                    label("\(committed)", segment.start, segment.end, y: y + 16, into: &out, x: x)
                }
                if let prepared = segment.state.prepared, !segment.state.expunged {
                    out.append(
                        ##"<rect class="prepared" x="\##(f(x(segment.start)))" y="\##(f(y))" "##
                            + ##"width="\##(f(w(segment.start, segment.end)))" height="4" fill="#3060d0">"##
                            + ##"<title>n\##(lane.node) prepared epoch \##(prepared)</title></rect>"##
                    )
                }
                if segment.state.partitioned {
                    out.append(
                        ##"<rect class="cut-off" x="\##(f(x(segment.start)))" y="\##(f(y + Layout.barHeight + 2))" "##
                            + ##"width="\##(f(w(segment.start, segment.end)))" height="3" fill="#4060ff">"##
                            + ##"<title>n\##(lane.node) on the cut-off side of a partition</title></rect>"##
                    )
                }
            }
            for marker in lane.markers {
                let mx = x(marker.event)
                switch marker.kind {
                case .crash:
                    out.append(
                        ##"<path class="crash" d="M\##(f(mx - 4)) \##(f(y + 4)) l8 8 m0 -8 l-8 8" stroke="black" "##
                            + ##"stroke-width="2"><title>crash at event \##(marker.event): \##(escape(marker.detail))</title></path>"##
                    )
                case .restart:
                    out.append(
                        ##"<circle class="restart" cx="\##(f(mx))" cy="\##(f(y + 8))" r="3" fill="black">"##
                            + ##"<title>restart at event \##(marker.event)</title></circle>"##
                    )
                case .alarm:
                    out.append(
                        ##"<path class="alarm" d="M\##(f(mx)) \##(f(y + 2)) l6 12 h-12 z" fill="red" stroke="darkred">"##
                            + ##"<title>alarm at event \##(marker.event): \##(escape(marker.detail))</title></path>"##
                    )
                }
            }
            out.append("</g>")
        }

        let bottom = laneY(lanes.count - 1) + Layout.laneHeight
        for violation in violations {
            out.append(
                ##"<line class="violation" x1="\##(f(x(violation.event)))" y1="\##(f(Layout.top - 6))" "##
                    + ##"x2="\##(f(x(violation.event)))" y2="\##(f(bottom))" stroke="red" stroke-width="2">"##
                    + ##"<title>violation at event \##(violation.event): \##(escape(violation.detail))</title></line>"##
            )
        }
        // The event axis.
        out.append(
            ##"<line x1="\##(f(Layout.left))" y1="\##(f(bottom))" x2="\##(f(Layout.left + Layout.plotWidth))" "##
                + ##"y2="\##(f(bottom))" stroke="black"/>"##
        )
        for tick in 0...10 {
            let event = eventCount * tick / 10
            out.append(
                ##"<text x="\##(f(x(event)))" y="\##(f(bottom + 14))" text-anchor="middle">\##(event)</text>"##
            )
        }
        out.append(##"<text x="\##(f(Layout.left))" y="\##(f(bottom + 30))">event</text>"##)
        out.append("</svg>")
        return out.joined(separator: "\n") + "\n"
    }

    private func legend(into out: inout [String]) {
        let items: [(String, String)] = [
            ("#5cb85c", "committed the latest epoch"),
            ("#f0ad4e", "behind (member, older epoch)"),
            ("#e8e8e8", "not a member"),
            ("url(#down)", "down"),
            ("#9b59b6", "expunged"),
            ("#3060d0", "prepared (thin bar)"),
            ("#4060ff", "partitioned (band, cut-off side)"),
            ("red", "alarm / violation"),
        ]
        var x = 10.0
        for (fill, text) in items {
            out.append(
                ##"<rect x="\##(f(x))" y="34" width="12" height="12" fill="\##(fill)" stroke="#999999" stroke-width="0.5"/>"##
            )
            out.append(##"<text x="\##(f(x + 16))" y="44">\##(escape(text))</text>"##)
            x += 16 + Double(text.count) * 6.2 + 14
        }
        out.append(
            ##"<text x="10" y="66" fill="#555555">numbers in bars: committed epoch; ✕ crash, • restart, ▲ alarm, red line: violation</text>"##
        )
    }

    private func style(_ state: NodeState) -> (String, String) {
        if !state.up {
            return ("url(#down)", "down" + (state.committed.map { ", committed epoch \($0) on disk" } ?? ""))
        }
        if state.expunged { return ("#9b59b6", "expunged") }
        guard let committed = state.committed else {
            return ("#e8e8e8", state.member ? "member, nothing committed yet" : "not a member, nothing committed")
        }
        if !state.member { return ("#e8e8e8", "not a member of the latest configuration (committed \(committed))") }
        if state.caughtUp { return ("#5cb85c", "committed epoch \(committed), up to date") }
        return ("#f0ad4e", "committed epoch \(committed), behind the control plane")
    }

    private func epochColor(_ epoch: UInt64) -> String {
        let palette = ["#8fbcd4", "#a8d08d", "#c9a0dc", "#f4b183", "#9dc3e6", "#ffd966"]
        return palette[Int(epoch % UInt64(palette.count))]
    }

    /// The epoch number in a bar, when the bar is wide enough for it.
    private func label(
        _ text: String,
        _ start: Int,
        _ end: Int,
        y: Double,
        into out: inout [String],
        x: (Int) -> Double
    ) {
        let width = x(end + 1) - x(start)
        guard width >= Double(text.count) * 7 + 4 else { return }
        out.append(
            ##"<text x="\##(f((x(start) + x(end + 1)) / 2))" y="\##(f(y))" text-anchor="middle" "##
                + ##"pointer-events="none">\##(text)</text>"##
        )
    }

    private func f(_ value: Double) -> String {
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    }

    private func escape(_ text: String) -> String {
        var result = ""
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            default: result.append(character)
            }
        }
        return result
    }
}
