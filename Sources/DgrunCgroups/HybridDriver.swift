import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// cgroup v1 controllers, one hierarchy each (or co-mounted), plus — on the hybrid layout — a child
/// in the unified v2 tree for per-run PSI, cgroup.kill, freeze and clone3(CLONE_INTO_CGROUP).
public struct HybridDriver: CgroupDriver {
    /// Directory of dgrun's own cgroup in each v1 hierarchy we use, keyed by controller.
    public let v1Bases: [String: String]
    /// dgrun's own cgroup in the unified tree (hybrid layout), if writable.
    public let unifiedBase: String?
    public let layout: CgroupLayout
    public var name: String { layout.rawValue }

    /// cpuacct is not used: the sandbox init reaps every process of the sandbox and reports their
    /// rusage, the same CPU totals without a hierarchy to create and remove per run.
    static let usedControllers = ["memory", "cpu", "pids"]

    public init(memberships: [CgroupMembership], mounts: [CgroupMount], layout: CgroupLayout) {
        var bases: [String: String] = [:]
        for controller in Self.usedControllers {
            guard let mount = mounts.first(where: { $0.version == 1 && $0.controllers.contains(controller) }),
                  let member = memberships.first(where: { $0.controllers.contains(controller) }) else { continue }
            bases[controller] = mount.directory(for: member.path)
        }
        v1Bases = bases
        if layout == .hybrid,
           let mount = mounts.first(where: { $0.version == 2 }),
           let member = memberships.first(where: { $0.hierarchy == 0 }) {
            let dir = mount.directory(for: member.path)
            unifiedBase = FileIO.isWritable(dir) ? dir : nil
        } else {
            unifiedBase = nil
        }
        self.layout = layout
    }

    var unusableReason: String? {
        guard let memory = v1Bases["memory"] else { return "the v1 memory controller is not mounted" }
        return FileIO.isWritable(memory) ? nil : "dgrun's cgroup \(memory) is not writable by this user (no delegated cgroup)"
    }

    /// The writes that apply `limits`, as (controller, file, value), in order. Pure, for unit tests.
    public static func limitWrites(_ limits: ResourceLimits, hasMemsw: Bool) -> [(controller: String, file: String, value: String)] {
        var writes: [(String, String, String)] = []
        if let memory = limits.memoryBytes {
            writes.append(("memory", "memory.limit_in_bytes", String(memory)))
            // With swap accounting the limit must cover memory+swap too, or swap lets it grow past it.
            if hasMemsw { writes.append(("memory", "memory.memsw.limit_in_bytes", String(memory))) }
        }
        if let cpus = limits.cpus {
            writes.append(("cpu", "cpu.cfs_period_us", "100000"))
            writes.append(("cpu", "cpu.cfs_quota_us", String(ResourceLimits.cfsQuota(cpus: cpus))))
        }
        if let pids = limits.pids { writes.append(("pids", "pids.max", String(pids))) }
        return writes
    }

