import CDgrunSpawn
import DgrunCgroups
import DgrunMonitor
import DgrunSeccomp
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Runs one sandbox: cgroup → clone → maps and placement → go → wait → stats → cleanup.
/// The linear chain of nsjail, with the child side in C (CDgrunSpawn).
public struct Launcher {
    public var driver: (any CgroupDriver)?
    /// Why `driver` is nil, for the error when limits were asked for.
    public var driverUnavailableReason: String
    /// Called with a line for stderr (warnings, the OOM notice).
    public var warn: (String) -> Void

    public init(driver: (any CgroupDriver)?, driverUnavailableReason: String = "",
                warn: @escaping (String) -> Void) {
        self.driver = driver
        self.driverUnavailableReason = driverUnavailableReason
        self.warn = warn
    }

    public func run(_ spec: SandboxSpec) throws(LaunchError) -> RunOutcome {
        let started = Clock.monotonic()

        // 1. The run's cgroup, with limits in place before the child exists.
        var cgroup: (any CgroupRun)?
        var applied = RunOutcome.AppliedLimits(enforcedBy: "none")
        var rlimits: [dgrun_rlimit] = []
        if let driver {
            driver.removeStale()
            do {
                cgroup = try driver.create(limits: spec.limits)
            } catch {
                throw LaunchError("cannot create the run's cgroup: \(error)")
            }
            applied = Self.applied(spec.limits, enforcedBy: spec.limits.isEmpty ? "none" : "cgroup")
        } else if !spec.limits.isEmpty {
            guard spec.limitMode == .bestEffort else {
                throw LaunchError("cannot enforce --memory/--cpus/--pids: \(driverUnavailableReason); run as root, in a delegated cgroup, or pass --limits best-effort")
            }
            rlimits = bestEffortRlimits(spec.limits)
            applied = Self.applied(spec.limits, enforcedBy: "rlimit")
            applied.cpus = nil
        }
        defer {
            if let cgroup {
                do { try cgroup.remove() } catch { warn("dgrun: warning: \(error)") }
            }
        }
        // The tuned limits start below the ceilings; the monitor watches from before the clone.
        var monitor: Monitor?
        if let cgroup, let tuning = spec.tuning {
            do {
                monitor = try startMonitor(cgroup, tuning: tuning, limits: spec.limits, applied: &applied)
            } catch {
                throw LaunchError("cannot set the run's starting limits: \(error)")
            }
        }
        var monitorResult: (samples: [MonitorSample], adjustments: [LimitAdjustment])?
        defer { if monitorResult == nil { _ = monitor?.stop() } }

        // 2. The flat plan the C child reads.
        let arena = CStringArena()
        let mounts = spec.binds.map {
            dgrun_mount(kind: Int32(DGRUN_MOUNT_BIND.rawValue), readonly: $0.readonly ? 1 : 0,
                        source: arena.string($0.source), target: arena.string($0.target))
        } + spec.tmpfs.map {
            dgrun_mount(kind: Int32(DGRUN_MOUNT_TMPFS.rawValue), readonly: 0, source: nil, target: arena.string($0))
        }
        // tmpfs first: a working directory below /tmp is bound on top of the fresh /tmp.
        let orderedMounts = mounts.filter { $0.kind == Int32(DGRUN_MOUNT_TMPFS.rawValue) }
            + mounts.filter { $0.kind == Int32(DGRUN_MOUNT_BIND.rawValue) }
        var flags = DGRUN_NS_USER | DGRUN_NS_MNT | DGRUN_NS_PID | DGRUN_NS_IPC | DGRUN_NS_UTS | DGRUN_NS_CGROUP
        if spec.network == .none { flags |= DGRUN_NS_NET }
        let bpf = spec.seccompProgram.flatMap { arena.buffer($0) }
        var plan = dgrun_plan()
        plan.argv = arena.array(spec.argv)
        plan.envp = arena.array(spec.environment)
        plan.search_path = arena.string(spec.searchPath)
        plan.cwd = arena.string(spec.workingDirectory)
        plan.hostname = arena.string(spec.hostname)
        plan.clone_flags = flags
        plan.cgroup_fd = cgroup?.cloneFD ?? -1
        let joinFDs: [Int32]
        do { joinFDs = try cgroup?.openJoinFiles() ?? [] } catch {
            throw LaunchError("cannot prepare the run's cgroup: \(error)")
        }
        defer { for fd in joinFDs { close(fd) } }
        plan.v1_task_fds = arena.buffer(joinFDs)
        plan.n_v1_task_fds = Int32(joinFDs.count)
        plan.rootfs = arena.optionalString(spec.rootfs)
        plan.mounts = arena.buffer(orderedMounts)
        plan.n_mounts = Int32(orderedMounts.count)
        plan.setup_proc = 1
        plan.setup_dev = 1
        plan.loopback_up = spec.network == .none ? 1 : 0
        plan.new_session = spec.newSession ? 1 : 0
        plan.bpf = bpf.map { UnsafeRawPointer($0) }
        plan.bpf_len = UInt16((spec.seccompProgram?.count ?? 0) / 8)
        plan.keep_caps = spec.keepCapabilities
        plan.last_cap = Int32(ProcessInfo.lastCapability)
        plan.rlimits = arena.buffer(rlimits)
        plan.n_rlimits = Int32(rlimits.count)
        plan.trace_socket = -1
        plan.linger_ms = Int32(min(spec.lingerSeconds, 3600) * 1000)
        // discover: the command sends the tracer's listener over this pair before it execs.
        var traceSockets: [Int32] = [-1, -1]
        if spec.trace {
            guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &traceSockets) == 0 else {
                throw LaunchError("cannot create the tracer's socket pair: \(String(cString: strerror(errno)))")
            }
            do {
                let program = try TraceFilter.program(socket: traceSockets[1])
                plan.trace_bpf = arena.buffer(program).map { UnsafeRawPointer($0) }
                plan.trace_bpf_len = UInt16(program.count / 8)
            } catch {
                throw LaunchError("\(error)")
            }
            plan.trace_socket = traceSockets[1]
        }
        defer { for fd in traceSockets where fd >= 0 { close(fd) } }

