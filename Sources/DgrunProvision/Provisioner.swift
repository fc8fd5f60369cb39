import CDgrunSpawn
import DgrunCgroups
import DgrunMonitor
import DgrunSeccomp
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The limits a run got, as the report shows them.
public struct AppliedLimits: Sendable, Encodable, Equatable {
    public var memoryBytes: UInt64?
    public var memoryHighBytes: UInt64?
    /// v1: the tuned soft limit at the start (v1 has no memory.high).
    public var memorySoftBytes: UInt64?
    public var cpus: Double?
    public var pids: Int?
    /// "cgroup", "rlimit" (best effort, rootless) or "none".
    public var enforcedBy: String

    public init(memoryBytes: UInt64? = nil, memoryHighBytes: UInt64? = nil, cpus: Double? = nil, pids: Int? = nil,
                enforcedBy: String) {
        self.memoryBytes = memoryBytes
        self.memoryHighBytes = memoryHighBytes
        self.cpus = cpus
        self.pids = pids
        self.enforcedBy = enforcedBy
    }

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

/// A sandbox ready to launch: its spec, then (`createResources`, which the launcher calls after the
/// clone, while the init builds the namespaces) its cgroup with the limits in place or the rlimit
/// fallback, and the monitor, which starts watching once the sandbox is on its way (`launched`).
/// The caller releases it when the run is over.
public final class ProvisionedSandbox: @unchecked Sendable {
    public let spec: SandboxSpec
    public private(set) var cgroup: (any CgroupRun)?
    public private(set) var applied = AppliedLimits(enforcedBy: "none")
    public private(set) var rlimits: [dgrun_rlimit] = []
    /// `v2`, `v1`, `hybrid` or `none`.
    public private(set) var cgroupDriver = "none"
    private var monitor: Monitor?
    /// Whose stale cgroups (of dgruns that died) to remove once the sandbox is on its way.
    private var sweep: (any CgroupDriver)?
    private let provisioner: Provisioner
    private let warn: @Sendable (String) -> Void
    private var stopped: (samples: [UsageSample], adjustments: [LimitAdjustment])?
    private var created = false
    private var released = false

    init(spec: SandboxSpec, provisioner: Provisioner, warn: @escaping @Sendable (String) -> Void) {
        self.spec = spec
        self.provisioner = provisioner
        self.warn = warn
    }

    /// The run's cgroup with its limits (or the rlimit fallback) and the tuned starting limits, once.
    /// After the clone and before the command exists: a sandboxed /bin/true spent ~0.4 ms of its
    /// start detecting the host's cgroups and making the run's before it could clone; made now,
    /// that overlaps the init's namespaces and mounts on the other CPU.
    /// `initPID`: the sandbox's init, which goes where dgrun goes if dgrun must leave its cgroup.
    public func createResources(initPID: Int32) throws(DgrunError) {
        guard !created else { return }
        created = true
        let made = try provisioner.createResources(spec, initPID: initPID)
        cgroup = made.cgroup
        applied = made.applied
        rlimits = made.rlimits
        cgroupDriver = made.cgroup == nil ? "none" : (made.driver?.name ?? "none")
        monitor = made.monitor
        sweep = made.driver
    }

    /// What need not happen before the sandbox exists: called by the launcher once the sandbox has
    /// its resources, while its init builds the namespaces and dgrun would only wait. The
    /// monitor's thread starts (its first sample is 10 ms away anyway) and the stale cgroups of
    /// dgruns that died are removed: ~150 µs that every start spent before its clone.
    public func launched() throws(DgrunError) {
        if let sweep { sweep.removeStale() }
        do { try monitor?.start() } catch {
            throw DgrunError.launch("cannot start the run's monitor: \(error)", cause: error)
        }
    }

    /// Stops the monitor (once) and gives its series and the limit changes it made.
    public func stopMonitor() -> (samples: [UsageSample], adjustments: [LimitAdjustment]) {
        if let stopped { return stopped }
        let result = monitor?.stop() ?? ([], [])
        stopped = result
        return result
    }

