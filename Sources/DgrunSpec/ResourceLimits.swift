import DgrunSystem

/// The limits a user asked for. nil means "not limited".
public struct ResourceLimits: Sendable, Equatable, Codable {
    public var memoryBytes: UInt64?
    public var cpus: Double?
    public var pids: Int?

    public init(memoryBytes: UInt64? = nil, cpus: Double? = nil, pids: Int? = nil) {
        self.memoryBytes = memoryBytes
        self.cpus = cpus
        self.pids = pids
    }

    public var isEmpty: Bool { memoryBytes == nil && cpus == nil && pids == nil }

    /// Rejects values no kernel would accept, with a message that says the allowed range.
    public func validated(hostCPUs: Int) throws(DgrunError) -> ResourceLimits {
        if let memoryBytes, memoryBytes < 6 << 20 {
            throw DgrunError("--memory \(ByteSize.describe(memoryBytes)) is too small: the minimum is 6 MiB")
        }
        if let cpus, !(cpus >= 0.01 && cpus <= Double(hostCPUs)) {
            throw DgrunError("--cpus \(cpus) is out of range: this machine allows 0.01 to \(hostCPUs)")
        }
        if let pids, pids < 1 {
            throw DgrunError("--pids \(pids) is out of range: it must be at least 1")
        }
        return self
    }

    /// CFS bandwidth: quota and period in microseconds for `cpus` CPUs (period 100 ms, as docker).
    public static func cfsQuota(cpus: Double, periodMicros: Int = 100_000) -> Int {
        max(1000, Int((cpus * Double(periodMicros)).rounded()))
    }

    enum CodingKeys: String, CodingKey {
        case memoryBytes = "memory_bytes", cpus, pids
    }
}

/// What to do when limits were asked for but no cgroup can be written (rootless without delegation).
public enum LimitMode: String, Sendable, CaseIterable {
    /// Refuse to run: limits are a promise.
    case enforce
    /// Fall back to rlimits (address space, process count) and say so.
    case bestEffort = "best-effort"
}
