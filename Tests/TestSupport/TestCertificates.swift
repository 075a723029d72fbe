import Foundation

/// A test CA and a server certificate it signed for 127.0.0.1 (P-256),
/// made with openssl in `directory`.
public struct TestCertificates: Sendable {
    public let caCertificate: String
    public let serverCertificate: String
    public let serverKey: String

    public init(in directory: URL, name: String = "server") throws {
        guard let openssl = findExecutable("openssl") else {
            throw TestSupportError("openssl is needed: run `apt-get install -y openssl`")
        }
        func path(_ file: String) -> String { directory.appendingPathComponent("\(name)-\(file)").path }
        caCertificate = path("ca.crt")
        serverCertificate = path("cert.crt")
        serverKey = path("cert.key")
        let extensions = path("ext.cnf")
        try Data("subjectAltName=IP:127.0.0.1\n".utf8).write(to: URL(fileURLWithPath: extensions))
        let steps: [[String]] = [
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-subj", "/CN=keyrack test CA \(name)", "-keyout", path("ca.key"), "-out", caCertificate,
            ],
            [
                "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1",
                "-keyout", serverKey, "-out", path("cert.csr"),
            ],
            [
                "x509", "-req", "-in", path("cert.csr"), "-CA", caCertificate, "-CAkey", path("ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", serverCertificate,
            ],
        ]
        for step in steps {
            let result = try runProcessBlocking(URL(fileURLWithPath: openssl), step)
            guard result.status == 0 else {
                throw TestSupportError("openssl \(step[0]) failed: \(String(decoding: result.errors, as: UTF8.self))")
            }
        }
    }
}

/// The value of one series (`name` or `name{labels}`) in a Prometheus text exposition, if present.
public func metricValue(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}
