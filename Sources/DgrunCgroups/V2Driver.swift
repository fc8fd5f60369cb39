import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Pure cgroup v2: one directory per run below dgrun's own cgroup.
public struct V2Driver: CgroupDriver {
    public let base: String
    public var name: String { "v2" }

    public init(base: String) { self.base = base }

    /// The writes that apply `limits` to a v2 cgroup, in order. Pure, for unit tests.
    public static func limitWrites(_ limits: ResourceLimits) -> [(file: String, value: String)] {
        var writes: [(String, String)] = []
        if let memory = limits.memoryBytes {
            // No memory.high yet: without swap, a task above it is throttled in reclaim for minutes
            // instead of being OOM-killed at memory.max (seen in the VM lane). The live tuner, which
            // raises it when pressure shows a stall, is what makes it safe to set.
            writes.append(("memory.max", String(memory)))
            writes.append(("memory.swap.max", "0"))
        }
        if let cpus = limits.cpus {
            writes.append(("cpu.max", "\(ResourceLimits.cfsQuota(cpus: cpus)) 100000"))
        }
        if let pids = limits.pids { writes.append(("pids.max", String(pids))) }
        return writes
    }

    static func controllers(for limits: ResourceLimits) -> [String] {
        var needed: [String] = []
        if limits.memoryBytes != nil { needed.append("memory") }
        if limits.cpus != nil { needed.append("cpu") }
        if limits.pids != nil { needed.append("pids") }
        return needed
    }

    public func create(limits: ResourceLimits, companions: [Int32]) throws(SystemError) -> any CgroupRun {
        let enabled = ((try? FileIO.read(base + "/cgroup.subtree_control")) ?? "")
            .split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        let missing = Self.controllers(for: limits).filter { !enabled.contains($0) }
        // cgroup v2 lets a cgroup enable controllers for its children only while it holds no
        // processes, and dgrun's own cgroup holds dgrun. When dgrun is the only process in it (a
        // cgroup delegated to it, as `systemd-run --scope -p Delegate=yes` makes), it steps into
        // a leaf of its own, enables them, and puts everything back when the run ends.
        let takeover = missing.isEmpty ? nil : try Takeover.begin(base: base, controllers: missing, companions: companions)
        let dir = base + "/" + RunCgroupName.make()
        let run = V2Run(directory: dir, takeover: takeover)
        do throws(SystemError) {
            try CgroupFS.makeDirectory(dir, hint: "dgrun creates one cgroup per run below its own cgroup")
            for write in Self.limitWrites(limits) {
                let path = dir + "/" + write.file
                if write.file == "memory.swap.max" && !FileIO.exists(path) { continue }  // no swap accounting
                try FileIO.write(path, write.value, hint: "the kernel rejected this limit")
            }
            try run.open()
        } catch {
            try? run.remove()
            throw error
        }
        return run
    }

    @discardableResult public func removeStale() -> [String] {
        V2Run.removeStale(below: base)
    }
}

final class V2Run: CgroupRun {
    let directory: String
    private(set) var cloneFD: Int32 = -1
    private(set) var killFD: Int32 = -1
    var directories: [String] { [directory] }
    /// The files of the monitor's samples (V2Run.Counter), kept open while the run lasts.
    let counters: CounterFiles

    let takeover: Takeover?

    init(directory: String, takeover: Takeover? = nil) {
        self.directory = directory
        self.takeover = takeover
        counters = CounterFiles(Counter.allCases.map { directory + "/" + $0.file })
    }

    func open() throws(SystemError) {
        cloneFD = try valueOrErrno("open cgroup", path: directory) {
            Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        }
        killFD = Glibc.open(directory + "/cgroup.kill", O_WRONLY | O_CLOEXEC)  // absent before 5.14
    }

    func openJoinFiles() throws(SystemError) -> [Int32] { [] }  // clone3(CLONE_INTO_CGROUP) places it

    var waitsForInitExit: Bool { takeover != nil }

    func stats() -> CgroupStats {
        var stats = CgroupStats()
        stats.memoryPeakBytes = CgroupFS.readNumber(directory + "/memory.peak")
        stats.oomKills = Int(counters.read(Counter.memoryEvents.rawValue) { CounterText.value(of: "oom_kill", in: $0) } ?? 0)
        let cpu = counters.read(Counter.cpuStat.rawValue) {
            (CounterText.value(of: "user_usec", in: $0), CounterText.value(of: "system_usec", in: $0))
        }
        stats.cpuUserMicros = cpu?.0
        stats.cpuSystemMicros = cpu?.1
        stats.pidsPeak = CgroupFS.readNumber(directory + "/pids.peak").map(Int.init)
        return stats
    }

