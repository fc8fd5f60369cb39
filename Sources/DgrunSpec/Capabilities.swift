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

    /// The named capabilities this process has in its effective set (uid 0 inside a sandbox has
    /// none), from one query of the process's capabilities.
    public static func effective(_ names: [String]) -> Set<String> {
        guard let caps = cap_get_proc() else { return [] }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        var result: Set<String> = []
        for name in names {
            var value = CAP_CLEAR
            if let number = try? number(of: name), cap_get_flag(caps, cap_value_t(number), CAP_EFFECTIVE, &value) == 0,
               value == CAP_SET {
                result.insert(name)
            }
        }
        return result
    }

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
