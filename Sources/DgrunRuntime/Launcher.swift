import CDgrunSpawn
import DgrunCgroups
import DgrunProvision
import DgrunSeccomp
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Runs one provisioned sandbox: marshal the plan → clone → maps → go → wait → what it used.
/// The linear chain of nsjail, with the child side in C (CDgrunSpawn). The cgroup, the limits and
/// the monitor are the provisioner's; the launcher only reads them.
public struct Launcher: Sendable {
    /// Called with a line for stderr (the OOM and timeout notices).
    public var warn: @Sendable (String) -> Void

    public init(warn: @escaping @Sendable (String) -> Void) {
        self.warn = warn
    }

    /// `control`: >= 0, a pipe the caller writes signal numbers (int32) to, forwarded into the
    /// sandbox; dgrun's own signals are then the caller's to read (a workspace run, where several
    /// sandboxes wait at once). -1: this call reads the forwarded signals itself.
    public func run(_ sandbox: ProvisionedSandbox, control: Int32 = -1) throws(DgrunError) -> RunOutcome {
        let started = Clock.monotonic()
        let spec = sandbox.spec

        // 1. The flat plan the C child reads.
        let arena = CStringArena()
        // --userns auto: the bound directories, idmapped here (only the host's root may), so that
        // the caller's files are root's inside and what the task writes is the caller's outside.
        let trees = try Self.idmappedTrees(spec)
        defer { for fd in trees where fd >= 0 { close(fd) } }
        var mounts: [dgrun_mount] = []
        // tmpfs first: a working directory below /tmp is bound on top of the fresh /tmp. The kernel
        // paths come last (the child applies them after every other mount).
        for target in spec.tmpfs {
            mounts.append(dgrun_mount(kind: Int32(DGRUN_MOUNT_TMPFS.rawValue), readonly: 0, source: nil, target: arena.string(target), tree_fd: -1))
        }
        for (index, bind) in spec.binds.enumerated() {
            mounts.append(dgrun_mount(kind: Int32(DGRUN_MOUNT_BIND.rawValue), readonly: bind.readonly ? 1 : 0,
                                      source: arena.string(bind.source), target: arena.string(bind.target),
                                      tree_fd: trees.isEmpty ? -1 : trees[index]))
        }
        for path in spec.readonlyPaths {
            mounts.append(dgrun_mount(kind: Int32(DGRUN_MOUNT_READONLY.rawValue), readonly: 1, source: nil, target: arena.string(path), tree_fd: -1))
        }
        for path in spec.maskedPaths {
            mounts.append(dgrun_mount(kind: Int32(DGRUN_MOUNT_MASK.rawValue), readonly: 1, source: nil, target: arena.string(path), tree_fd: -1))
        }
        var flags = DGRUN_NS_USER | DGRUN_NS_MNT | DGRUN_NS_PID | DGRUN_NS_IPC | DGRUN_NS_UTS | DGRUN_NS_CGROUP
        if spec.network == .none { flags |= DGRUN_NS_NET }
        let bpf = spec.seccompProgram.flatMap { arena.buffer($0) }
        // dgrun raised its own descriptor limit (OpenFileLimit): the command gets the one dgrun was given.
        // (The no-cgroup fallback's rlimits follow with the resources.)
        var rlimits: [dgrun_rlimit] = []
        if let given = OpenFileLimit.original {
            rlimits.append(dgrun_rlimit(resource: DGRUN_RLIMIT_NOFILE, soft: given.soft, hard: given.hard))
        }
        var plan = dgrun_plan()
        plan.argv = arena.array(spec.argv)
        plan.envp = arena.array(spec.environment)
        plan.search_path = arena.string(spec.searchPath)
        plan.cwd = arena.string(spec.workingDirectory)
        plan.hostname = arena.string(spec.hostname)
        plan.clone_flags = flags
        // The cgroups are made after the clone (step 2) and sent to the init.
        plan.cgroup_fd = -1
        plan.rootfs = arena.optionalString(spec.rootfs)
        plan.mounts = arena.buffer(mounts)
        plan.n_mounts = Int32(mounts.count)
        plan.become_root = spec.subordinateIDs == nil ? 0 : 1
        plan.setup_proc = 1
        plan.setup_dev = 1
        plan.loopback_up = spec.network == .none ? 1 : 0
        plan.new_session = spec.newSession ? 1 : 0
        plan.stdout_to_stderr = spec.stdoutToStderr ? 1 : 0
        plan.bpf = bpf.map { UnsafeRawPointer($0) }
        plan.bpf_len = UInt16((spec.seccompProgram?.count ?? 0) / 8)
        plan.guard_bpf = spec.userNamespaceGuard.flatMap { arena.buffer($0) }.map { UnsafeRawPointer($0) }
        plan.guard_bpf_len = UInt16((spec.userNamespaceGuard?.count ?? 0) / 8)
        plan.keep_caps = spec.keepCapabilities
        plan.last_cap = Int32(ProcessInfo.lastCapability)
        plan.rlimits = arena.buffer(rlimits)
        plan.n_rlimits = Int32(rlimits.count)
        plan.trace_socket = -1
        plan.trace_ring_fd = -1
        plan.linger_ms = Int32(min(spec.lingerSeconds, 3600) * 1000)
        // The log (and the fast path's ring in it) exists before the command: the ring is mapped by it.
        var log = dgrun_trace_log()
        defer { dgrun_trace_log_free(&log) }
        var ringFD: Int32 = -1
        var preloaded: String?
        if spec.trace, let library = FastTrace.library(for: spec) {
            let fd = dgrun_fasttrace_ring(&log)
            if fd >= 0 {  // else no fast path: every call traps, as without the library
                ringFD = fd
                preloaded = library
                plan.envp = arena.array(FastTrace.environment(spec.environment, library: library, ring: fd))
                plan.trace_ring_fd = fd
            }
        }
        defer { if ringFD >= 0 { close(ringFD) } }
        // discover: the command sends the tracer's listener over this pair before it execs.
        var traceSockets: [Int32] = [-1, -1]
        if spec.trace {
            guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &traceSockets) == 0 else {
                throw DgrunError.launch("cannot create the tracer's socket pair: \(String(cString: strerror(errno)))")
            }
            do {
                let program = try TraceFilter.program(socket: traceSockets[1], fastPath: preloaded != nil)
                plan.trace_bpf = arena.buffer(program).map { UnsafeRawPointer($0) }
                plan.trace_bpf_len = UInt16(program.count / 8)
            } catch {
                throw DgrunError.launch("\(error)")
            }
            plan.trace_socket = traceSockets[1]
        }
        defer { for fd in traceSockets where fd >= 0 { close(fd) } }

