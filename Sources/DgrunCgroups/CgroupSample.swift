import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// What a running cgroup looks like at one moment: the monitor's input. nil: not reported here.
public struct CgroupSample: Sendable, Equatable {
    public var memoryCurrent: UInt64?
    /// v2 memory.events `high`: times the cgroup was throttled above memory.high.
    public var memoryHighEvents: UInt64?
    /// v2 memory.events `max`, v1 memory.failcnt: times it hit its hard limit.
    public var memoryMaxEvents: UInt64?
    public var oomKills: UInt64?
    public var cpuUsageMicros: UInt64?
    public var cpuThrottledMicros: UInt64?
    /// PSI `some` totals (µs stalled) of the cgroup: memory, cpu, io.
    public var memoryStallMicros: UInt64?
    public var cpuStallMicros: UInt64?
    public var ioStallMicros: UInt64?
    public var pids: UInt64?

    public init() {}

    /// The `total=` of the `some` line of a PSI file.
    static func psiSomeTotal(_ text: String?) -> UInt64? {
        text.flatMap { CounterText.parse($0, CounterText.psiSomeTotal) }
    }
}

/// The limits a monitor may move while a run goes on.
public enum CgroupKnob: String, Sendable, CaseIterable {
    /// v2 memory.high: above it the kernel reclaims and throttles, never kills.
    case memoryHigh = "memory.high"
    /// v1 memory.soft_limit_in_bytes: what the kernel reclaims first when the host runs short.
    case memorySoft = "memory.soft_limit_in_bytes"
    /// CPU quota in µs per 100 ms period (v2 cpu.max, v1 cpu.cfs_quota_us).
    case cpuQuota = "cpu.max"
}

/// What a run's cgroups can do while it runs: read samples, move limits, and wake a monitor.
public protocol LiveCgroup: AnyObject {
    func sample() -> CgroupSample
    /// Usage only (one small read): what the monitor decides on when a memory event wakes it.
    func memoryUsage() -> UInt64?
    /// Knobs this layout can move live: memory.high on v2, the soft limit on v1 (see HybridRun).
    /// (An array, not a Set: a Set of it makes the runtime search every conformance record for
    /// CgroupKnob's Hashable on each start, ~0.2 M instructions.)
    var liveKnobs: [CgroupKnob] { get }
    func set(_ knob: CgroupKnob, to value: UInt64) throws(SystemError)
    /// Files whose change (inotify IN_MODIFY) means memory events happened (v2 memory.events).
    var eventFiles: [String] { get }
    /// PSI files to arm a trigger on (POLLPRI when a stall threshold is crossed).
    var pressureFiles: [String] { get }
    /// v1: `cgroup.event_control` registrations (eventfd, watched file fd, argument), armed by the monitor.
    var v1EventSources: [(control: String, file: String, argument: String)] { get }
    /// v1: a registration that fires when usage crosses `bytes`, so that the monitor follows
    /// growth between its samples.
    func usageThreshold(_ bytes: UInt64) -> (control: String, file: String, argument: String)?
}

extension V2Run {
    /// What a sample reads, in the run's cgroup.
    /// (The raw value is the file's index in the run's CounterFiles.)
    enum Counter: Int, CaseIterable {
        case memoryCurrent, memoryEvents, cpuStat, memoryPressure, cpuPressure, ioPressure, pids
        var file: String {
            ["memory.current", "memory.events", "cpu.stat", "memory.pressure", "cpu.pressure", "io.pressure", "pids.current"][rawValue]
        }
    }

    func memoryUsage() -> UInt64? { counters.read(Counter.memoryCurrent.rawValue, CounterText.number) }

    func sample() -> CgroupSample {
        var s = CgroupSample()
        s.memoryCurrent = memoryUsage()
        _ = counters.read(Counter.memoryEvents.rawValue) { bytes -> Void? in
            s.memoryHighEvents = CounterText.value(of: "high", in: bytes)
            s.memoryMaxEvents = CounterText.value(of: "max", in: bytes)
            s.oomKills = CounterText.value(of: "oom_kill", in: bytes)
            return ()
        }
        _ = counters.read(Counter.cpuStat.rawValue) { bytes -> Void? in
            s.cpuUsageMicros = CounterText.value(of: "usage_usec", in: bytes)
            s.cpuThrottledMicros = CounterText.value(of: "throttled_usec", in: bytes)
            return ()
        }
        s.memoryStallMicros = counters.read(Counter.memoryPressure.rawValue, CounterText.psiSomeTotal)
        s.cpuStallMicros = counters.read(Counter.cpuPressure.rawValue, CounterText.psiSomeTotal)
        s.ioStallMicros = counters.read(Counter.ioPressure.rawValue, CounterText.psiSomeTotal)
        s.pids = counters.read(Counter.pids.rawValue, CounterText.number)
        return s
    }

    var liveKnobs: [CgroupKnob] {
        var knobs: [CgroupKnob] = []
        if FileIO.exists(directory + "/memory.high") { knobs.append(.memoryHigh) }
        if FileIO.exists(directory + "/cpu.max") { knobs.append(.cpuQuota) }
        return knobs
    }

