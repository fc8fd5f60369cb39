import DgrunCgroups
import DgrunSystem

/// The live limits of one run, as the tuner sees them.
public struct TunedLimits: Sendable, Equatable {
    /// The memory knob being tuned: memory.high on v2, the soft limit on v1. nil: not tuned.
    public var memory: UInt64?
    /// CPU quota in µs per 100 ms period. nil: not tuned.
    public var cpuQuota: UInt64?

    public init(memory: UInt64? = nil, cpuQuota: UInt64? = nil) {
        self.memory = memory
        self.cpuQuota = cpuQuota
    }
}

/// What bounds the tuner: the user's ceilings and what the machine (the pool) has free.
public struct TunerBounds: Sendable, Equatable {
    /// --memory: never exceeded (it is memory.max).
    public var memoryCeiling: UInt64?
    /// --cpus, as a quota in µs per 100 ms.
    public var cpuCeilingQuota: UInt64?
    /// Host memory not in use (MemAvailable): a raise beyond it would only move the OOM elsewhere.
    public var memoryAvailable: UInt64?
    /// Idle CPUs on the host, in CPUs.
    public var idleCPUs: Double?
    /// memory.high (v2) or memory.soft_limit_in_bytes (v1).
    public var memoryKnob: CgroupKnob

    public init(memoryCeiling: UInt64?, cpuCeilingQuota: UInt64?, memoryAvailable: UInt64?, idleCPUs: Double?,
                memoryKnob: CgroupKnob) {
        self.memoryCeiling = memoryCeiling
        self.cpuCeilingQuota = cpuCeilingQuota
        self.memoryAvailable = memoryAvailable
        self.idleCPUs = idleCPUs
        self.memoryKnob = memoryKnob
    }
}

/// One interval of a running task, as differences of two cgroup samples.
public struct Observation: Sendable, Equatable {
    public var seconds: Double
    public var memoryCurrent: UInt64
    /// memory.events `high` (v2) since the last observation: the kernel throttled the task.
    public var highEvents: UInt64 = 0
    /// memory.failcnt (v1) / memory.events `max` (v2) since the last observation.
    public var limitHits: UInt64 = 0
    /// Share of the interval some task of the cgroup stalled on memory (PSI `some`).
    public var memoryStall: Double = 0
    /// Share of the interval the cgroup was CPU-throttled (throttled time / wall time).
    public var cpuThrottled: Double = 0
    /// What past runs used from the point of them that matches today's usage to a moment later
    /// (UsageSchedule, with its margin); nil without such history.
    public var scheduled: UInt64?

    public init(seconds: Double, memoryCurrent: UInt64) {
        self.seconds = seconds
        self.memoryCurrent = memoryCurrent
    }
}

/// A change the tuner wants made.
public struct TunerDecision: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        case set(CgroupKnob)
    }
    public var action: Action
    public var from: UInt64?
    public var to: UInt64
    public var reason: String

    public var knobName: String {
        switch action {
        case .set(let knob): return knob.rawValue
        }
    }
}

/// The policy: pure, so that it is tested on synthetic series. Like senpai it reacts to pressure
/// (PSI, memory.high events) and to usage nearing the soft limit by raising it quickly, never past
/// the ceiling (memory.max, where the kernel kills) nor beyond what the host has free. Without a
/// usage schedule from history it never lowers a limit (for batch tasks, a stall costs more than
/// the slack saved); with one, it follows the schedule but stays a tenth above current usage.
public enum LimitTuner {
    /// Above this share of an interval stalled on memory, the task is starved, not just busy.
    public static let memoryStallThreshold = 0.02
    /// Usage this close to the tuned limit raises it before the task gets there.
    public static let headroom = 0.90
    public static let cpuThrottleThreshold = 0.05

