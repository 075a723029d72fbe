import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Writes log lines to a file descriptor from a thread of its own, in
/// batches, so that a request never waits for a `write(2)` to standard
/// error (or for another thread's write, under the stream's lock).
///
/// Every key release and refusal logs an audit line; with `StreamLogHandler`
/// each was a locked, unbuffered write on the thread serving the request —
/// on an event loop, a write that blocks when a slow reader lets a pipe fill
/// stalls every connection of that loop. Lines are kept in order, never
/// dropped: when a reader falls more than ``maximumPending`` bytes behind,
/// loggers wait for the writer (back-pressure, as a blocking write would).
/// ``flush()`` returns once everything logged so far is written; the KMS
/// calls it before it exits.
public final class BackgroundLogWriter: @unchecked Sendable {
    /// Bytes that may wait before loggers are held back.
    public static let maximumPending = 1 << 20

    /// The writer for standard error.
    public static let standardError = BackgroundLogWriter(descriptor: STDERR_FILENO)

    private let descriptor: Int32
    /// Guards `pending` and `writing`; signalled when lines arrive and when a batch is written.
    private let condition = NSCondition()
    private var pending: [UInt8] = []
    private var writing = false

    init(descriptor: Int32) {
        self.descriptor = descriptor
        // The writer lives as long as the process: its thread holds it.
        let thread = Thread { self.run() }
        thread.name = "keyrack-log-writer"
        thread.start()
    }

    /// Queues `text` for writing.
    func append(_ text: String) {
        condition.lock()
        while pending.count >= Self.maximumPending { condition.wait() }
        if pending.isEmpty { condition.broadcast() }
        pending.append(contentsOf: text.utf8)
        condition.unlock()
    }

    /// Waits until everything appended so far has been written.
    public func flush() {
        condition.lock()
        while !pending.isEmpty || writing { condition.wait() }
        condition.unlock()
    }

    /// A `StreamLogHandler` (same line format) that writes through this writer.
    public func logHandler(label: String, level: Logger.Level = .info) -> StreamLogHandler {
        var handler = StreamLogHandler(label: label, stream: Stream(writer: self))
        handler.logLevel = level
        return handler
    }

    private struct Stream: TextOutputStream, Sendable {
        let writer: BackgroundLogWriter
        mutating func write(_ string: String) { writer.append(string) }
    }

    private func run() {
        var batch: [UInt8] = []
        while true {
            condition.lock()
            while pending.isEmpty { condition.wait() }
            condition.unlock()
            // Let a burst gather into one write.
            usleep(1_000)
            condition.lock()
            swap(&batch, &pending)
            writing = true
            condition.broadcast()
            condition.unlock()

            writeAll(batch)
            batch.removeAll(keepingCapacity: batch.capacity <= Self.maximumPending)

            condition.lock()
            writing = false
            condition.broadcast()
            condition.unlock()
        }
    }

    private func writeAll(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0 && errno == EINTR {
                    continue
                } else {
                    return  // Standard error is gone: nothing left to tell.
                }
            }
        }
    }
}
