#if canImport(Glibc)
import Glibc
#endif

/// Starting limits from history, as VPA and Autopilot do: a percentile of past peaks where recent
/// runs weigh more (weights halve every `halfLife` runs), plus a margin; never above the ceiling.
public enum Recommender {
    public static let halfLife = 4.0
    public static let percentile = 0.95
    public static let memoryMargin = 0.15
    public static let memoryFloor: UInt64 = 16 << 20
    public static let cpuMargin = 0.20

    /// `peaks`: newest first. nil without history.
    public static func memory(peaks: [UInt64], ceiling: UInt64) -> UInt64? {
        guard let p = weightedPercentile(peaks.map { Double($0) }) else { return nil }
        let recommended = UInt64(p * (1 + memoryMargin)) + (8 << 20)
        return min(ceiling, max(memoryFloor, recommended))
    }

    /// `rates`: CPUs used on average by each past run (CPU time ÷ wall time), newest first.
    public static func cpuQuota(rates: [Double], ceilingQuota: UInt64) -> UInt64? {
        guard let p = weightedPercentile(rates) else { return nil }
        let quota = UInt64(max(0.2, p * (1 + cpuMargin)) * 100_000)
        return min(ceilingQuota, quota)
    }

    /// What past runs used over time: for each `step` from the start, the most any of them used
    /// from one step before to `lookahead` after (their clocks differ a little), plus 5% and
    /// 2 MiB. Empty without usable series.
    public static func schedule(from runs: [[(t: Double, bytes: UInt64)]], step: Double, lookahead: Double = 0.1) -> [UInt64] {
        let end = runs.compactMap { $0.last?.t }.max() ?? 0
        guard end > 0, step > 0 else { return [] }
        var result: [UInt64] = []
        var carried: UInt64 = 0
        for i in 0...Int(end / step) {
            let from = Double(i) * step - step, to = Double(i) * step + lookahead
            let seen = runs.flatMap { $0.filter { $0.t >= from && $0.t <= to } }.map(\.bytes).max()
            if let seen { carried = seen }
            result.append(carried + carried / 20 + (2 << 20))
        }
        return result
    }

    /// The weighted percentile of `values` (newest first), weight 2^(-age/halfLife).
    public static func weightedPercentile(_ values: [Double], percentile: Double = Recommender.percentile) -> Double? {
        guard !values.isEmpty else { return nil }
        let weighted = values.enumerated().map { (value: $0.element, weight: pow2(-Double($0.offset) / halfLife)) }
            .sorted { $0.value < $1.value }
        let total = weighted.reduce(0) { $0 + $1.weight }
        var running = 0.0
        for item in weighted {
            running += item.weight
            if running >= percentile * total { return item.value }
        }
        return weighted.last?.value
    }

    static func pow2(_ x: Double) -> Double { exp2(x) }
}