    public static func decide(_ o: Observation, limits: TunedLimits, bounds: TunerBounds) -> [TunerDecision] {
        var decisions: [TunerDecision] = []
        if let memory = limits.memory, let ceiling = bounds.memoryCeiling {
            decisions += decideMemory(o, current: memory, ceiling: ceiling, bounds: bounds)
        }
        if let quota = limits.cpuQuota, let ceiling = bounds.cpuCeilingQuota, quota < ceiling,
           o.cpuThrottled > cpuThrottleThreshold, (bounds.idleCPUs ?? 1) >= 0.25 {
            let cpus = Double(quota) / 100_000
            let idle = bounds.idleCPUs ?? 1
            let wanted = min(cpus + max(0.5, cpus * 0.5), cpus + idle)
            let to = min(ceiling, UInt64(wanted * 100_000))
            if to > quota {
                decisions.append(TunerDecision(action: .set(.cpuQuota), from: quota, to: to,
                                               reason: "throttled \(percent(o.cpuThrottled)) of the time with \(idle.fixed(1)) CPUs idle"))
            }
        }
        return decisions
    }

    static func decideMemory(_ o: Observation, current limit: UInt64, ceiling: UInt64, bounds: TunerBounds) -> [TunerDecision] {
        if let scheduled = o.scheduled { return followSchedule(o, scheduled: scheduled, current: limit, ceiling: ceiling, bounds: bounds) }
        var why: String?
        if o.highEvents > 0 { why = "throttled above memory.high \(o.highEvents) times" }
        else if o.memoryStall > memoryStallThreshold { why = "stalled on memory \(percent(o.memoryStall)) of the time" }
        else if Double(o.memoryCurrent) >= headroom * Double(limit) {
            why = "usage \(mib(o.memoryCurrent)) is close to the limit \(mib(limit))"
        }
        guard let why, limit < ceiling else { return [] }
        var to = max(limit + limit / 4, o.memoryCurrent + o.memoryCurrent / 4 + (16 << 20))
        if let available = bounds.memoryAvailable { to = min(to, o.memoryCurrent + available) }
        if Double(to) >= 0.95 * Double(ceiling) { to = ceiling }
        to = min(to, ceiling)
        guard to > limit else { return [] }
        return [TunerDecision(action: .set(bounds.memoryKnob), from: limit, to: to, reason: why)]
    }

    /// With a usage schedule from history, the limit follows it, down as well as up, but never
    /// below what the task uses now plus 5%, and pressure still raises it at once.
    static func followSchedule(_ o: Observation, scheduled: UInt64, current limit: UInt64, ceiling: UInt64,
                               bounds: TunerBounds) -> [TunerDecision] {
        let floor = o.memoryCurrent + o.memoryCurrent / 20 + (2 << 20)
        var target = max(scheduled, floor)
        var why = target == scheduled ? "past runs used this much at this point" : "usage \(mib(o.memoryCurrent)) is above what past runs used here"
        if o.highEvents > 0 || o.memoryStall > memoryStallThreshold {
            target = max(target, limit + limit / 4)
            why = o.highEvents > 0 ? "throttled above memory.high \(o.highEvents) times" : "stalled on memory \(percent(o.memoryStall)) of the time"
        }
        if let available = bounds.memoryAvailable { target = min(target, o.memoryCurrent + available) }
        target = min(target, ceiling)
        // Small moves are noise: act on a rise of 5% (and 1 MiB) or a fall of 10% (and 4 MiB), so
        // that a small task's limit does not flap with every sample.
        let rises = Double(target) > 1.05 * Double(limit) && target - limit >= 1 << 20
        let falls = Double(target) < 0.9 * Double(limit) && limit - target >= 4 << 20
        guard rises || falls else { return [] }
        return [TunerDecision(action: .set(bounds.memoryKnob), from: limit, to: target, reason: why)]
    }

    static func percent(_ x: Double) -> String { (x * 100).fixed(0) + "%" }
    static func mib(_ bytes: UInt64) -> String { "\(bytes >> 20) MiB" }
}
