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
/// Lines are kept in order, never dropped: every write happens under one
/// writer lock, and the bytes it writes are taken from the buffer under that
/// lock, so batches leave in the order they were appended. When a reader
/// falls more than ``maximumPending`` bytes behind, the logger writes the
/// buffer itself under the writer lock (back-pressure, as a blocking write
/// would). ``flush()`` does the same: it returns once everything logged so
/// far is written. The KMS calls it before it exits.
public final class BackgroundLogWriter: Sendable {
    /// Bytes that may wait before loggers are held back.
    public static let maximumPending = 1 << 20

    /// The writer for standard error.
    public static let standardError = BackgroundLogWriter(descriptor: STDERR_FILENO)

    private struct Buffer {
        var pending: [UInt8] = []
        /// A drain is scheduled or running on the thread pool.
        var draining = false
    }

    private let descriptor: Int32
    private let pool: NIOThreadPool
    private let buffer = Mutex(Buffer())
    /// Held for every write, and while taking the bytes it writes.
    private let writer = Mutex(())

    init(descriptor: Int32, pool: NIOThreadPool = .singleton) {
        self.descriptor = descriptor
        self.pool = pool
    }

    /// Queues `text` for writing.
    func append(_ text: String) {
        let (scheduleDrain, overLimit) = buffer.withLock { buffer in
            buffer.pending.append(contentsOf: text.utf8)
            let schedule = !buffer.draining
            buffer.draining = true
            return (schedule, buffer.pending.count >= Self.maximumPending)
        }
        if overLimit {
            writePending()
        } else if scheduleDrain {
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