        // 3. Clone, then maps and cgroup placement, then the go byte.
        var child = dgrun_child()
        let rc = dgrun_spawn(&plan, &child)
        guard rc == 0 else { throw Self.cloneError(-rc) }
        if traceSockets[1] >= 0 {  // the child has its copy; EOF on ours must mean it is gone
            close(traceSockets[1])
            traceSockets[1] = -1
        }
        defer { dgrun_close(&child) }
        do {
            try writeIDMaps(pid: child.pid, mapping: spec.userMapping)
        } catch {
            dgrun_abort(&child)
            throw LaunchError("cannot prepare the sandbox: \(error)")
        }
        guard dgrun_release(&child) == 0 else {
            dgrun_abort(&child)
            throw LaunchError("the sandbox init died before it started (see messages above)")
        }

        // 4. Wait, forwarding signals; the timeout ends everything in the sandbox.
        var result = dgrun_outcome()
        let timeoutMs = spec.timeoutSeconds.map { Int64($0 * 1000) } ?? -1
        var log = dgrun_trace_log()
        defer { dgrun_trace_log_free(&log) }
        let waitRC = dgrun_wait(&child, timeoutMs, Int64(spec.killGraceSeconds * 1000), cgroup?.killFD ?? -1,
                                traceSockets[0], &log, &result)
        if waitRC != 0 {
            dgrun_abort(&child)
            throw LaunchError("waiting for the sandbox failed: \(String(cString: strerror(-waitRC)))")
        }
        let wall = Clock.monotonic() - started
        monitorResult = monitor?.stop()
        var failure = dgrun_failure()
        let failed = dgrun_read_failure(&child, &failure) == 1

