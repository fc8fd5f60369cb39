import DgrunMonitor
import DgrunSpec

/// What happened in one run: the --report contract of the design notes.
public struct RunOutcome: Sendable, Encodable {
    public struct AppliedLimits: Sendable, Encodable, Equatable {
        public var memoryBytes: UInt64?
        public var memoryHighBytes: UInt64?
        /// v1: the tuned soft limit at the start (v1 has no memory.high).
        public var memorySoftBytes: UInt64?
        public var cpus: Double?
        public var pids: Int?
        /// "cgroup", "rlimit" (best effort, rootless) or "none".
        public var enforcedBy: String

        enum CodingKeys: String, CodingKey {
            case memoryBytes = "memory_bytes", memoryHighBytes = "memory_high_bytes", memorySoftBytes = "memory_soft_bytes", cpus, pids
            case enforcedBy = "enforced_by"
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(memoryBytes, forKey: .memoryBytes)
            try c.encode(memoryHighBytes, forKey: .memoryHighBytes)
            try c.encodeIfPresent(memorySoftBytes, forKey: .memorySoftBytes)
            try c.encode(cpus, forKey: .cpus)
            try c.encode(pids, forKey: .pids)
            try c.encode(enforcedBy, forKey: .enforcedBy)
        }
    }

    /// One live change of a limit (filled by the tuner; empty until it exists).
    public struct Adjustment: Sendable, Encodable, Equatable {
        public var tSeconds: Double
        public var knob: String
        public var from: String
        public var to: String
        public var reason: String
        enum CodingKeys: String, CodingKey { case tSeconds = "t_s", knob, from, to, reason }
        public init(tSeconds: Double, knob: String, from: String, to: String, reason: String) {
            self.tSeconds = tSeconds
            self.knob = knob
            self.from = from
            self.to = to
            self.reason = reason
        }
    }

    public var exitCode: Int32
    public var signal: Int32?
    public var oomKilled: Bool
    public var timedOut: Bool
    public var wallSeconds: Double
    public var cpuUserSeconds: Double
    public var cpuSystemSeconds: Double
    public var memoryPeakBytes: UInt64?
    public var pidsPeak: Int?
    public var cgroupDriver: String
    public var limits: AppliedLimits
    public var adjustments: [Adjustment] = []
    /// The monitor's series (downsampled); empty without a cgroup.
    public var samples: [MonitorSample] = []
    public var argv: [String]
    /// Set when dgrun itself, not the command, failed (exit 125/126/127).
    public var error: String?
    /// discover: what the tracer saw (not part of the --report JSON).
    public var trace: TraceResult?

    /// The report of a run that never started: dgrun failed before the command existed.
    public static func notStarted(argv: [String], exitCode: Int32, error: String) -> RunOutcome {
        RunOutcome(exitCode: exitCode, oomKilled: false, timedOut: false, wallSeconds: 0, cpuUserSeconds: 0,
                   cpuSystemSeconds: 0, cgroupDriver: "none", limits: AppliedLimits(enforcedBy: "none"),
                   argv: argv, error: error)
    }

    enum CodingKeys: String, CodingKey {
        case exitCode = "exit_code", signal, oomKilled = "oom_killed", timedOut = "timed_out"
        case wallSeconds = "wall_s", cpuUserSeconds = "cpu_user_s", cpuSystemSeconds = "cpu_sys_s"
        case memoryPeakBytes = "memory_peak_bytes", pidsPeak = "pids_peak", cgroupDriver = "cgroup_driver"
        case limits, adjustments, argv, error, samples
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(exitCode, forKey: .exitCode)
        try c.encode(signal, forKey: .signal)
        try c.encode(oomKilled, forKey: .oomKilled)
        try c.encode(timedOut, forKey: .timedOut)
        try c.encode(wallSeconds, forKey: .wallSeconds)
        try c.encode(cpuUserSeconds, forKey: .cpuUserSeconds)
        try c.encode(cpuSystemSeconds, forKey: .cpuSystemSeconds)
        try c.encode(memoryPeakBytes, forKey: .memoryPeakBytes)
        try c.encode(pidsPeak, forKey: .pidsPeak)
        try c.encode(cgroupDriver, forKey: .cgroupDriver)
        try c.encode(limits, forKey: .limits)
        try c.encode(adjustments, forKey: .adjustments)
        try c.encode(argv, forKey: .argv)
        try c.encode(error, forKey: .error)
        try c.encode(samples, forKey: .samples)
    }
}

/// A failure of dgrun itself, with the exit status the contract gives it (125, 126 or 127).
public struct LaunchError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var exitCode: Int32
    public init(_ message: String, exitCode: Int32 = 125) {
        self.message = message
        self.exitCode = exitCode
    }
    public var description: String { message }
}
