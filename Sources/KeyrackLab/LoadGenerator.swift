import Foundation
import Histogram
import KMSClient
import KeyRelease
import KeyrackCore

/// Drives the whole key-release flow against a KMS from many peers at once:
/// each virtual client has its own identity and keep-alive connection and
/// repeats challenge → quote → signature → key until the time is up.
///
/// Two ways to load: closed loop (each client starts its next release as
/// soon as the last one ends, so the run finds the highest throughput and
/// latency is what a saturated server gives), or at a fixed `rate` (each
/// client starts its releases on a schedule, staggered against the others,
/// and latency is measured from the *scheduled* start, so a release that
/// had to wait behind a slow one counts its wait: the figures are not
/// flattered by coordinated omission).
public enum LoadGenerator {
    /// What a run measured. Latency is per key release (both requests and
    /// the client's quote and signature).
    public struct Report: Codable, Sendable {
        public let requests: Int
        /// The schedule's rate (releases per second), or nil for a closed loop.
        public let targetRps: Double?
        public let rps: Double
        public let p50Ms: Double
        public let p99Ms: Double
        public let maxMs: Double
        public let errors: Int
        public let concurrency: Int
        public let durationSeconds: Double
        public let firstError: String?

        enum CodingKeys: String, CodingKey {
            case requests, rps, errors, concurrency
            case targetRps = "target_rps"
            case p50Ms = "p50_ms"
            case p99Ms = "p99_ms"
            case maxMs = "max_ms"
            case durationSeconds = "duration_s"
            case firstError = "first_error"
        }
    }

    private struct ClientResult: Sendable {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var completed = 0
        var errors = 0
        var firstError: String?
    }

    /// Runs `concurrency` clients for `duration`, in a closed loop, or
    /// together starting `rate` releases per second.
    public static func run(
        endpoint: HTTPConnection.Endpoint,
        concurrency: Int,
        duration: Duration,
        rate: Double? = nil,
        quotes: any QuoteSource,
        hardened: Bool = true
    ) async -> Report {
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + duration
        // Each client's interval between scheduled starts, and its offset so the clients interleave.
        let interval = rate.map { Duration.seconds(Double(concurrency) / $0) }
        let results = await withTaskGroup(of: ClientResult.self) { group in
            for index in 0..<concurrency {
                let schedule = interval.map { (first: start + $0 * (Double(index) / Double(concurrency)), every: $0) }
                group.addTask {
                    await client(
                        endpoint: endpoint, quotes: quotes, hardened: hardened, until: deadline, schedule: schedule,
                        clock: clock)
                }
            }
            var merged = ClientResult()
            for await result in group {
                merged.histogram.add(result.histogram)
                merged.completed += result.completed
                merged.errors += result.errors
                merged.firstError = merged.firstError ?? result.firstError
            }
            return merged
        }
        let elapsed = clock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let histogram = results.histogram
        func milliseconds(_ percentile: Double) -> Double {
            results.completed == 0 ? 0 : Double(histogram.valueAtPercentile(percentile)) / 1000
        }
        return Report(
            requests: results.completed,
            targetRps: rate,
            rps: (Double(results.completed) / seconds * 10).rounded() / 10,
            p50Ms: milliseconds(50),
            p99Ms: milliseconds(99),
            maxMs: results.completed == 0 ? 0 : Double(histogram.max) / 1000,
            errors: results.errors,
            concurrency: concurrency,
            durationSeconds: (seconds * 100).rounded() / 100,
            firstError: results.firstError
        )
    }

    private static func client(
        endpoint: HTTPConnection.Endpoint,
        quotes: any QuoteSource,
        hardened: Bool,
        until deadline: ContinuousClock.Instant,
        schedule: (first: ContinuousClock.Instant, every: Duration)?,
        clock: ContinuousClock
    ) async -> ClientResult {
        var result = ClientResult()
        var client = KeyReleaseClient(endpoint: endpoint, identity: .generate(), quotes: quotes)
        client.wrapsKey = hardened
        client.provesPossession = hardened
        var connection: HTTPConnection?
        var next = schedule?.first
        while clock.now < deadline {
            // On a schedule, a release counts from when it should have started,
            // however late it starts; the schedule moves on whatever happens.
            var scheduledStart: ContinuousClock.Instant?
            if let scheduled = next, let every = schedule?.every {
                guard scheduled < deadline else { break }
                if clock.now < scheduled { try? await clock.sleep(until: scheduled) }
                scheduledStart = scheduled
                next = scheduled + every
            }
            do {
                if connection?.isActive != true {
                    connection = try await HTTPConnection.connect(to: endpoint)
                }
                let started = scheduledStart ?? clock.now
                _ = try await client.fetchKey(over: connection!)
                let elapsed = clock.now - started
                let microseconds =
                    elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
                _ = result.histogram.record(UInt64(max(0, microseconds)))
                result.completed += 1
            } catch {
                result.errors += 1
                result.firstError = result.firstError ?? "\(error)"
                connection?.close()
                connection = nil
                // Do not spin on a dead server.
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        connection?.close()
        return result
    }
}
