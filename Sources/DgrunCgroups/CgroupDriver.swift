import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// What a run used, read from its cgroup when the run ends. nil: the layout does not report it.
public struct CgroupStats: Sendable, Equatable {
    public var memoryPeakBytes: UInt64?
    public var oomKills: Int = 0
    public var cpuUserMicros: UInt64?
    public var cpuSystemMicros: UInt64?
    public var pidsPeak: Int?
    public init() {}
}

/// Creates per-run cgroups. One implementation per layout, chosen at run time by `CgroupDrivers.detect`.
public protocol CgroupDriver: Sendable {
    /// "v2", "hybrid" or "v1", as the --report field `cgroup_driver`.
    var name: String { get }
    /// Creates the run's cgroup(s) below dgrun's own cgroup and applies the limits. `companions`:
    /// dgrun's own children in its cgroup that go wherever dgrun goes (the run's sandbox init,
    /// cloned before its cgroups are made), not processes that share dgrun's cgroup.
    func create(limits: ResourceLimits, companions: [Int32]) throws(SystemError) -> any CgroupRun
    /// Removes run cgroups whose dgrun died (SIGKILL): their names carry the owner's pid and start time.
    @discardableResult func removeStale() -> [String]
}

/// One run's cgroup(s).
public protocol CgroupRun: LiveCgroup {
    /// A cgroup-v2 directory fd for clone3(CLONE_INTO_CGROUP), or -1.
    var cloneFD: Int32 { get }
    /// cgroup.kill of the v2 (or unified-tree) cgroup, opened for writing, or -1.
    var killFD: Int32 { get }
    /// The directories created, for messages and tests.
    var directories: [String] { get }
    /// v1 `tasks` files opened for writing: the child writes "0" to each to join (see dgrun_plan).
    /// Empty for v2, where clone3(CLONE_INTO_CGROUP) places it.
    func openJoinFiles() throws(SystemError) -> [Int32]
    func stats() -> CgroupStats
    /// Removes the run's cgroups, killing whatever still keeps one busy.
    func remove() throws(SystemError)
    /// The sandbox's init stays in dgrun's own cgroup and may still be exiting when the run's
    /// cgroups are removed; true when `remove` changes dgrun's own cgroup too, so the init must be
    /// gone first (a cgroup v2 that dgrun took over, whose leaf it removes).
    var waitsForInitExit: Bool { get }
}

extension CgroupRun {
    public var waitsForInitExit: Bool { false }
}

extension CgroupDriver {
    public func create(limits: ResourceLimits) throws(SystemError) -> any CgroupRun {
        try create(limits: limits, companions: [])
    }
}

/// Naming that lets a later dgrun tell its own stale cgroups from everything else.
public enum RunCgroupName {
    public static let prefix = "dgrun-"
    /// Runs of one dgrun may start at once (a workspace's tasks, on their threads).
    static let counter = Locked(0)

    public static func make() -> String {
        let n = counter.withLock { $0 += 1; return $0 }
        let pid = getpid()
        return "\(prefix)\(pid)-\(ProcessInfo.startTime(of: pid) ?? 0)-\(n)"
    }

    /// (pid, start time) of the dgrun that made `name`, or nil when it is not a dgrun run cgroup.
    public static func owner(of name: String) -> (pid: Int32, start: UInt64)? {
        guard name.hasPrefix(prefix) else { return nil }
        let parts = name.dropFirst(prefix.count).split(separator: "-")
        guard parts.count == 3, let pid = Int32(parts[0]), let start = UInt64(parts[1]), Int(parts[2]) != nil
        else { return nil }
        return (pid, start)
    }

    public static func isStale(_ name: String) -> Bool {
        guard let owner = owner(of: name) else { return false }
        return ProcessInfo.startTime(of: owner.pid) != owner.start
    }
}

/// Shared cgroupfs operations.
enum CgroupFS {
    static func makeDirectory(_ path: String, hint: String) throws(SystemError) {
        _ = try valueOrErrno("create cgroup", path: path, hint: hint) { mkdir(path, 0o755) }
    }

    /// rmdir; while it is busy, kill what is left (only processes of this run can be in it) and
    /// wait briefly for the kernel to finish tearing them down.
    static func removeDirectory(_ path: String) throws(SystemError) {
        for attempt in 0..<200 {
            if rmdir(path) == 0 || errno == ENOENT { return }
            let err = errno
            if err == EBUSY && attempt == 0 { killProcesses(in: path) }
            guard err == EBUSY, attempt < 199 else {
                throw SystemError("remove cgroup", path: path, errno: err,
                                  hint: "processes may still be running in it; dgrun will retry on its next start")
            }
            usleep(5000)
        }
    }

    static func pids(in directory: String) -> [Int32] {
        ((try? FileIO.read(directory + "/cgroup.procs")) ?? "").split(separator: "\n").compactMap { Int32($0) }
    }

    static func killProcesses(in directory: String) {
        for _ in 0..<50 {
            let pids = pids(in: directory)
            if pids.isEmpty { return }
            for pid in pids { kill(pid, SIGKILL) }
            usleep(2000)
        }
    }

    static func readNumber(_ path: String) -> UInt64? {
        CounterFiles.readOnce(path, CounterText.number)
    }
}

public enum CgroupDrivers {
    /// The driver for this host, or nil when dgrun cannot create cgroups here (rootless without a
    /// delegated cgroup, or no cgroupfs). `reason` says why, for messages.
    public static func detect() -> (driver: (any CgroupDriver)?, layout: CgroupLayout, reason: String) {
        let layout = CgroupLayout.detect()
        let memberships = CgroupMembership.parse((try? FileIO.read("/proc/self/cgroup")) ?? "")
        let mounts = CgroupMount.parse(mountinfo: (try? FileIO.read("/proc/self/mountinfo")) ?? "")
        switch layout {
        case .unified:
            guard let own = memberships.first(where: { $0.hierarchy == 0 }),
                  let mount = mounts.first(where: { $0.version == 2 }) else {
                return (nil, layout, "dgrun's own cgroup-v2 membership was not found in /proc/self/cgroup")
            }
            let base = mount.directory(for: own.path)
            guard FileIO.isWritable(base) else {
                return (nil, layout, "dgrun's cgroup \(base) is not writable by this user (no delegated cgroup)")
            }
            return (V2Driver(base: base), layout, "")
        case .hybrid, .legacy:
            let driver = HybridDriver(memberships: memberships, mounts: mounts, layout: layout)
            if let problem = driver.unusableReason { return (nil, layout, problem) }
            return (driver, layout, "")
        case .none:
            return (nil, layout, "no cgroup filesystem is mounted at /sys/fs/cgroup")
        }
    }
}
