/// What a run was seen doing, shared by the monitor that measures it, the report that shows it and
/// the store that keeps it: one definition each.

/// One point of the monitor's series (the --report `samples` and the store's sample rows).
public struct UsageSample: Sendable, Equatable, Encodable {
    public init(seconds: Double, memoryBytes: UInt64? = nil, memoryLimitBytes: UInt64? = nil, cpuSeconds: Double? = nil,
                memoryStall: Double? = nil, cpuStall: Double? = nil, ioStall: Double? = nil, pids: UInt64? = nil) {
        self.seconds = seconds
        self.memoryBytes = memoryBytes
        self.memoryLimitBytes = memoryLimitBytes
        self.cpuSeconds = cpuSeconds
        self.memoryStall = memoryStall
        self.cpuStall = cpuStall
        self.ioStall = ioStall
        self.pids = pids
    }
    public var seconds: Double
    public var memoryBytes: UInt64?
    /// The limit in force at that moment: memory.high where set, else the hard limit.
    public var memoryLimitBytes: UInt64?
    public var cpuSeconds: Double?
    /// Shares of the interval stalled (PSI `some`).
    public var memoryStall: Double?
    public var cpuStall: Double?
    public var ioStall: Double?
    public var pids: UInt64?

    enum CodingKeys: String, CodingKey {
        case seconds = "t_s", memoryBytes = "memory_bytes", memoryLimitBytes = "memory_limit_bytes", cpuSeconds = "cpu_s"
        case memoryStall = "psi_memory", cpuStall = "psi_cpu", ioStall = "psi_io", pids
    }
}

/// One live change of a limit.
public struct LimitAdjustment: Sendable, Equatable, Codable {
    /// Seconds since the run started.
    public var seconds: Double
    public var knob: String
    public var from: String
    public var to: String
    public var reason: String
    public init(seconds: Double, knob: String, from: String, to: String, reason: String) {
        self.seconds = seconds
        self.knob = knob
        self.from = from
        self.to = to
        self.reason = reason
    }
    enum CodingKeys: String, CodingKey { case seconds = "t_s", knob, from, to, reason }
}

