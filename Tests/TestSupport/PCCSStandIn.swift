import Attestation
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A stand-in PCCS: HTTP/1.1 on a free loopback port, serving the v4 API
/// (`/sgx/certification/v4/pckcrl`, `/tdx/certification/v4/tcb`,
/// `/tdx/certification/v4/qe/identity`, `/sgx/certification/v4/rootcacrl`)
/// from one collateral document byte for byte, with the issuer chains in
/// URL-encoded response headers as Intel's PCS and PCCS send them.
public final class PCCSStandIn: Sendable {
    /// What the stand-in does.
    public enum Behaviour: Sendable {
        /// Serve the collateral.
        case normal
        /// Answer 503 to everything (a PCCS whose upstream is down).
        case down
        /// Serve a TCB info with one character changed (the signature no longer covers it).
        case tamperedTCBInfo
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    public let url: String
    private let channel: any Channel
    private let state: Mutex<(collateral: Collateral, behaviour: Behaviour, requests: [String: Int])>

    /// Starts serving `collateral`.
    public init(collateral: Collateral) throws {
        let state = Mutex((collateral: collateral, behaviour: Behaviour.normal, requests: [String: Int]()))
        self.state = state
        let box = StateBox()
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(standIn: box))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .wait()
        url = "http://127.0.0.1:\(channel.localAddress?.port ?? 0)"
        box.standIn = self
    }

    /// Changes what is served from now on.
    public func set(_ behaviour: Behaviour) { state.withLock { $0.behaviour = behaviour } }
    /// Serves another collateral document from now on.
    public func serve(_ collateral: Collateral) { state.withLock { $0.collateral = collateral } }
    /// Requests so far for the path (without its query).
    public func requests(_ path: String) -> Int { state.withLock { $0.requests[path] ?? 0 } }
    /// Requests so far for the TCB info.
    public var tcbInfoRequests: Int { requests("/tdx/certification/v4/tcb") }

    /// Stops listening.
    public func stop() { try? channel.close().wait() }

    deinit { stop() }

    final class StateBox: @unchecked Sendable {
        weak var standIn: PCCSStandIn?
    }

    /// The status, headers and body for a request URI.
    func answer(_ uri: String) -> (HTTPResponseStatus, [(String, String)], [UInt8]) {
        let parts = uri.split(separator: "?", maxSplits: 1)
        let path = parts.first.map(String.init) ?? uri
        let query = parts.count > 1 ? String(parts[1]) : ""
        let (collateral, behaviour) = state.withLock { state in
            state.requests[path, default: 0] += 1
            return (state.collateral, state.behaviour)
        }
        if behaviour == .down { return (.serviceUnavailable, [], Array("{\"error\":\"upstream down\"}".utf8)) }
        func chain(_ pem: String) -> String {
            pem.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-_.~")))
                ?? ""
        }
        func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
        switch path {
        case "/sgx/certification/v4/pckcrl":
            guard query.contains("ca=platform") || query.contains("ca=processor") else {
                return (.badRequest, [], Array("{\"error\":\"ca\"}".utf8))
            }
            return (.ok, [("SGX-PCK-CRL-Issuer-Chain", chain(collateral.pckCRLIssuerChain))], collateral.pckCRL)
        case "/tdx/certification/v4/tcb":
            let fmspc = (try? collateral.fmspc()) ?? ""
            guard query.uppercased().contains("FMSPC=\(fmspc)") else { return (.notFound, [], []) }
            var tcbInfo = collateral.tcbInfo
            if behaviour == .tamperedTCBInfo {
                tcbInfo = tcbInfo.replacingOccurrences(of: "UpToDate", with: "UpToDatf")
            }
            let body = "{\"tcbInfo\":\(tcbInfo),\"signature\":\"\(hex(collateral.tcbInfoSignature))\"}"
            return (.ok, [("TCB-Info-Issuer-Chain", chain(collateral.tcbInfoIssuerChain))], Array(body.utf8))
        case "/tdx/certification/v4/qe/identity":
            let body =
                "{\"enclaveIdentity\":\(collateral.qeIdentity),\"signature\":\"\(hex(collateral.qeIdentitySignature))\"}"
            return (
                .ok, [("SGX-Enclave-Identity-Issuer-Chain", chain(collateral.qeIdentityIssuerChain))], Array(body.utf8)
            )
        case "/sgx/certification/v4/rootcacrl":
            return (.ok, [], Array(hex(collateral.rootCACRL).utf8))
        default:
            return (.notFound, [], [])
        }
    }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let standIn: StateBox
        var uri = ""

        init(standIn: StateBox) { self.standIn = standIn }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): uri = head.uri
            case .body: break
            case .end:
                let (status, extra, body) = standIn.standIn?.answer(uri) ?? (.serviceUnavailable, [], [])
                var headers = HTTPHeaders()
                for (name, value) in extra { headers.add(name: name, value: value) }
                headers.add(name: "Content-Length", value: "\(body.count)")
                context.write(
                    wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
                    promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