    /// Stops the monitor, kills and removes the run's cgroups. Idempotent.
    public func release() {
        _ = stopMonitor()
        guard !released else { return }
        released = true
        if let cgroup {
            do { try cgroup.remove() } catch { warn("dgrun: warning: \(error)") }
        }
    }

    deinit { release() }
}

/// The provisioning stage: turns a request into a sandbox spec (profile, defaults, binds, the
/// environment, the seccomp program), then creates what the run needs before its first
/// instruction: the cgroup and its limits (or the rlimit fallback), the tuned starting limits, and
/// the monitor.
public struct Provisioner: Sendable {
    /// dgrun's own executable, to find the bundled profiles.
    public var executable: String
    /// The cgroup driver; nil when none is usable.
    public var driver: (any CgroupDriver)? { cgroups.detected.driver }
    /// Why `driver` is nil, for the error when limits were asked for.
    public var driverUnavailableReason: String { cgroups.detected.reason }
    public var warn: @Sendable (String) -> Void
    private let cgroups: CgroupDetection

    public init(executable: String, driver: (any CgroupDriver)?, driverUnavailableReason: String = "",
                warn: @escaping @Sendable (String) -> Void) {
        self.init(executable: executable, cgroups: CgroupDetection(driver: driver, reason: driverUnavailableReason), warn: warn)
    }

    private init(executable: String, cgroups: CgroupDetection, warn: @escaping @Sendable (String) -> Void) {
        self.executable = executable
        self.cgroups = cgroups
        self.warn = warn
    }

    /// For this host: the cgroup driver is detected (statfs, mountinfo, dgrun's own cgroups) the
    /// first time it is asked for, so that a no-op check, which launches nothing, skips it.
    public static func forHost(warn: @escaping @Sendable (String) -> Void) -> Provisioner {
        Provisioner(executable: FileIO.realPath("/proc/self/exe") ?? CommandLine.arguments[0], cgroups: CgroupDetection(), warn: warn)
    }

    /// A sandbox will be launched: the host's cgroups are detected meanwhile, on another thread.
    public func detectCgroupsAhead() { cgroups.detectAhead() }

    // MARK: - the spec

    /// The profile a request names (default: "default").
    public func profile(for request: RunRequest) throws(DgrunError) -> SandboxProfile {
        try ProfileLocator.load(request.profile ?? "default", executable: executable)
    }

