import NIOCore
import TrustQuorum

/// The trust-quorum framing (``WireFormat/frameHeader(payloadLength:)``,
/// ``WireFormat/payloadLength(header:)``: a 4-byte big-endian length and
/// the payload, at most 1 MiB) as NIO handlers, for the peer channels and
/// the admin socket. The rule lives in `WireFormat`, which the simulator's
/// invariant checker exercises on every message: there is one codec.
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        // An oversize length is refused (WireError .frameTooLarge) before its body is buffered.
        guard let length = try WireFormat.payloadLength(header: buffer.readableBytesView) else {
            return .needMoreData
        }
        guard buffer.readableBytes >= WireFormat.frameHeaderLength + length else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: WireFormat.frameHeaderLength)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: length)!))
        return .continue
    }
}

struct FrameEncoder: MessageToByteEncoder {
    typealias OutboundIn = ByteBuffer

    func encode(data: ByteBuffer, out: inout ByteBuffer) throws {
        out.writeBytes(try WireFormat.frameHeader(payloadLength: data.readableBytes))
        out.writeImmutableBuffer(data)
    }
}
