#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Bytes that must not leak: a rack secret, a share's value, a derived key.
///
/// - The bytes live in a private heap buffer that is overwritten with zeros
///   (with a write the compiler may not remove) when the last copy is
///   released.
/// - `==` compares in constant time: it looks at every byte whatever the
///   first difference is. Only the lengths, which are not secret, may end
///   the comparison early.
/// - `description` and `debugDescription` print the length only, so a
///   secret cannot reach a log line through string interpolation.
///
/// The value is immutable; build a new one to change it.
public struct SecretBytes: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The zeroizing allocation; several values may share one (the shares of
    /// one split do) and it is zeroed when the last of them is released.
    @usableFromInline let storage: Storage
    /// Where this value's bytes sit in `storage`.
    @usableFromInline let range: Range<Int>

    /// Copies `bytes` into zeroizing storage.
    @inlinable
    public init(_ bytes: some Collection<UInt8>) {
        let storage = Storage(count: bytes.count)
        _ = UnsafeMutableBufferPointer(
            start: storage.buffer.baseAddress?.assumingMemoryBound(to: UInt8.self),
            count: storage.buffer.count
        ).initialize(from: bytes)
        self.init(storage: storage)
    }

    /// Allocates `count` zeroed bytes and lets `body` fill them in place, so
    /// that the secret never exists in an ordinary array.
    @inlinable
    public init<E: Error>(
        count: Int,
        initializingWith body: (UnsafeMutableRawBufferPointer) throws(E) -> Void
    ) throws(E) {
        let storage = Storage(count: count)
        try body(storage.buffer)
        self.init(storage: storage)
    }

    /// The whole of `storage`, which the caller (Keyrack's own sharing code) has just filled.
    @usableFromInline
    package init(storage: Storage) {
        self.init(storage: storage, range: 0..<storage.buffer.count)
    }

    /// Part of `storage`, which the caller has just filled.
    @usableFromInline
    package init(storage: Storage, range: Range<Int>) {
        self.storage = storage
        self.range = range
    }

    /// The number of bytes.
    public var count: Int { range.count }

    /// Gives `body` read access to the bytes. Do not let the pointer escape.
    @inlinable
    public func withUnsafeBytes<R, E: Error>(
        _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage.buffer[range]))
    }

    /// A copy of the bytes in an ordinary array. The caller becomes
    /// responsible for them: prefer ``withUnsafeBytes(_:)``.
    public var unsafeCopiedBytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Constant-time equality (the lengths are public).
    public static func == (lhs: SecretBytes, rhs: SecretBytes) -> Bool {
        lhs.withUnsafeBytes { a in rhs.withUnsafeBytes { b in constantTimeEqual(a, b) } }
    }

    /// Redacted: the length only.
    public var description: String { "SecretBytes(\(count) bytes, redacted)" }

    /// Redacted: the length only.
    public var debugDescription: String { description }

    /// The heap buffer that is zeroed on release.
    @usableFromInline
    package final class Storage: @unchecked Sendable {
        // Written only while the owning value is being initialized, before
        // it can be shared; read-only afterwards.
        @usableFromInline package let buffer: UnsafeMutableRawBufferPointer
        private let allocation: UnsafeMutableRawBufferPointer

        @usableFromInline
        package init(count: Int) {
            precondition(count >= 0, "negative length")
            // At least one byte, so that an empty secret still owns a
            // distinct allocation.
            allocation = .allocate(byteCount: max(count, 1), alignment: 16)
            allocation.initializeMemory(as: UInt8.self, repeating: 0)
            buffer = UnsafeMutableRawBufferPointer(rebasing: allocation[0..<count])
        }

        deinit {
            secureZero(allocation)
            allocation.deallocate()
        }
    }
}

/// Overwrites `buffer` with zeros in a way the optimizer may not elide.
@inline(never)
public func secureZero(_ buffer: UnsafeMutableRawBufferPointer) {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    #if canImport(Glibc) || canImport(Musl)
        explicit_bzero(base, buffer.count)
    #elseif canImport(Darwin)
        _ = memset_s(base, buffer.count, 0, buffer.count)
    #else
        base.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count)
    #endif
}

/// Compares two byte buffers in time that depends only on their lengths.
@inlinable
public func constantTimeEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in 0..<a.count {
        difference |= a[index] ^ b[index]
    }
    return difference == 0
}

/// Compares two byte collections in time that depends only on their lengths.
@inlinable
public func constantTimeEqual(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (x, y) in zip(a, b) {
        difference |= x ^ y
    }
    return difference == 0
}
