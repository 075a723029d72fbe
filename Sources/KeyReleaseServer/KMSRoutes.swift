import Foundation
import Hummingbird
import KeyRelease

/// The HTTP face of ``KeyReleaseService``: decodes requests, calls the
/// pipeline, encodes answers. Every non-2xx answer has the JSON body
/// `{"error", "message"[, "field"]}`.
public enum KMSRoutes {
    /// The method each path answers.
    static let methods = [
        "/challenge": "POST", "/get-key": "POST", "/healthz": "GET", "/readyz": "GET", "/metrics": "GET",
    ]

    /// The largest request body accepted.
    public static let maximumBodyBytes = 64 * 1024

    /// A router with `POST /challenge`, `POST /get-key`, `GET /healthz`,
    /// `GET /readyz` and `GET /metrics`.
    public static func router<Verifier: EvidenceVerifier>(
        service: KeyReleaseService<Verifier>,
        connections: ConnectionLimiter? = nil
    ) -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: ErrorBodyMiddleware())
        router.post("/challenge") { request, _ -> Response in
            let decoded: ChallengeRequest = try await decode(request)
            return json(try await service.challenge(decoded))
        }
        router.post("/get-key") { request, _ -> Response in
            let decoded: GetKeyRequest = try await decode(request)
            return json(try await service.getKey(decoded))
        }
        router.get("/healthz") { _, _ in json(["status": "ok"]) }
        router.get("/readyz") { _, _ -> Response in
            // Only the parts are named: paths, hosts and ports go to the log.
            let parts = await service.notReady().map(\.component.rawValue)
            if !parts.isEmpty {
                return json(
                    ReadinessBody(
                        status: "not ready", notReady: parts, reason: "not ready: " + parts.joined(separator: ", ")),
                    status: .serviceUnavailable)
            }
            return json(ReadinessBody(status: "ready", notReady: nil, reason: nil))
        }
        router.get("/metrics") { _, _ -> Response in
            var scrape = KMSMetrics.Scrape()
            scrape.pendingChallenges = try? await service.store.pendingCount()
            scrape.storeReady = scrape.pendingChallenges != nil
            if let connections {
                scrape.openConnections = connections.openConnections
                scrape.connectionsRefused = connections.refused
                scrape.connectionsTimedOut = connections.timedOut
            }
            if let pccs = service.verifier.pccsCounts() {
                scrape.pccsFetches = pccs.fetches
                scrape.pccsFetchFailures = pccs.failures
            }
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody(byteBuffer: ByteBuffer(string: service.metrics.render(scrape))))
        }
        return router
    }

    /// Reads at most 64 KiB and decodes JSON, turning every failure into the
    /// API's error codes.
    static func decode<Body: FlatJSONMessage>(_ request: Request) async throws(KMSError) -> Body {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: maximumBodyBytes)
        } catch {
            throw KMSError(.payloadTooLarge, "request bodies are limited to \(maximumBodyBytes) bytes")
        }
        // Well-formed requests take the fast path; everything else (and so
        // every error message) is JSONDecoder's.
        if let body = Body(flatJSON: buffer.readableBytesView) { return body }
        do {
            return try JSONDecoder().decode(Body.self, from: Data(buffer.readableBytesView))
        } catch DecodingError.keyNotFound(let key, _) {
            throw KMSError(.invalidRequest, "missing field '\(key.stringValue)'")
        } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw KMSError(.invalidRequest, "field '\(path)' has the wrong type")
        } catch {
            throw KMSError(.invalidRequest, "the body is not valid JSON")
        }
    }

    /// A 200 answer with an API message.
    static func json(_ message: some FlatJSONMessage) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(
            status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: message.flatJSON)))
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// The body of `/readyz`: `notReady` names the parts (`policy`,
/// `collateral`, `store`, `keys`) that are not ready.
struct ReadinessBody: Codable, Equatable {
    let status: String
    let notReady: [String]?
    let reason: String?
}

/// Turns ``KMSError`` (and Hummingbird's own errors, such as an unknown
/// route) into the API's JSON error body, with `Retry-After` on 429.
struct ErrorBodyMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as KMSError {
            var response = KMSRoutes.json(error.body, status: HTTPResponse.Status(code: error.status))
            if let seconds = error.retryAfterSeconds { response.headers[.retryAfter] = "\(seconds)" }
            return response
        } catch let error as HTTPError {
            // A known path with another method is 405 with Allow, not 404.
            if error.status.code == 404, let allowed = KMSRoutes.methods[request.uri.path] {
                let body = ErrorBody(
                    error: "MethodNotAllowed",
                    message: "\(request.uri.path) accepts \(allowed) only",
                    field: nil
                )
                var response = KMSRoutes.json(body, status: .methodNotAllowed)
                response.headers[.allow] = allowed
                return response
            }
            let code = error.status.code == 404 ? "NotFound" : "InvalidRequest"
            let body = ErrorBody(error: code, message: error.body ?? error.status.reasonPhrase, field: nil)
            return KMSRoutes.json(body, status: error.status)
        }
    }
}