    /// Request (flags and task.toml merged) → spec, with the profile and built-in defaults under it.
    public func sandboxSpec(for request: RunRequest, tuning: SandboxSpec.TuningPlan? = nil) throws(DgrunError) -> SandboxSpec {
        let profile = try profile(for: request)
        let limits = try request.limits.validated(hostCPUs: DgrunSystem.ProcessInfo.cpuCount)

        var environment = Self.inheritedEnvironment()
        if request.clearEnvironment || profile.clearEnv {
            let keep = Set(["PATH", "HOME", "TERM", "LANG", "LC_ALL"] + profile.keepEnv)
            environment = environment.filter { keep.contains(String($0.prefix(while: { $0 != "=" }))) }
        }
        for assignment in request.environment {
            let key = try RunRequest.key(of: assignment)
            environment.removeAll { $0.hasPrefix(key + "=") }
            environment.append(assignment)
        }

        var spec = SandboxSpec(argv: request.command, environment: environment, workingDirectory: "/")
        spec.hostname = request.hostname ?? "dgrun"
        spec.network = request.network ?? profile.network
        spec.limits = limits
        spec.limitMode = request.limitMode
        // The monitor samples every run with a cgroup; it moves limits only with tuning on.
        spec.tuning = tuning ?? SandboxSpec.TuningPlan(tune: request.tune)
        spec.userMapping = request.user
        if request.userNamespace == .auto {
            guard getuid() == 0 else {
                throw DgrunError("--userns auto maps the sandbox to a subordinate id range, which only root may do; run as root, or without it (an unprivileged caller's sandbox already runs as that caller)")
            }
            guard request.user == .root else {
                throw DgrunError("--userns auto and --user current do not go together: under auto the task is root of its own range")
            }
            spec.subordinateIDs = SubordinateIDs.forCaller()
        }
        spec.newSession = request.newSession || profile.newSession
        spec.timeoutSeconds = request.timeoutSeconds
        spec.killGraceSeconds = request.stopGraceSeconds
        spec.keepCapabilities = try Capabilities.mask(profile.capabilities + request.capabilities)
        spec.stdoutToStderr = request.stdoutToStderr
        spec.trace = request.trace
        spec.lingerSeconds = request.lingerSeconds

        if let rootfs = request.rootfs {
            guard let root = FileIO.realPath(rootfs), FileIO.isDirectory(root) else {
                throw DgrunError("--rootfs \(rootfs) is not a directory (build one with rootfs-scripts/build-busybox-rootfs.sh)")
            }
            spec.rootfs = root
            spec.workingDirectory = request.workingDirectory ?? "/"
        } else {
            let dir = request.workingDirectory ?? FileIO.currentDirectory()
            guard let real = FileIO.realPath(dir), FileIO.isDirectory(real) else {
                throw DgrunError("--cwd \(dir) is not a directory")
            }
            spec.workingDirectory = real
            // The working directory is the one writable place by default; never the whole root.
            if real != "/" { spec.binds.append(.init(source: real, target: real, readonly: false)) }
        }
        let profileBinds = profile.readonly.map { RunRequest.Bind(source: $0, readonly: true) }
            + profile.writable.map { RunRequest.Bind(source: $0, readonly: false) }
        for bind in profileBinds + request.binds { spec.binds.append(try Self.resolve(bind)) }
        // Parents before children: a read-only workspace must not cover the writable task inside it.
        // Each depth counted once, not in every comparison (a workspace sorts a spec's binds per task).
        spec.binds = spec.binds.enumerated().map { (depth: $0.element.target.split(separator: "/").count, offset: $0.offset, bind: $0.element) }
            .sorted { ($0.depth, $0.offset) < ($1.depth, $1.offset) }.map(\.bind)
        spec.tmpfs = ["/tmp"] + (profile.tmpfs + request.tmpfs).map { FileSystem.absolute($0) }
        spec.readonlyPaths = profile.readonlyPaths
        spec.maskedPaths = profile.maskedPaths

        let seccompChoice = request.seccomp ?? profile.seccompPath
        if let seccompChoice, seccompChoice != "unconfined" {
            spec.seccompProgram = try SeccompCache.program(path: seccompChoice)
        }
        // Stacked on whatever seccomp profile the run has (or none); only --seccomp unconfined,
        // which asks for no filter at all, goes without it.
        if profile.userNamespaces == .deny && seccompChoice != "unconfined" {
            spec.userNamespaceGuard = try SeccompCache.userNamespaceGuard()
        }
        return spec
    }

    static func resolve(_ bind: RunRequest.Bind) throws(DgrunError) -> SandboxSpec.Bind {
        guard let source = FileIO.realPath(bind.source) else {
            throw DgrunError("\(bind.readonly ? "--ro" : "--rw") \(bind.source): the host path does not exist")
        }
        return .init(source: source, target: bind.target.map(FileSystem.absolute) ?? source, readonly: bind.readonly)
    }

    static func inheritedEnvironment() -> [String] {
        var result: [String] = []
        var p = environ
        while let entry = p.pointee {
            result.append(String(cString: entry))
            p += 1
        }
        return result
    }

    /// Controllers that the limits need but this host cannot give, for the planner's blockers.
    public func missingControllers(_ spec: SandboxSpec) -> [String] {
        guard spec.limitMode == .enforce, !spec.limits.isEmpty else { return [] }
        return driver == nil ? ["memory/pids/cpu (\(driverUnavailableReason))"] : []
    }

    // MARK: - the run's resources

    /// The sandbox for `spec`, whose resources the launcher has made after the clone
    /// (`ProvisionedSandbox.createResources`).
    public func provision(_ spec: SandboxSpec) -> ProvisionedSandbox {
        ProvisionedSandbox(spec: spec, provisioner: self, warn: warn)
    }

    struct Resources {
        var cgroup: (any CgroupRun)?
        var applied: AppliedLimits
        var rlimits: [dgrun_rlimit]
        var monitor: Monitor?
        var driver: (any CgroupDriver)?
    }