        // 2. Clone, then maps, the go byte, and the run's cgroups and limits (made meanwhile).
        var child = dgrun_child()
        // dgrun ci: the task's stdout and stderr go to a log file of its own (the child dup2s it).
        var outputFD: Int32 = -1
        if let file = spec.outputFile {
            outputFD = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard outputFD >= 0 else {
                throw DgrunError.launch("cannot open the task's log \(file): \(String(cString: strerror(errno)))",
                                        cause: SystemError("open", path: file, errno: errno))
            }
        }
        defer { if outputFD >= 0 { close(outputFD) } }
        plan.output_fd = outputFD
        let rc = dgrun_spawn(&plan, &child)
        guard rc == 0 else { throw Self.cloneError(-rc) }
        if traceSockets[1] >= 0 {  // the child has its copy; EOF on ours must mean it is gone
            close(traceSockets[1])
            traceSockets[1] = -1
        }
        if ringFD >= 0 {  // the mapping stays in the log; the command has its own copy of the fd
            close(ringFD)
            ringFD = -1
        }
        defer { dgrun_close(&child) }
        do {
            try writeIDMaps(pid: child.pid, mapping: spec.userMapping, range: spec.subordinateIDs)
        } catch {
            dgrun_abort(&child)
            throw DgrunError.launch("cannot prepare the sandbox: \(error)", cause: error)
        }
        guard dgrun_release(&child) == 0 else {
            dgrun_abort(&child)
            throw DgrunError.launch("the sandbox init died before it started (see messages above)")
        }
        // The run's cgroups and limits, while the init builds the namespaces; then what can wait
        // until the command is on its way.
        do {
            try sandbox.createResources(initPID: child.pid)
            try sendResources(sandbox, to: &child)
            try sandbox.launched()
        } catch {
            dgrun_abort(&child)
            throw error
        }
        let cgroup = sandbox.cgroup

        // 3. Wait, forwarding signals; the timeout ends everything in the sandbox.
        var result = dgrun_outcome()
        let timeoutMs = spec.timeoutSeconds.map { Int64($0 * 1000) } ?? -1
        let waitRC = dgrun_wait(&child, timeoutMs, Int64(spec.killGraceSeconds * 1000), cgroup?.killFD ?? -1,
                                traceSockets[0], control, &log, &result)
        if waitRC != 0 {
            dgrun_abort(&child)
            throw DgrunError.launch("waiting for the sandbox failed: \(String(cString: strerror(-waitRC)))")
        }
        let wall = Clock.monotonic() - started
        // The init reported the sandbox empty and is still exiting: the run's cgroups can go now,
        // unless removing them changes the cgroup the init is in.
        if result.init_exiting != 0 && cgroup?.waitsForInitExit == true { dgrun_reap(&child) }
        let monitored = sandbox.stopMonitor()
        var failure = dgrun_failure()
        let failed = dgrun_read_failure(&child, &failure) == 1

