import DgrunSystem
import CCap
#if canImport(Glibc)
import Glibc
#endif

/// Capability names ↔ numbers, through libcap (so new capabilities need no code here).
public enum Capabilities {
    public static func number(of name: String) throws(DgrunError) -> Int {
        var value: cap_value_t = 0
        let normalized = name.lowercased().hasPrefix("cap_") ? name.lowercased() : "cap_" + name.lowercased()
        guard cap_from_name(normalized, &value) == 0 else {
            throw DgrunError("unknown capability \"\(name)\" (names look like CAP_NET_BIND_SERVICE)")
        }
        return Int(value)
    }

    /// This process's effective set (uid 0 inside a sandbox has none) as a bit mask, bit n for
    /// capability n, from one query. A mask, not a set of names: this runs between the clone and
    /// the init's go, where a Set<String>'s first use and the names' lookups cost ~40 µs.
    public static func effectiveMask() -> UInt64 {
        guard let caps = cap_get_proc() else { return 0 }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        var mask: UInt64 = 0
        for number in 0..<64 {
            var value = CAP_CLEAR
            if cap_get_flag(caps, cap_value_t(number), CAP_EFFECTIVE, &value) == 0, value == CAP_SET {
                mask |= 1 << UInt64(number)
            }
        }
        return mask
    }
    /// The bits of `effectiveMask()` that the user namespace's id maps depend on.
    public static let setgidBit: UInt64 = 1 << UInt64(CAP_SETGID)
    public static let setfcapBit: UInt64 = 1 << UInt64(CAP_SETFCAP)

    /// A bit mask of the named capabilities, for the child's capset and ambient set.
    public static func mask(_ names: [String]) throws(DgrunError) -> UInt64 {
        var mask: UInt64 = 0
        for name in names {
            let n = try number(of: name)
            guard n < 64 else { throw DgrunError("capability \(name) is beyond what dgrun supports") }
            mask |= 1 << UInt64(n)
        }
        return mask
    }
}