    /// Creates the run's cgroup with the limits in place (or the rlimit fallback), applies the
    /// tuned starting limits and makes the monitor: everything before the command's first instruction.
    func createResources(_ spec: SandboxSpec, initPID: Int32) throws(DgrunError) -> Resources {
        var cgroup: (any CgroupRun)?
        var applied = AppliedLimits(enforcedBy: "none")
        var rlimits: [dgrun_rlimit] = []
        let driver = self.driver
        if let driver {
            do {
                cgroup = try driver.create(limits: spec.limits, companions: [initPID])
            } catch {
                throw DgrunError.launch("cannot create the run's cgroup: \(error)", cause: error)
            }
            applied = Self.applied(spec.limits, enforcedBy: spec.limits.isEmpty ? "none" : "cgroup")
        } else if !spec.limits.isEmpty {
            guard spec.limitMode == .bestEffort else {
                throw DgrunError.launch("cannot enforce --memory/--cpus/--pids: \(driverUnavailableReason); run as root, in a delegated cgroup, or pass --limits best-effort")
            }
            rlimits = bestEffortRlimits(spec.limits)
            applied = Self.applied(spec.limits, enforcedBy: "rlimit")
            applied.cpus = nil
        }
        var monitor: Monitor?
        if let cgroup, let tuning = spec.tuning {
            do {
                monitor = try prepareMonitor(cgroup, tuning: tuning, limits: spec.limits, applied: &applied)
            } catch {
                try? cgroup.remove()
                throw DgrunError.launch("cannot set the run's starting limits: \(error)", cause: error)
            }
        }
        return Resources(cgroup: cgroup, applied: applied, rlimits: rlimits, monitor: monitor, driver: driver)
    }

    /// Applies the starting points of the tuned limits and makes the monitor (started by `launched`).
    func prepareMonitor(_ cgroup: any CgroupRun, tuning: SandboxSpec.TuningPlan, limits: ResourceLimits,
                      applied: inout AppliedLimits) throws(SystemError) -> Monitor {
        let knobs = cgroup.liveKnobs
        var tuned = TunedLimits()
        let memoryKnob: CgroupKnob = knobs.contains(.memoryHigh) ? .memoryHigh : .memorySoft
        var effective = limits.memoryBytes
        if let ceiling = limits.memoryBytes, knobs.contains(memoryKnob) {
            // The soft limit (memory.high on v2, the soft limit on v1) starts from history; the
            // hard limit stays at the ceiling, where the kernel OOM-kills.
            let start = min(tuning.memorySchedule.start ?? tuning.memoryStart ?? ceiling, ceiling)
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
                              schedule: tuned.memory == nil ? UsageSchedule() : tuning.memorySchedule)
        return monitor
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

    static func applied(_ limits: ResourceLimits, enforcedBy: String) -> AppliedLimits {
        AppliedLimits(memoryBytes: limits.memoryBytes, memoryHighBytes: nil, cpus: limits.cpus, pids: limits.pids,
                      enforcedBy: enforcedBy)
    }
}

/// The host's cgroup driver, given or detected once on first use (for every copy of the provisioner).
final class CgroupDetection: Sendable {
    struct Detected: Sendable {
        var driver: (any CgroupDriver)?
        var reason: String
    }
    private let state: Locked<Detected?>

    init() { state = Locked(nil) }
    init(driver: (any CgroupDriver)?, reason: String) { state = Locked(Detected(driver: driver, reason: reason)) }

    /// Starts the detection on a thread of its own, for a caller that knows a sandbox comes: the
    /// launch asks for it right after the clone, on the path to the init's go, and the reads of
    /// /proc/self/cgroup and /proc/self/mountinfo are done by then on the other CPU. An ask before
    /// the thread is done waits for it (the lock); a thread that cannot start leaves the work to
    /// the first ask.
    func detectAhead() {
        guard state.withLock({ $0 == nil }) else { return }
        try? Threads.detach { [self] in _ = self.detected }
    }

    var detected: Detected {
        state.withLock { state in
            if let state { return state }
            let found = CgroupDrivers.detect()
            let detected = Detected(driver: found.driver, reason: found.reason)
            state = detected
            return detected
        }
    }
}
