import Foundation

/// Whether `host` names only this machine: `localhost`, an address in
/// 127.0.0.0/8, or `::1` (with or without brackets). The client refuses
/// plain HTTP to anything else; the server warns when it serves plain HTTP
/// anywhere else.
public func isLoopbackHost(_ host: String) -> Bool {
    let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
    if bare == "localhost" { return true }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, bare, &v6) == 1 {
        return withUnsafeBytes(of: &v6) { $0.prefix(15).allSatisfy { $0 == 0 } && $0[15] == 1 }
    }
    var v4 = in_addr()
    return inet_pton(AF_INET, bare, &v4) == 1 && UInt32(bigEndian: v4.s_addr) >> 24 == 127
}