        // 5. What it used, then the exit status of the contract. The pid namespace died with its
        // init, so the cgroups are empty; remove() still kills anything that keeps one busy.
        let stats = cgroup?.stats() ?? CgroupStats()
        var outcome = RunOutcome(
            exitCode: 0, signal: nil, oomKilled: stats.oomKills > 0, timedOut: result.timed_out != 0,
            wallSeconds: wall,
            cpuUserSeconds: Double(stats.cpuUserMicros ?? UInt64(result.user_usec)) / 1e6,
            cpuSystemSeconds: Double(stats.cpuSystemMicros ?? UInt64(result.sys_usec)) / 1e6,
            memoryPeakBytes: stats.memoryPeakBytes ?? UInt64(result.maxrss_kib) * 1024,
            pidsPeak: stats.pidsPeak, cgroupDriver: cgroup == nil ? "none" : (driver?.name ?? "none"),
            limits: applied, argv: spec.argv)
        if let monitorResult {
            outcome.samples = monitorResult.samples
            outcome.adjustments = monitorResult.adjustments.map {
                RunOutcome.Adjustment(tSeconds: $0.seconds, knob: $0.knob, from: $0.from, to: $0.to, reason: $0.reason)
            }
        }
        if spec.trace {
            outcome.trace = TraceResult(events: TraceEvent.parse(log), notifications: log.notifications, lost: log.lost,
                                        supervisorSeconds: Double(log.busy_us) / 1e6)
        }
        if failed {
            let detail = withUnsafeBytes(of: failure.detail) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            let stage = String(cString: dgrun_stage_name(failure.stage))
            let err = SystemError(stage, path: detail.isEmpty ? nil : detail, errno: failure.err)
            if failure.stage == Int32(DGRUN_STAGE_EXEC.rawValue) {
                outcome.exitCode = failure.err == ENOENT ? 127 : 126
                let privateTmp = detail.hasPrefix("/tmp/") && spec.tmpfs.contains("/tmp")
                    ? "; the sandbox has its own empty /tmp: bind the file in with --ro \(detail)" : ""
                outcome.error = failure.err == ENOENT
                    ? "\(detail): command not found in the sandbox (PATH=\(spec.searchPath))\(privateTmp)"
                    : "cannot execute \(detail): \(err.errnoName)"
            } else {
                outcome.exitCode = 125
                outcome.error = "sandbox setup failed: \(err)" + Self.setupHint(failure)
            }
            return outcome
        }
        let status = result.have_command_status != 0 ? result.command_status : result.init_status
        if result.timed_out != 0 {
            outcome.exitCode = 124
            if Self.signaled(status) { outcome.signal = Self.termSignal(status) }
        } else if Self.signaled(status) {
            outcome.signal = Self.termSignal(status)
            outcome.exitCode = 128 + Self.termSignal(status)
        } else {
            outcome.exitCode = (status >> 8) & 0xff
        }
        if outcome.oomKilled, let limit = spec.limits.memoryBytes {
            let peak = ByteSize.describe(outcome.memoryPeakBytes ?? 0)
            if outcome.signal == SIGKILL {
                warn("killed: out of memory (limit \(ByteSize.describe(limit)), peak \(peak))")
            } else {
                warn("dgrun: a process in the sandbox was killed: out of memory (limit \(ByteSize.describe(limit)), peak \(peak))")
            }
        }
        if outcome.timedOut, let timeout = spec.timeoutSeconds {
            warn("dgrun: timed out after \(timeout)s: the sandbox was stopped")
        }
        return outcome
    }

    // MARK: - steps

    /// Applies the starting points of the tuned limits and starts the monitor.
    func startMonitor(_ cgroup: any CgroupRun, tuning: SandboxSpec.TuningPlan, limits: ResourceLimits,
                      applied: inout RunOutcome.AppliedLimits) throws(SystemError) -> Monitor {
        let knobs = cgroup.liveKnobs
        var tuned = TunedLimits()
        let memoryKnob: CgroupKnob = knobs.contains(.memoryHigh) ? .memoryHigh : .memorySoft
        var effective = limits.memoryBytes
        if let ceiling = limits.memoryBytes, knobs.contains(memoryKnob) {
            // The soft limit (memory.high on v2, the soft limit on v1) starts from history; the
            // hard limit stays at the ceiling, where the kernel OOM-kills.
            let start = min(tuning.memorySchedule.first ?? tuning.memoryStart ?? ceiling, ceiling)
            if start < ceiling {
                try cgroup.set(memoryKnob, to: start)
                if memoryKnob == .memoryHigh { applied.memoryHighBytes = start } else { applied.memorySoftBytes = start }
            }
            tuned.memory = start
            effective = start
        }
        var cpuCeiling: UInt64?
        if let cpus = limits.cpus, knobs.contains(.cpuQuota) {
            let ceiling = UInt64(ResourceLimits.cfsQuota(cpus: cpus))
            let start = min(tuning.cpuQuotaStart ?? ceiling, ceiling)
            if start < ceiling { try cgroup.set(.cpuQuota, to: start) }
            tuned.cpuQuota = start
            cpuCeiling = ceiling
        }
        let bounds = TunerBounds(memoryCeiling: limits.memoryBytes, cpuCeilingQuota: cpuCeiling, memoryAvailable: nil,
                                 idleCPUs: nil, memoryKnob: memoryKnob)
        let monitor = Monitor(cgroup: cgroup, limits: tuned, bounds: bounds, tune: tuning.tune, effectiveLimit: effective,
                              schedule: tuned.memory == nil ? [] : tuning.memorySchedule.map { min($0, limits.memoryBytes ?? $0) },
                              scheduleStep: SandboxSpec.TuningPlan.scheduleStep)
        try monitor.start()
        return monitor
    }

    /// Maps the caller to root (or itself) inside. Without CAP_SETGID (an ordinary user, or root
    /// inside another sandbox) the kernel requires setgroups to be denied first.
    func writeIDMaps(pid: Int32, mapping: SandboxSpec.UserMapping) throws(SystemError) {
        let uid = getuid(), gid = getgid()
        let inside = mapping == .root ? (uid: UInt32(0), gid: UInt32(0)) : (uid: uid, gid: gid)
        let caps = Capabilities.effective(["CAP_SETGID", "CAP_SETFCAP"])
        if uid != 0 || !caps.contains("CAP_SETGID") {
            try FileIO.write("/proc/\(pid)/setgroups", "deny")
        }
        // Since Linux 5.12, mapping uid 0 needs CAP_SETFCAP in the parent namespace.
        let hint = inside.uid == 0 && !caps.contains("CAP_SETFCAP")
            ? "inside another sandbox, mapping root needs CAP_SETFCAP there (dgrun exec --cap-add CAP_SETFCAP)" : nil
        try FileIO.write("/proc/\(pid)/uid_map", "\(inside.uid) \(uid) 1\n", hint: hint)
        try FileIO.write("/proc/\(pid)/gid_map", "\(inside.gid) \(gid) 1\n")
    }

    func bestEffortRlimits(_ limits: ResourceLimits) -> [dgrun_rlimit] {
        var result: [dgrun_rlimit] = []
        var notes: [String] = []
        if let memory = limits.memoryBytes {
            result.append(dgrun_rlimit(resource: DGRUN_RLIMIT_AS, soft: memory, hard: memory))
            notes.append("memory as an address-space limit (RLIMIT_AS), which counts reserved as well as used memory")
        }
        if let pids = limits.pids {
            result.append(dgrun_rlimit(resource: DGRUN_RLIMIT_NPROC, soft: UInt64(pids), hard: UInt64(pids)))
            notes.append("pids as RLIMIT_NPROC")
        }
        if limits.cpus != nil { notes.append("--cpus is NOT enforced") }
        warn("dgrun: limits are best effort (\(driverUnavailableReason)): " + notes.joined(separator: "; "))
        return result
    }

    static func applied(_ limits: ResourceLimits, enforcedBy: String) -> RunOutcome.AppliedLimits {
        RunOutcome.AppliedLimits(
            memoryBytes: limits.memoryBytes,
            memoryHighBytes: nil,
            cpus: limits.cpus, pids: limits.pids, enforcedBy: enforcedBy)
    }

    static func cloneError(_ err: Int32) -> LaunchError {
        let name = String(cString: strerror(err))
        switch err {
        case EPERM, EACCES:
            return LaunchError("cannot create the sandbox namespaces: \(name); unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces, or an AppArmor restriction)")
        case ENOSPC, EUSERS:
            return LaunchError("cannot create the sandbox namespaces: \(name); the per-user namespace limit is reached (/proc/sys/user/max_*_namespaces)")
        case ENOSYS:
            return LaunchError("cannot create the sandbox: clone3 is not available (Linux 5.7 or later is needed)")
        default:
            return LaunchError("cannot create the sandbox: clone3: \(name) (errno \(err))")
        }
    }

    static func setupHint(_ failure: dgrun_failure) -> String {
        switch (Int(failure.stage), failure.err) {
        case (Int(DGRUN_STAGE_CLONE_BIND.rawValue), ENOENT): return "; the path to bind does not exist on the host"
        case (Int(DGRUN_STAGE_ATTACH_BIND.rawValue), EROFS), (Int(DGRUN_STAGE_ATTACH_BIND.rawValue), ENOENT):
            return "; the mount point does not exist in the sandbox root and cannot be created there"
        case (Int(DGRUN_STAGE_CHDIR.rawValue), _): return "; pass --cwd with a directory that exists in the sandbox"
        case (Int(DGRUN_STAGE_CLONE_ROOT.rawValue), _): return "; check the --rootfs directory"
        case (Int(DGRUN_STAGE_TRACE.rawValue), EBUSY):
            return "; another seccomp notify supervisor already watches this process (dgrun discover inside dgrun discover?): the kernel allows one"
        default: return ""
        }
    }

    static func signaled(_ status: Int32) -> Bool { (status & 0x7f) != 0 && (status & 0x7f) != 0x7f }
    static func termSignal(_ status: Int32) -> Int32 { status & 0x7f }
}