        // 4. What it used, then the exit status of the contract. Every process of the sandbox is
        // dead and reaped, so the run's cgroups are empty; their removal is the caller's (after the
        // status is out).
        let stats = cgroup?.stats() ?? CgroupStats()
        var outcome = RunOutcome(
            exitCode: 0, signal: nil, oomKilled: stats.oomKills > 0, timedOut: result.timed_out != 0,
            wallSeconds: wall,
            cpuUserSeconds: Double(stats.cpuUserMicros ?? UInt64(result.user_usec)) / 1e6,
            cpuSystemSeconds: Double(stats.cpuSystemMicros ?? UInt64(result.sys_usec)) / 1e6,
            memoryPeakBytes: stats.memoryPeakBytes ?? UInt64(result.maxrss_kib) * 1024,
            pidsPeak: stats.pidsPeak, cgroupDriver: sandbox.cgroupDriver,
            limits: sandbox.applied, argv: spec.argv)
        outcome.log = spec.outputFile
        outcome.samples = monitored.samples
        outcome.adjustments = monitored.adjustments
        // Asked to stop (a signal to dgrun, not the command's own USR1): the run is interrupted.
        outcome.interruptedBy = dgrun_is_stop_signal(result.last_signal) != 0 ? result.last_signal : nil
        if spec.trace {
            dgrun_fasttrace_finish(&log)  // what the ring still holds, now that every writer is gone
            // The loader opening the preloaded library is dgrun's doing, not the task's.
            let events = TraceEvent.parse(log, excluding: preloaded)
            outcome.trace = TraceResult(events: events, notifications: log.notifications, lost: log.lost,
                                        supervisorSeconds: Double(log.busy_us) / 1e6, untrapped: log.fast)
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
        let status = WaitStatus(result.have_command_status != 0 ? result.command_status : result.init_status)
        outcome.signal = status.signal
        outcome.exitCode = result.timed_out != 0 ? 124 : status.shellStatus
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

    /// The run's cgroup-v2 directory, its v1 `tasks` files and the fallback's rlimits, to the init.
    /// An init that is gone already (its setup failed) is not an error here: its report says why.
    func sendResources(_ sandbox: ProvisionedSandbox, to child: inout dgrun_child) throws(DgrunError) {
        let cgroup = sandbox.cgroup
        let joinFDs: [Int32]
        do { joinFDs = try cgroup?.openJoinFiles() ?? [] } catch {
            throw DgrunError.launch("cannot prepare the run's cgroup: \(error)", cause: error)
        }
        defer { for fd in joinFDs { close(fd) } }
        guard joinFDs.count <= Int(DGRUN_MAX_SENT_TASK_FDS), sandbox.rlimits.count <= Int(DGRUN_MAX_SENT_RLIMITS) else {
            throw DgrunError.launch("the run has more cgroup files (\(joinFDs.count)) or rlimits (\(sandbox.rlimits.count)) than the sandbox takes")
        }
        let rc = joinFDs.withUnsafeBufferPointer { fds in
            sandbox.rlimits.withUnsafeBufferPointer { limits in
                dgrun_send_resources(&child, cgroup?.cloneFD ?? -1, fds.baseAddress, Int32(fds.count),
                                     limits.baseAddress, Int32(limits.count))
            }
        }
        guard rc == 0 || rc == -EPIPE || rc == -ECONNRESET else {
            throw DgrunError.launch("cannot hand the run's cgroups to the sandbox: \(String(cString: strerror(-rc)))")
        }
    }

    /// Maps the caller to root (or itself) inside. Without CAP_SETGID (an ordinary user, or root
    /// inside another sandbox) the kernel requires setgroups to be denied first.
    func writeIDMaps(pid: Int32, mapping: SandboxSpec.UserMapping, range: SubordinateIDs?) throws(SystemError) {
        if let range {  // --userns auto, as root: the sandbox's 0... are the range
            try FileIO.write("/proc/\(pid)/uid_map", "0 \(range.uid) \(range.count)\n")
            try FileIO.write("/proc/\(pid)/gid_map", "0 \(range.gid) \(range.count)\n")
            return
        }
        let uid = getuid(), gid = getgid()
        let inside = mapping == .root ? (uid: UInt32(0), gid: UInt32(0)) : (uid: uid, gid: gid)
        let caps = Capabilities.effectiveMask()
        if uid != 0 || caps & Capabilities.setgidBit == 0 {
            try FileIO.write("/proc/\(pid)/setgroups", "deny")
        }
        // Since Linux 5.12, mapping uid 0 needs CAP_SETFCAP in the parent namespace.
        let hint = inside.uid == 0 && caps & Capabilities.setfcapBit == 0
            ? "inside another sandbox, mapping root needs CAP_SETFCAP there (dgrun exec --cap-add CAP_SETFCAP)" : nil
        try FileIO.write("/proc/\(pid)/uid_map", "\(inside.uid) \(uid) 1\n", hint: hint)
        try FileIO.write("/proc/\(pid)/gid_map", "\(inside.gid) \(gid) 1\n")
    }

    /// One detached, idmapped tree per bind (the caller's ids shown as the range's first, the
    /// sandbox's root), or none without --userns auto.
    static func idmappedTrees(_ spec: SandboxSpec) throws(DgrunError) -> [Int32] {
        guard let range = spec.subordinateIDs, !spec.binds.isEmpty else { return [] }
        let userns = dgrun_idmap_userns(range.callerUID, range.uid, range.callerGID, range.gid, 1)
        guard userns >= 0 else {
            throw DgrunError.launch("--userns auto: cannot make the idmapping for the bound directories: \(String(cString: strerror(-userns)))",
                                    cause: SystemError("clone(CLONE_NEWUSER)", errno: -userns))
        }
        defer { close(userns) }
        var trees: [Int32] = []
        for bind in spec.binds {
            var stage: Int32 = 0
            let fd = dgrun_idmapped_tree(bind.source, userns, bind.readonly ? 1 : 0, &stage)
            if fd < 0 {
                for tree in trees { close(tree) }
                let operation = stage == 0 ? "open_tree" : "mount_setattr(MOUNT_ATTR_IDMAP)"
                let hint = stage == 1 && -fd == EINVAL
                    ? "; its filesystem cannot be idmapped on this kernel (tmpfs needs Linux 6.3, overlayfs 5.19): move it, or run without --userns auto" : ""
                throw DgrunError.launch("--userns auto: cannot idmap \(bind.source): \(operation): \(String(cString: strerror(-fd)))\(hint)",
                                        cause: SystemError(operation, path: bind.source, errno: -fd))
            }
            trees.append(fd)
        }
        return trees
    }

    static func cloneError(_ err: Int32) -> DgrunError {
        let name = String(cString: strerror(err))
        switch err {
        case EPERM, EACCES:
            return DgrunError.launch("cannot create the sandbox namespaces: \(name); unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces, or an AppArmor restriction)")
        case ENOSPC, EUSERS:
            return DgrunError.launch("cannot create the sandbox namespaces: \(name); the per-user namespace limit is reached (/proc/sys/user/max_*_namespaces)")
        case ENOSYS where ProcessInfo.underSeccompFilter:
            return DgrunError.launch("cannot create the sandbox: clone3 is denied by the seccomp filter dgrun itself runs under (inside another sandbox, whose profile denies new user namespaces): run the outer sandbox with --profile nested")
        case ENOSYS:
            return DgrunError.launch("cannot create the sandbox: clone3 is not available (Linux 5.7 or later is needed)")
        default:
            return DgrunError.launch("cannot create the sandbox: clone3: \(name) (errno \(err))")
        }
    }

    static func setupHint(_ failure: dgrun_failure) -> String {
        switch (Int(failure.stage), failure.err) {
        case (Int(DGRUN_STAGE_CLONE_BIND.rawValue), ENOENT): return "; the path to bind does not exist on the host"
        case (Int(DGRUN_STAGE_ATTACH_BIND.rawValue), EROFS), (Int(DGRUN_STAGE_ATTACH_BIND.rawValue), ENOENT):
            return "; the mount point does not exist in the sandbox root and cannot be created there"
        case (Int(DGRUN_STAGE_CHDIR.rawValue), _): return "; pass --cwd with a directory that exists in the sandbox"
        case (Int(DGRUN_STAGE_CLONE_ROOT.rawValue), _): return "; check the --rootfs directory"
        case (Int(DGRUN_STAGE_MOUNT_PROC.rawValue), EPERM):
            return "; inside another sandbox, a new /proc needs the outer one's /proc whole (no masked or read-only paths): run the outer sandbox with --profile nested"
        case (Int(DGRUN_STAGE_TRACE.rawValue), EBUSY):
            return "; another seccomp notify supervisor already watches this process (dgrun discover inside dgrun discover?): the kernel allows one"
        default: return ""
        }
    }
}
