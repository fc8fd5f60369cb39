/// The parsers' entries, used by the fuzzers (Fuzz/): the cgroup file readers that are otherwise
/// internal (the file is read by the caller; these parse its text).
extension CgroupSample {
    /// `key value` lines (memory.events, memory.stat, cpu.stat, memory.oom_control).
    public static func parseKeyed(_ text: String) -> [String: UInt64] { CgroupFS.keyed(text) }

    /// The `some total=` of a PSI file (memory.pressure, cpu.pressure, io.pressure).
    public static func parsePressure(_ text: String) -> UInt64? { psiSomeTotal(text) }
}
