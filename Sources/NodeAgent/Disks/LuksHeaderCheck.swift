import Crypto
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Checks a LUKS2 header's two binary copies before `cryptsetup` sees the
/// device: libcryptsetup silently rewrites a header whose primary copy is
/// damaged from the secondary one (seen with `luksDump` and `open
/// --test-passphrase` alike), and a damaged header must be refused and left
/// exactly as it is. Both copies must carry their magic, version 2, the
/// same size and sequence id, and a valid SHA-256 checksum over the binary
/// header and JSON area.
public enum LuksHeaderCheck {
    /// What the check found.
    public enum Verdict: Sendable, Equatable {
        /// Both copies are intact.
        case intact
        /// The device starts with a LUKS1 header.
        case luks1
        /// No LUKS header at all.
        case notLuks
        /// A LUKS2 header that is damaged, and how.
        case damaged(String)
    }

    static let primaryMagic: [UInt8] = [0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE]  // "LUKS\xba\xbe"
    static let secondaryMagic: [UInt8] = [0x53, 0x4B, 0x55, 0x4C, 0xBA, 0xBE]  // "SKUL\xba\xbe"
    /// The sizes a LUKS2 header copy may have (binary header and JSON area).
    static let sizes: Set<UInt64> = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096].reduce(into: []) {
        $0.insert(UInt64($1) << 10)
    }
    static let checksumOffset = 448
    static let checksumLength = 64

    /// Judges the first bytes of a device (at least both header copies: 8 MiB covers every size).
    public static func check(_ bytes: [UInt8]) -> Verdict {
        guard bytes.count >= 4096, Array(bytes[0..<6]) == primaryMagic else { return .notLuks }
        let version = UInt16(bytes[6]) << 8 | UInt16(bytes[7])
        if version == 1 { return .luks1 }
        guard version == 2 else { return .damaged("the primary header has version \(version)") }
        let size = bigEndian(bytes, 8)
        guard sizes.contains(size) else { return .damaged("the primary header has size \(size)") }
        guard bytes.count >= Int(size) * 2 else { return .damaged("the device is shorter than its two header copies") }
        let secondary = Int(size)
        guard Array(bytes[secondary..<(secondary + 6)]) == secondaryMagic else {
            return .damaged("the secondary header's magic is missing")
        }
        guard bytes[secondary + 6] == 0, bytes[secondary + 7] == 2, bigEndian(bytes, secondary + 8) == size else {
            return .damaged("the secondary header's version or size differs from the primary's")
        }
        for (name, offset) in [("primary", 0), ("secondary", secondary)] {
            if let problem = checksumProblem(bytes, offset: offset, size: Int(size)) {
                return .damaged("the \(name) header's \(problem)")
            }
        }
        guard bigEndian(bytes, 16) == bigEndian(bytes, secondary + 16) else {
            return .damaged("the two header copies have different sequence ids")
        }
        return .intact
    }

    private static func checksumProblem(_ bytes: [UInt8], offset: Int, size: Int) -> String? {
        let algorithm = bytes[(offset + 72)..<(offset + 104)].prefix { $0 != 0 }
        guard Array(algorithm) == Array("sha256".utf8) else {
            return "checksum algorithm is '\(String(decoding: algorithm, as: UTF8.self))', not sha256"
        }
        var hash = SHA256()
        hash.update(data: bytes[offset..<(offset + checksumOffset)])
        hash.update(data: [UInt8](repeating: 0, count: checksumLength))
        hash.update(data: bytes[(offset + checksumOffset + checksumLength)..<(offset + size)])
        let stored = bytes[(offset + checksumOffset)..<(offset + checksumOffset + 32)]
        return Array(hash.finalize()) == Array(stored) ? nil : "checksum does not match"
    }

    private static func bigEndian(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
        bytes[offset..<(offset + 8)].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Reads the first bytes of `device` (both header copies, at most 8 MiB) without writing to it.
    public static func read(_ device: String) throws(VolumeError) -> [UInt8] {
        let descriptor = open(device, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ENOENT { throw VolumeError(.deviceMissing, "\(device) does not exist") }
            throw VolumeError(.header, "cannot read \(device): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var wanted = 32 << 10
        while result.count < wanted {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else {
                throw VolumeError(.header, "cannot read \(device): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            result += buffer[0..<count]
            if result.count >= 16, Array(result[0..<6]) == primaryMagic {
                let size = bigEndian(result, 8)
                if sizes.contains(size) { wanted = Int(size) * 2 }
            }
        }
        return result
    }
}
