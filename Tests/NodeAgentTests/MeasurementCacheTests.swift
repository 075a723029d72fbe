import Crypto
import Foundation
import KeyrackCore
import SecretSharing
import Testing

@testable import NodeAgent

@Suite("Software measurements, cached per file version")
struct MeasurementCacheTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("measure-\(UUID().uuidString)")
    var file: URL { directory.appendingPathComponent("node-binary") }
    var cacheFile: URL { directory.appendingPathComponent("cache/measurements.json") }
    var cache: MeasurementCache { MeasurementCache(directory: directory.appendingPathComponent("cache")) }

    init() throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data("version one".utf8).write(to: file)
    }

    @Test("the first measurement hashes the file, the next reads the cache, a changed file is hashed again")
    func hitAndMiss() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = try cache.measure(file.path)
        #expect(first == .init(digest: Array(SHA256.hash(data: Array("version one".utf8))), fromCache: false))
        #expect(try cache.measure(file.path) == .init(digest: first.digest, fromCache: true))

        let handle = try FileHandle(forWritingTo: file)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(", patched".utf8))
        try handle.close()
        let changed = try cache.measure(file.path)
        #expect(
            changed == .init(digest: Array(SHA256.hash(data: Array("version one, patched".utf8))), fromCache: false))
        #expect(try cache.measure(file.path).fromCache)
    }

    @Test("a hit really comes from the cache file: the digest stored under the file's version is returned")
    func hitReadsTheFile() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try cache.measure(file.path)
        let stored = try String(contentsOf: cacheFile, encoding: .utf8)
        let digest = Array(SHA256.hash(data: Array("version one".utf8))).hexString
        try stored.replacingOccurrences(of: digest, with: String(repeating: "ab", count: 32))
            .write(to: cacheFile, atomically: true, encoding: .utf8)
        #expect(try cache.measure(file.path) == .init(digest: Array(repeating: 0xAB, count: 32), fromCache: true))
    }

    @Test(
        "a corrupt cache is ignored and rewritten",
        arguments: ["", "{not json", "{\"format\":\"other\",\"digests\":{}}"])
    func corrupt(contents: String) throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try cache.measure(file.path)
        try contents.write(to: cacheFile, atomically: true, encoding: .utf8)
        let again = try cache.measure(file.path)
        #expect(again == .init(digest: Array(SHA256.hash(data: Array("version one".utf8))), fromCache: false))
        #expect(try cache.measure(file.path).fromCache)
    }

    @Test("a file that cannot be opened is a clear error")
    func missing() {
        defer { try? FileManager.default.removeItem(at: directory) }
        let error = #expect(throws: NodeEvidenceError.self) {
            try cache.measure(directory.appendingPathComponent("none").path)
        }
        #expect(error?.code == .measure)
    }

    @Test("the current measurement log names the executable, with the digest of /proc/self/exe")
    func current() throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = try MeasurementLog.current(
            files: [.executable, MeasuredFile(name: "binary", path: file.path)], cacheDirectory: measurementCache)
        #expect(log.entries.map(\.name) == ["executable", "binary"])
        let executable = try Data(contentsOf: URL(fileURLWithPath: "/proc/self/exe"))
        #expect(log["executable"] == Array(SHA256.hash(data: executable)))
        let repeated = #expect(throws: NodeEvidenceError.self) {
            try MeasurementLog.current(
                files: [MeasuredFile(name: "binary", path: file.path), MeasuredFile(name: "binary", path: file.path)],
                cacheDirectory: measurementCache)
        }
        #expect(repeated?.code == .log)
    }
}