    static func kill(_ directory: String) {
        if (try? FileIO.write(directory + "/cgroup.kill", "1")) == nil {
            CgroupFS.killProcesses(in: directory)
        }
    }

    func remove() throws(SystemError) {
        counters.close()
        closeFDs()
        try CgroupFS.removeDirectory(directory)
        try takeover?.end()
    }

    private func closeFDs() {
        if cloneFD >= 0 { close(cloneFD); cloneFD = -1 }
        if killFD >= 0 { close(killFD); killFD = -1 }
    }

    deinit { closeFDs() }

    static func removeStale(below base: String) -> [String] {
        var removed: [String] = []
        for name in FileIO.listDirectory(base) where RunCgroupName.isStale(name) {
            let dir = base + "/" + name
            kill(dir)
            if (try? CgroupFS.removeDirectory(dir)) != nil { removed.append(dir) }
        }
        return removed
    }
}

/// dgrun's temporary move into a leaf of its own cgroup, so that the cgroup can enable controllers
/// for the run (see V2Driver.create). `end` restores the cgroup as it was found.
final class Takeover {
    let base: String
    let leaf: String
    let enabled: [String]
    private var ended = false

    private init(base: String, leaf: String, enabled: [String]) {
        self.base = base
        self.leaf = leaf
        self.enabled = enabled
    }

    /// `companions`: dgrun's own children in its cgroup (the sandbox init, cloned before the run's
    /// cgroups are made), moved into the leaf with dgrun, where they would have been had they
    /// been cloned after it.
    static func begin(base: String, controllers: [String], companions: [Int32]) throws(SystemError) -> Takeover {
        let pid = getpid()
        let all = CgroupFS.pids(in: base)
        let moving = all.filter { companions.contains($0) }
        let members = all.filter { !companions.contains($0) }
        let available = ((try? FileIO.read(base + "/cgroup.controllers")) ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" })
        let unavailable = controllers.filter { !available.contains(Substring($0)) }
        guard unavailable.isEmpty else {
            throw SystemError("use controllers \(unavailable.joined(separator: ", ")) below", path: base, errno: ENOTSUP,
                              hint: "its parent does not delegate them (cgroup.controllers); run dgrun under a scope that has them, e.g. systemd-run --scope -p Delegate=yes dgrun ..., or pass --limits best-effort")
        }
        guard members == [pid] else {
            throw SystemError("use controllers \(controllers.joined(separator: ", ")) below", path: base, errno: EBUSY,
                              hint: "cgroup v2 enables them for children only in a cgroup without processes, and \(members.count - 1) other process(es) share dgrun's; start dgrun alone in a delegated cgroup (systemd-run [--user] --scope -p Delegate=yes dgrun exec ...) or pass --limits best-effort")
        }
        let leaf = base + "/" + RunCgroupName.make()
        try CgroupFS.makeDirectory(leaf, hint: "dgrun moves itself here to free its cgroup for the run")
        let takeover = Takeover(base: base, leaf: leaf, enabled: controllers)
        do throws(SystemError) {
            try FileIO.write(leaf + "/cgroup.procs", "0", hint: "dgrun could not move itself into its own leaf cgroup")
            for companion in moving {
                try FileIO.write(leaf + "/cgroup.procs", String(companion), hint: "dgrun could not move its sandbox's init into its own leaf cgroup")
            }
            try FileIO.write(base + "/cgroup.subtree_control", controllers.map { "+" + $0 }.joined(separator: " "),
                             hint: "the cgroup does not let dgrun enable controllers for its children")
        } catch {
            try? takeover.end()
            throw error
        }
        return takeover
    }

    /// Disables what was enabled, moves dgrun back, removes the leaf.
    func end() throws(SystemError) {
        guard !ended else { return }
        ended = true
        _ = try? FileIO.write(base + "/cgroup.subtree_control", enabled.map { "-" + $0 }.joined(separator: " "))
        if CgroupFS.pids(in: leaf).contains(getpid()) {
            try FileIO.write(base + "/cgroup.procs", "0", hint: "dgrun could not move itself back")
        }
        try CgroupFS.removeDirectory(leaf)
    }

    deinit { try? end() }
}
