import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `GET path` on 127.0.0.1:`port` over plain HTTP/1.1 (the server closes
/// the connection after its answer), with a 10 s read deadline: the status
/// code and the body.
public func httpGet(port: Int, path: String, method: String = "GET") throws -> (status: Int, body: String) {
    guard let descriptor = connectLoopback(port: port) else {
        throw TestSupportError("nothing accepts connections on 127.0.0.1:\(port)")
    }
    defer { close(descriptor) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let request = Array("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    guard write(descriptor, request, request.count) == request.count else {
        throw TestSupportError("cannot send the request to 127.0.0.1:\(port)")
    }
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while answer.count < 16 << 20 {
        let got = read(descriptor, &buffer, buffer.count)
        if got <= 0 { break }
        answer += buffer.prefix(got)
    }
    let text = String(decoding: answer, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n"), let statusLine = text.split(separator: "\r\n").first,
        let code = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
    else {
        throw TestSupportError("127.0.0.1:\(port) did not answer HTTP: \(text.prefix(200))")
    }
    return (code, String(text[split.upperBound...]))
}
