import DgrunProvision
import DgrunSpec
import DgrunSystem

/// What happened in one run: the --report contract of the design notes.
public struct RunOutcome: Sendable, Encodable {
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
    public var adjustments: [LimitAdjustment] = []
    /// The monitor's series (downsampled); empty without a cgroup.
    public var samples: [UsageSample] = []
    public var argv: [String]
    /// The last signal dgrun forwarded into the sandbox (a cancellation), nil when none.
    public var interruptedBy: Int32?
    /// Set when dgrun itself, not the command, failed (exit 125/126/127).
    public var error: String?
    /// discover: what the tracer saw (not part of the --report JSON).
    public var trace: TraceResult?
    /// The file the command's stdout and stderr went to (SandboxSpec.outputFile); not in the report.
    public var log: String?

    public init(exitCode: Int32, signal: Int32? = nil, oomKilled: Bool = false, timedOut: Bool = false, wallSeconds: Double = 0,
                cpuUserSeconds: Double = 0, cpuSystemSeconds: Double = 0, memoryPeakBytes: UInt64? = nil, pidsPeak: Int? = nil,
                cgroupDriver: String = "none", limits: AppliedLimits = AppliedLimits(enforcedBy: "none"), argv: [String] = [],
                error: String? = nil) {
        self.exitCode = exitCode
        self.signal = signal
        self.oomKilled = oomKilled
        self.timedOut = timedOut
        self.wallSeconds = wallSeconds
        self.cpuUserSeconds = cpuUserSeconds
        self.cpuSystemSeconds = cpuSystemSeconds
        self.memoryPeakBytes = memoryPeakBytes
        self.pidsPeak = pidsPeak
        self.cgroupDriver = cgroupDriver
        self.limits = limits
        self.argv = argv
        self.error = error
    }

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
        case limits, adjustments, argv, error, samples, interruptedBy = "interrupted_by"
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
        try c.encode(interruptedBy, forKey: .interruptedBy)
    }
}

