import DgrunSystem

/// Parsing of the units users type: sizes like docker (`512m`, `2g`), durations like timeout(1).

public enum ByteSize {
    /// `512m`, `2g`, `1.5G`, `64MiB`, `100k`, `4096` (bytes). Units are binary, as docker's are.
    public static func parse(_ text: String) throws(DgrunError) -> UInt64 {
        let lower = text.lowercased().trimmingCharacters(in: " ")
        var number = Substring(lower)
        var unit = Substring("")
        if let firstUnit = lower.firstIndex(where: { !$0.isNumber && $0 != "." }) {
            number = lower[..<firstUnit]
            unit = lower[firstUnit...]
        }
        for suffix in ["ib", "b"] where unit.count > suffix.count && unit.hasSuffix(suffix) {
            unit = unit.dropLast(suffix.count)
            break
        }
        // A switch, not a [Substring: UInt64]: that dictionary made the runtime search every
        // conformance record for Substring's Hashable on each start (~0.2 M instructions).
        let shift: UInt64?
        switch unit {
        case "", "b": shift = 0
        case "k": shift = 10
        case "m": shift = 20
        case "g": shift = 30
        case "t": shift = 40
        default: shift = nil
        }
        guard let value = Double(number), value >= 0, let shift else {
            throw DgrunError("invalid size \"\(text)\": use a number with an optional unit b, k, m, g or t (like 512m or 2g)")
        }
        let bytes = value * Double(UInt64(1) << shift)
        guard bytes < 9.2e18 else { throw DgrunError("size \"\(text)\" is too large") }
        return UInt64(bytes.rounded())
    }

    /// 67108864 → "64 MiB"; used in messages.
    public static func describe(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var index = 0
        while value >= 1024, index < units.count - 1 { value /= 1024; index += 1 }
        if index == 0 { return "\(bytes) B" }
        let rounded = (value * 10).rounded() / 10
        let text = rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
        return "\(text) \(units[index])"
    }
}

public enum DurationText {
    /// 30 → "30s", 0.5 → "0.5s", 600 → "10m": for messages.
    public static func describe(_ seconds: Double) -> String {
        if seconds >= 60, seconds.truncatingRemainder(dividingBy: 60) == 0 { return "\(Int(seconds / 60))m" }
        if seconds == seconds.rounded() { return "\(Int(seconds))s" }
        return "\(seconds)s"
    }

    public static let maxSeconds: Double = 36_500 * 86_400

    /// `90`, `90s`, `500ms`, `10m`, `1.5h`, `1d` → seconds, at most `maxSeconds`.
    public static func parse(_ text: String) throws(DgrunError) -> Double {
        let lower = text.lowercased().trimmingCharacters(in: " ")
        let factors: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400), ("", 1)]
        for (suffix, factor) in factors where lower.hasSuffix(suffix) {
            let number = lower.dropLast(suffix.count)
            if let value = Double(number), value > 0, value.isFinite {
                // Bounded: `1e300s` parsed, and the launcher's Int64 milliseconds of it trapped.
                guard value * factor <= maxSeconds else {
                    throw DgrunError("duration \"\(text)\" is too long: at most 36500d (100 years)")
                }
                return value * factor
            }
        }
        throw DgrunError("invalid duration \"\(text)\": use a positive number with an optional unit ms, s, m, h or d (like 30s or 10m)")
    }
}