    public func create(limits: ResourceLimits, companions: [Int32]) throws(SystemError) -> any CgroupRun {
        let name = RunCgroupName.make()
        let run = HybridRun()
        do throws(SystemError) {
            // One directory per distinct hierarchy (cpu and cpuacct may be co-mounted); cpu only
            // when it limits something. Each hierarchy costs a mkdir, a join and an rmdir per run.
            for (controller, base) in v1Bases.sorted(by: { $0.key < $1.key })
            where controller != "cpu" || limits.cpus != nil {
                let dir = base + "/" + name
                run.byController[controller] = dir
                if run.v1Directories.contains(dir) { continue }
                try CgroupFS.makeDirectory(dir, hint: "dgrun creates one cgroup per run below its own cgroup")
                run.v1Directories.append(dir)
            }
            for (controller, limit) in [("memory", limits.memoryBytes != nil), ("cpu", limits.cpus != nil), ("pids", limits.pids != nil)]
            where limit && run.byController[controller] == nil {
                throw SystemError("limit \(controller)", path: "/sys/fs/cgroup/\(controller)", errno: ENOTSUP,
                                  hint: "the v1 \(controller) controller is not mounted; drop that limit or pass --limits best-effort")
            }
            let hasMemsw = run.byController["memory"].map { FileIO.exists($0 + "/memory.memsw.limit_in_bytes") } ?? false
            for write in Self.limitWrites(limits, hasMemsw: hasMemsw) {
                guard let dir = run.byController[write.controller] else { continue }
                try FileIO.write(dir + "/" + write.file, write.value, hint: "the kernel rejected this limit")
            }
            if let unifiedBase {
                let dir = unifiedBase + "/" + name
                try CgroupFS.makeDirectory(dir, hint: "dgrun creates a unified-tree child per run for PSI and cgroup.kill")
                run.unifiedDirectory = dir
                run.cloneFD = try valueOrErrno("open cgroup", path: dir) { open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
                run.killFD = open(dir + "/cgroup.kill", O_WRONLY | O_CLOEXEC)
            }
        } catch {
            try? run.remove()
            throw error
        }
        return run
    }

    @discardableResult public func removeStale() -> [String] {
        var removed: [String] = []
        if let unifiedBase { removed += V2Run.removeStale(below: unifiedBase) }
        for base in Set(v1Bases.values) {
            for name in FileIO.listDirectory(base) where RunCgroupName.isStale(name) {
                let dir = base + "/" + name
                CgroupFS.killProcesses(in: dir)
                if (try? CgroupFS.removeDirectory(dir)) != nil { removed.append(dir) }
            }
        }
        return removed
    }
}

final class HybridRun: CgroupRun {
    var byController: [String: String] = [:]
    var v1Directories: [String] = []
    var unifiedDirectory: String?
    var cloneFD: Int32 = -1
    var killFD: Int32 = -1
    var directories: [String] { v1Directories + (unifiedDirectory.map { [$0] } ?? []) }
    /// The files of the monitor's samples (HybridRun.Counter), kept open while the run lasts;
    /// made at the first sample, once the driver has set the directories.
    lazy var counters = CounterFiles(Counter.allCases.map { counter in
        let (controller, file) = counter.place
        return (controller.map { byController[$0] } ?? unifiedDirectory).map { $0 + "/" + file } ?? ""
    })

    func openJoinFiles() throws(SystemError) -> [Int32] {
        var fds: [Int32] = []
        for dir in v1Directories {
            let path = dir + "/tasks"
            do {
                fds.append(try valueOrErrno("open", path: path) { open(path, O_WRONLY | O_CLOEXEC) })
            } catch {
                for fd in fds { close(fd) }
                throw error
            }
        }
        return fds
    }

    func stats() -> CgroupStats {
        var stats = CgroupStats()
        if let memory = byController["memory"] {
            stats.memoryPeakBytes = CgroupFS.readNumber(memory + "/memory.max_usage_in_bytes")
            stats.oomKills = Int(counters.read(Counter.oomControl.rawValue) { CounterText.value(of: "oom_kill", in: $0) } ?? 0)
        }
        if let pids = byController["pids"] {
            stats.pidsPeak = CgroupFS.readNumber(pids + "/pids.peak").map(Int.init)
        }
        return stats
    }

    func remove() throws(SystemError) {
        counters.close()
        if cloneFD >= 0 { close(cloneFD); cloneFD = -1 }
        if killFD >= 0 { close(killFD); killFD = -1 }
        var firstError: SystemError?
        for dir in directories.reversed() {
            do { try CgroupFS.removeDirectory(dir) } catch { firstError = firstError ?? error }
        }
        if let firstError { throw firstError }
    }

    deinit {
        if cloneFD >= 0 { close(cloneFD) }
        if killFD >= 0 { close(killFD) }
    }
}
