import KeyRelease
import Logging
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Writes log lines to a file descriptor off the logging thread, in
/// batches, so that a request never waits for a `write(2)` to standard
/// error (or for another thread's write, under the stream's lock).
///
/// Every key release and refusal logs an audit line; with `StreamLogHandler`
/// each was a locked, unbuffered write on the thread serving the request —
/// on an event loop, a write that blocks when a slow reader lets a pipe fill
/// stalls every connection of that loop. Here a line is appended to a
/// buffer, and the first line of a burst schedules one drain on
/// `NIOThreadPool.singleton` (the process's place for blocking work), which
/// writes whatever has gathered until the buffer is empty.
///
/// Lines are kept in order: every write happens under one writer lock, and
/// the bytes it writes are taken from the buffer under that lock, so batches
/// leave in the order they were appended. A request never waits for the
/// reader (review L14): when a reader falls more than ``maximumPending``
/// bytes behind, new lines are dropped whole and counted
/// (``droppedLines``, `keyrack_kms_log_lines_dropped_total` in `/metrics`),
/// and one line saying how many were dropped is written once the reader
/// catches up. ``flush()`` returns once everything kept so far is written;
/// the KMS calls it before it exits.
public final class BackgroundLogWriter: Sendable {
    /// Bytes that may wait before new lines are dropped.
    public static let maximumPending = 1 << 20

    /// The writer for standard error.
    public static let standardError = BackgroundLogWriter(descriptor: STDERR_FILENO)

    private struct Buffer {
        var pending: [UInt8] = []
        /// A drain is scheduled or running on the thread pool.
        var draining = false
        /// Lines dropped since the last one kept (reported in the log when it drains).
        var droppedSinceReport = 0
        /// Lines dropped since start.
        var droppedTotal = 0
    }

    private let descriptor: Int32
    private let pool: NIOThreadPool
    private let buffer = Mutex(Buffer())
    /// Held for every write, and while taking the bytes it writes.
    private let writer = Mutex(())

    private let limit: Int

    init(descriptor: Int32, pool: NIOThreadPool = .singleton, maximumPending: Int = BackgroundLogWriter.maximumPending)
    {
        self.descriptor = descriptor
        self.pool = pool
        self.limit = maximumPending
    }

    /// Lines dropped since start because the reader was too far behind.
    public var droppedLines: Int { buffer.withLock { $0.droppedTotal } }

    /// Queues `text` (one whole line) for writing, or drops it when the
    /// reader is more than the limit behind. Never waits for a write.
    func append(_ text: String) {
        let scheduleDrain = buffer.withLock { buffer in
            guard buffer.pending.count + text.utf8.count <= limit else {
                buffer.droppedSinceReport += 1
                buffer.droppedTotal += 1
                return false
            }
            if buffer.droppedSinceReport > 0 {
                let note = "keyrack: \(buffer.droppedSinceReport) log lines dropped: the log's reader fell behind\n"
                buffer.pending.append(contentsOf: note.utf8)
                buffer.droppedSinceReport = 0
            }
            buffer.pending.append(contentsOf: text.utf8)
            let schedule = !buffer.draining
            buffer.draining = true
            return schedule
        }
        if scheduleDrain {
            pool.submit { [self] _ in drain() }
        }
    }

    /// Waits until everything appended so far has been written.
    public func flush() { writePending() }

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

    /// On the thread pool: writes batches until the buffer is empty.
    private func drain() {
        while true {
            let wrote = writer.withLock { _ in
                let batch = buffer.withLock { buffer -> [UInt8]? in
                    if buffer.pending.isEmpty {
                        buffer.draining = false
                        return nil
                    }
                    defer { buffer.pending = [] }
                    return buffer.pending
                }
                if let batch { writeAll(batch) }
                return batch != nil
            }
            if !wrote { return }
        }
    }

    /// On the caller's thread: writes everything pending now, after any batch being written.
    private func writePending() {
        writer.withLock { _ in
            let batch = buffer.withLock { buffer in
                defer { buffer.pending = [] }
                return buffer.pending
            }
            if !batch.isEmpty { writeAll(batch) }
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
