import DgrunSystem

/// The parsers' entries, used by the fuzzers (Fuzz/): the cgroup file readers that are otherwise
/// internal (the file is read by the caller; these parse its text).
extension CgroupSample {
    /// `key value` lines (memory.events, cpu.stat, memory.oom_control), as the monitor reads them.
    public static func parseKeyed(_ text: String) -> [UInt64?] {
        CounterText.parse(text) { bytes in
            [CounterText.value(of: "oom_kill", in: bytes), CounterText.value(of: "usage_usec", in: bytes),
             CounterText.value(of: "MemAvailable", in: bytes), CounterText.number(bytes)]
                + CounterText.numbers(after: "cpu", in: bytes).prefix(1).map { Optional($0) }
        }
    }

    /// The `some total=` of a PSI file (memory.pressure, cpu.pressure, io.pressure).
    public static func parsePressure(_ text: String) -> UInt64? { psiSomeTotal(text) }
}
