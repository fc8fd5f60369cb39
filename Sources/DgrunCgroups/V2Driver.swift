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

    public func create(limits: ResourceLimits) throws(SystemError) -> any CgroupRun {
        let enabled = ((try? FileIO.read(base + "/cgroup.subtree_control")) ?? "")
            .split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        let missing = Self.controllers(for: limits).filter { !enabled.contains($0) }
        if !missing.isEmpty {
            throw SystemError("use controllers \(missing.joined(separator: ", ")) below", path: base, errno: ENOTSUP,
                              hint: "they are not enabled in its cgroup.subtree_control; run dgrun in a cgroup that delegates them (systemd-run --user --scope -p Delegate=yes) or pass --limits best-effort")
        }
        let dir = base + "/" + RunCgroupName.make()
        try CgroupFS.makeDirectory(dir, hint: "dgrun creates one cgroup per run below its own cgroup")
        let run = V2Run(directory: dir)
        do throws(SystemError) {
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

    init(directory: String) { self.directory = directory }

    func open() throws(SystemError) {
        cloneFD = try valueOrErrno("open cgroup", path: directory) {
            Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        }
        killFD = Glibc.open(directory + "/cgroup.kill", O_WRONLY | O_CLOEXEC)  // absent before 5.14
    }

    func openJoinFiles() throws(SystemError) -> [Int32] { [] }  // clone3(CLONE_INTO_CGROUP) places it

    func stats() -> CgroupStats {
        var stats = CgroupStats()
        stats.memoryPeakBytes = CgroupFS.readNumber(directory + "/memory.peak")
        stats.oomKills = Int(CgroupFS.keyedFile(directory + "/memory.events")["oom_kill"] ?? 0)
        let cpu = CgroupFS.keyedFile(directory + "/cpu.stat")
        stats.cpuUserMicros = cpu["user_usec"]
        stats.cpuSystemMicros = cpu["system_usec"]
        stats.pidsPeak = CgroupFS.readNumber(directory + "/pids.peak").map(Int.init)
        return stats
    }

    func killAll() {
        if killFD >= 0 { _ = write(killFD, "1", 1) } else { Self.kill(directory) }
    }

    static func kill(_ directory: String) {
        if (try? FileIO.write(directory + "/cgroup.kill", "1")) == nil {
            CgroupFS.killProcesses(in: directory)
        }
    }

    func remove() throws(SystemError) {
        closeFDs()
        try CgroupFS.removeDirectory(directory)
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
