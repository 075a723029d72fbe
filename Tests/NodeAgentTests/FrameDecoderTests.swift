import NIOCore
import NIOEmbedded
import Testing
import TrustQuorum

@testable import NodeAgent

/// The receiving side of the peers' framing (4-byte big-endian length, at most 1 MiB).
@Suite("Frame decoding")
struct FrameDecoderTests {
    static func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
        return channel
    }

    @Test("frames split across reads, and several in one read, come out whole and in order")
    func reassembly() throws {
        let channel = try Self.channel()
        var wire = ByteBuffer()
        for text in ["first", "", "third frame"] {
            wire.writeInteger(UInt32(text.utf8.count))
            wire.writeString(text)
        }
        // Byte by byte for the first frame, the rest at once.
        for _ in 0..<9 { try channel.writeInbound(wire.readSlice(length: 1)!) }
        try channel.writeInbound(wire)
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "first"))
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer())
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "third frame"))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        _ = try channel.finish()
    }

    @Test("a length over 1 MiB is refused as soon as the length arrives, before any body is buffered")
    func oversizeRefused() throws {
        let channel = try Self.channel()
        var header = ByteBuffer()
        header.writeInteger(UInt32((1 << 20) + 1))
        #expect {
            try channel.writeInbound(header)
        } throws: { error in
            (error as? WireError)?.code == .frameTooLarge
        }
        _ = try? channel.finish()
        // Exactly 1 MiB is allowed.
        let limit = try Self.channel()
        var frame = ByteBuffer()
        frame.writeInteger(UInt32(1 << 20))
        frame.writeRepeatingByte(7, count: 1 << 20)
        try limit.writeInbound(frame)
        #expect(try limit.readInbound(as: ByteBuffer.self)?.readableBytes == 1 << 20)
        _ = try limit.finish()
    }

    @Test("a stream that ends inside a frame never delivers the partial frame")
    func truncated() throws {
        let channel = try Self.channel()
        var wire = ByteBuffer()
        wire.writeInteger(UInt32(10))
        wire.writeString("short")
        try channel.writeInbound(wire)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        _ = try? channel.finish()
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
    }
}
