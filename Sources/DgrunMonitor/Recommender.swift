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

    /// A quota below one CPU throttles every burst of a single thread, and a run's average (its CPU
    /// time ÷ wall time) hides its bursts: a task that sleeps most of the time and then touches
    /// 250 MiB averages 0.05 CPUs but needs a whole one while it runs (at 0.2 it ran 5× slower,
    /// and no idle CPU on a busy host meant no raise).
    public static let cpuFloor = 1.0

    /// `rates`: CPUs used on average by each past run (CPU time ÷ wall time), newest first.
    public static func cpuQuota(rates: [Double], ceilingQuota: UInt64) -> UInt64? {
        guard let p = weightedPercentile(rates) else { return nil }
        let quota = UInt64(max(cpuFloor, p * (1 + cpuMargin)) * 100_000)
        return min(ceilingQuota, quota)
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

/// What past runs used over time, for the tuner to follow. Their clocks are not the current run's
/// (a loaded machine stretches one run and not another, a step comes earlier or later), so each
/// past run is followed by usage, not by the clock: a cursor per run moves forward to where that
/// run used what the task uses now, and the limit is what it used from there to `lookahead`
/// later, plus 5% and 2 MiB. Levels come from history; timing from the task.
public struct UsageSchedule: Sendable, Equatable {
    public struct Point: Sendable, Equatable {
        public var t: Double
        public var bytes: UInt64
        public init(t: Double, bytes: UInt64) { self.t = t; self.bytes = bytes }
    }

    public static let lookahead = 0.1
    /// Usage within 5% of a past run's counts as the same point of it.
    public static let tolerance = 0.05
    public let runs: [[Point]]

    public init(runs: [[(t: Double, bytes: UInt64)]] = []) {
        self.runs = runs.map { $0.map { Point(t: $0.t, bytes: $0.bytes) } }.filter { !$0.isEmpty }
    }

    public var isEmpty: Bool { runs.isEmpty }

    /// Where the limit starts: the most any past run used in its first `lookahead`, with the margin.
    public var start: UInt64? {
        let first = runs.compactMap { run in run.prefix { $0.t <= run[0].t + Self.lookahead }.map(\.bytes).max() }
        return first.max().map(Self.withMargin)
    }

    static func withMargin(_ bytes: UInt64) -> UInt64 { bytes + bytes / 20 + (2 << 20) }

    /// Follows one run of the task through the schedule (the monitor's thread owns it).
    public struct Follower: Sendable {
        let runs: [[Point]]
        var cursors: [Int]
        /// The most the current run has used: only a task that has itself fallen from a peak moves
        /// a cursor forward to a past run's fall (noise at the start must not skip a past peak).
        var peak: UInt64 = 0
        /// Past runs the task has outlived: by the clock it is at their end, and it fell below
        /// anything they used from their matching point on (their series stop before their
        /// processes have all exited). They say nothing more; without any left, the limit
        /// follows usage. (A dip earlier in a run is not its end: history still says what comes.)
        var ended: [Bool]

        public init(_ schedule: UsageSchedule) {
            runs = schedule.runs
            cursors = Array(repeating: 0, count: schedule.runs.count)
            ended = Array(repeating: false, count: schedule.runs.count)
        }

        /// What past runs used from the point that matches `usage` to `lookahead` seconds after it, with
        /// the margin; nil without history. `seconds`: since the task started.
        public mutating func next(usage: UInt64, seconds: Double, lookahead: Double = UsageSchedule.lookahead) -> UInt64? {
            guard !runs.isEmpty else { return nil }
            let tol = UsageSchedule.tolerance, u = Double(usage)
            var most: UInt64 = 0
            for (i, run) in runs.enumerated() where !ended[i] {
                var k = cursors[i]
                let here = Double(run[k].bytes)
                if u > here * (1 + tol) {
                    // Rising: to where this run first reached today's usage.
                    k = run[k...].firstIndex { Double($0.bytes) >= u * (1 - tol) } ?? k
                } else if u < here * (1 - tol) - Double(1 << 20), u < Double(peak) * (1 - tol) {
                    // Fallen from a peak: to where this run fell as low.
                    if let fell = run[k...].firstIndex(where: { Double($0.bytes) <= u * (1 + tol) + Double(1 << 20) }) {
                        k = fell
                    } else if seconds >= run[run.count - 1].t - UsageSchedule.lookahead {
                        ended[i] = true
                        continue
                    }
                }
                cursors[i] = k
                let until = run[k].t + lookahead
                most = max(most, run[k...].prefix { $0.t <= until }.map(\.bytes).max() ?? run[k].bytes)
            }
            peak = max(peak, usage)
            return UsageSchedule.withMargin(ended.allSatisfy { $0 } ? usage : most)
        }
    }
}
