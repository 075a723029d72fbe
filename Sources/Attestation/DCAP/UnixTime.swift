/// Seconds since the Unix epoch, UTC, from calendar fields (proleptic
/// Gregorian; days-from-civil after H. Hinnant).
func unixSeconds(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) -> Int64 {
    let y = Int64(month <= 2 ? year - 1 : year)
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let m = Int64(month)
    let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + Int64(day) - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    let days = era * 146097 + doe - 719468
    return days * 86400 + Int64(hour) * 3600 + Int64(minute) * 60 + Int64(second)
}

/// Calendar fields from seconds since the Unix epoch (the inverse of ``unixSeconds``).
func civil(_ seconds: Int64) -> (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
    let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
    let rem = seconds - days * 86400
    let z = days + 719468
    let era = (z >= 0 ? z : z - 146096) / 146097
    let doe = z - era * 146097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let m = mp < 10 ? mp + 3 : mp - 9
    let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
    return (Int(y), Int(m), Int(d), Int(rem / 3600), Int(rem % 3600 / 60), Int(rem % 60))
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (the form Intel's collateral uses; fractional
/// seconds are accepted and dropped).
func parseISO8601(_ text: String) -> Int64? {
    let u = Array(text.utf8)
    guard u.count >= 20, u[4] == 0x2D, u[7] == 0x2D, u[10] == 0x54, u[13] == 0x3A, u[16] == 0x3A,
        u.last == 0x5A
    else { return nil }
    func number(_ from: Int, _ count: Int) -> Int? {
        var value = 0
        for i in from..<(from + count) {
            guard u[i] >= 0x30, u[i] <= 0x39 else { return nil }
            value = value * 10 + Int(u[i] - 0x30)
        }
        return value
    }
    if u.count > 20 {
        guard u[19] == 0x2E, u.count > 21 else { return nil }
        for i in 20..<(u.count - 1) where u[i] < 0x30 || u[i] > 0x39 { return nil }
    }
    guard let y = number(0, 4), let mo = number(5, 2), let d = number(8, 2), let h = number(11, 2),
        let mi = number(14, 2), let s = number(17, 2), (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60,
        s < 61
    else { return nil }
    return unixSeconds(year: y, month: mo, day: d, hour: h, minute: mi, second: s)
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
func formatISO8601(_ seconds: Int64) -> String {
    let c = civil(seconds)
    func pad(_ v: Int, _ n: Int) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, n - s.count)) + s
    }
    return
        "\(pad(c.year, 4))-\(pad(c.month, 2))-\(pad(c.day, 2))T\(pad(c.hour, 2)):\(pad(c.minute, 2)):\(pad(c.second, 2))Z"
}
