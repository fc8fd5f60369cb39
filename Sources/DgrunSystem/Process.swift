#if canImport(Glibc)
import Glibc
#endif

/// Facts about processes that dgrun needs: liveness and start time (to tell a reused pid apart).
public enum ProcessInfo {
    /// Field 22 of /proc/PID/stat: start time in clock ticks since boot, nil when the process is gone.
    public static func startTime(of pid: Int32) -> UInt64? {
        // Bytes, not a String split into Substrings (~0.2 M instructions at every start).
        guard let stat = try? FileIO.readBytes("/proc/\(pid)/stat"),
              let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        // comm may contain spaces and parentheses: count fields after the last ')'. The state
        // (field 3) is the first after it, so the start time (field 22) is the 20th.
        var field = 0, at = close + 1
        let space = UInt8(ascii: " ")
        while at < stat.count {
            while at < stat.count && stat[at] == space { at += 1 }
            guard at < stat.count else { break }
            if field == 19 {
                var value: UInt64 = 0, digits = 0
                while at < stat.count, stat[at] >= UInt8(ascii: "0"), stat[at] <= UInt8(ascii: "9") {
                    let (times, o1) = value.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times.addingReportingOverflow(UInt64(stat[at] - UInt8(ascii: "0")))
                    guard !o1, !o2 else { return nil }
                    value = sum
                    at += 1
                    digits += 1
                }
                return digits > 0 && (at == stat.count || stat[at] == space || stat[at] == UInt8(ascii: "\n")) ? value : nil
            }
            while at < stat.count && stat[at] != space { at += 1 }
            field += 1
        }
        return nil
    }

    public static var cpuCount: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// This process runs under a seccomp filter (`Seccomp: 2`): inside another sandbox.
    public static var underSeccompFilter: Bool {
        // The line as bytes (a whole-file split into Substrings cost more than the read).
        let status = (try? FileIO.readBytes("/proc/self/status")) ?? []
        let key = Array("\nSeccomp:".utf8)
        guard let at = status.indices.first(where: { status[$0...].starts(with: key) }) else { return false }
        let line = status[(at + key.count)...].prefix { $0 != UInt8(ascii: "\n") }
        return line.last == UInt8(ascii: "2")
    }

    public static var lastCapability: Int {
        (try? FileIO.read("/proc/sys/kernel/cap_last_cap")).flatMap {
            Int($0.trimmingCharacters(in: " \n"))
        } ?? 40
    }
}

extension String {
    /// Trim characters from both ends without Foundation.
    public func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s.removeFirst() }
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}

extension String {
    /// Zero-padded on the left to `width` characters (dates, hex bytes), without String(format:).
    public func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

extension Double {
    /// The number with `digits` decimals, rounded, without Foundation's String(format:).
    public func fixed(_ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(self) * scale).rounded()
        let whole = Int(scaled / scale), fraction = Int(scaled - Double(whole) * scale)
        let sign = self < 0 && scaled > 0 ? "-" : ""
        guard digits > 0 else { return sign + String(whole) }
        let text = String(fraction)
        return sign + String(whole) + "." + String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}

/// Seconds as Doubles: monotonic for durations, realtime for timestamps that are stored.
public enum Clock {
    public static func monotonic() -> Double { read(CLOCK_MONOTONIC) }
    public static func now() -> Double { read(CLOCK_REALTIME) }

    static func read(_ clock: clockid_t) -> Double {
        var ts = timespec()
        clock_gettime(clock, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// dgrun's own descriptor limit, raised to the hard limit (at most 65,536) for the command: a
/// workspace keeps up to 1,024 task stores open, 3 descriptors each, and the usual soft limit is
/// 1,024. The sandboxed command gets the limit dgrun was given (`original`), as Go's runtime
/// does for the processes it starts: a program that uses select() may rely on it.
public enum OpenFileLimit {
    static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)

    /// The limit before the raise; nil when nothing was raised. The first use raises it.
    public static let original: (soft: UInt64, hard: UInt64)? = {
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return nil }
        let wanted = min(limit.rlim_max, 65_536)
        guard limit.rlim_cur < wanted else { return nil }
        var raised = limit
        raised.rlim_cur = wanted
        guard setrlimit(resource, &raised) == 0 else { return nil }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }()

    /// The soft limit in force now; Int.max when there is none.
    public static var current: Int {
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur != rlim_t.max else { return Int.max }
        return Int(clamping: limit.rlim_cur)
    }
}