    func set(_ knob: CgroupKnob, to value: UInt64) throws(SystemError) {
        switch knob {
        case .memoryHigh: try FileIO.write(directory + "/memory.high", String(value))
        case .memorySoft: throw SystemError("set memory.soft_limit_in_bytes", errno: ENOTSUP, hint: "cgroup v2 has memory.high instead")
        case .cpuQuota: try FileIO.write(directory + "/cpu.max", "\(value) 100000")
        }
    }

    var eventFiles: [String] { [directory + "/memory.events"] }
    var pressureFiles: [String] { [directory + "/memory.pressure"] }
    var v1EventSources: [(control: String, file: String, argument: String)] { [] }
    func usageThreshold(_ bytes: UInt64) -> (control: String, file: String, argument: String)? { nil }
}

extension HybridRun {
    /// What a sample reads: the v1 controllers' files and the unified tree's (cpu.stat, PSI).
    /// (The raw value is the file's index in the run's CounterFiles.)
    enum Counter: Int, CaseIterable {
        case memoryUsage, memoryFailures, oomControl, cpuStat, unifiedCPUStat, memoryPressure, cpuPressure, ioPressure, pids
        /// The v1 controller whose directory holds it (nil: the unified tree's), and the file.
        var place: (controller: String?, file: String) {
            switch self {
            case .memoryUsage: ("memory", "memory.usage_in_bytes")
            case .memoryFailures: ("memory", "memory.failcnt")
            case .oomControl: ("memory", "memory.oom_control")
            case .cpuStat: ("cpu", "cpu.stat")
            case .unifiedCPUStat: (nil, "cpu.stat")
            case .memoryPressure: (nil, "memory.pressure")
            case .cpuPressure: (nil, "cpu.pressure")
            case .ioPressure: (nil, "io.pressure")
            case .pids: ("pids", "pids.current")
            }
        }
    }

    func memoryUsage() -> UInt64? { counters.read(Counter.memoryUsage.rawValue, CounterText.number) }

    func sample() -> CgroupSample {
        var s = CgroupSample()
        s.memoryCurrent = memoryUsage()
        s.memoryMaxEvents = counters.read(Counter.memoryFailures.rawValue, CounterText.number)
        s.oomKills = counters.read(Counter.oomControl.rawValue) { CounterText.value(of: "oom_kill", in: $0) }
        s.cpuThrottledMicros = counters.read(Counter.cpuStat.rawValue) { CounterText.value(of: "throttled_time", in: $0) }.map { $0 / 1000 }
        s.cpuUsageMicros = counters.read(Counter.unifiedCPUStat.rawValue) { CounterText.value(of: "usage_usec", in: $0) }
        s.memoryStallMicros = counters.read(Counter.memoryPressure.rawValue, CounterText.psiSomeTotal)
        s.cpuStallMicros = counters.read(Counter.cpuPressure.rawValue, CounterText.psiSomeTotal)
        s.ioStallMicros = counters.read(Counter.ioPressure.rawValue, CounterText.psiSomeTotal)
        s.pids = counters.read(Counter.pids.rawValue, CounterText.number)
        return s
    }

    /// v1 has no memory.high. Tuning its hard limit below the ceiling was tried: a task that
    /// outgrows the monitor waits at the limit (OOM killer off) and meanwhile every syscall that
    /// allocates (pipe and socket buffers) fails with ENOMEM; 1 run in 12 of a fast-growing
    /// pipeline failed so. So the hard limit stays at the ceiling and the soft limit is tuned.
    var liveKnobs: [CgroupKnob] {
        var knobs: [CgroupKnob] = []
        if byController["memory"] != nil { knobs.append(.memorySoft) }
        if byController["cpu"] != nil { knobs.append(.cpuQuota) }
        return knobs
    }

    func set(_ knob: CgroupKnob, to value: UInt64) throws(SystemError) {
        switch knob {
        case .memoryHigh:
            throw SystemError("set memory.high", errno: ENOTSUP, hint: "cgroup v1 has no memory.high")
        case .memorySoft:
            guard let memory = byController["memory"] else { return }
            try FileIO.write(memory + "/memory.soft_limit_in_bytes", String(value))
        case .cpuQuota:
            guard let cpu = byController["cpu"] else { return }
            try FileIO.write(cpu + "/cpu.cfs_quota_us", String(value))
        }
    }

    var eventFiles: [String] { [] }
    var pressureFiles: [String] { unifiedDirectory.map { [$0 + "/memory.pressure"] } ?? [] }
    var v1EventSources: [(control: String, file: String, argument: String)] {
        guard let memory = byController["memory"] else { return [] }
        return [(memory + "/cgroup.event_control", memory + "/memory.oom_control", "")]
    }

    func usageThreshold(_ bytes: UInt64) -> (control: String, file: String, argument: String)? {
        byController["memory"].map { ($0 + "/cgroup.event_control", $0 + "/memory.usage_in_bytes", String(bytes)) }
    }
}
