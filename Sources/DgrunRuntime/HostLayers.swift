import DgrunCgroups
import DgrunProvision
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// One layer of the sandbox, as this host can give it to a run.
public struct SandboxLayer: Sendable, Equatable {
    public enum Name: String, Sendable, CaseIterable {
        case limits, seccomp, userns, network, confine
    }
    public enum State: String, Sendable {
        /// The host gives it and the request uses it.
        case active
        /// The host can give it, but the request turned it off (--seccomp unconfined).
        case off
        /// The host cannot give it.
        case unavailable
    }
    public var name: Name
    public var state: State
    /// How it is given, or why it is not.
    public var detail: String
    /// What to do about it, when it is not available.
    public var fix: String?

    public init(name: Name, state: State, detail: String, fix: String? = nil) {
        self.name = name
        self.state = state
        self.detail = detail
        self.fix = fix
    }

    /// What each layer is, for messages.
    public static func describe(_ name: Name) -> String {
        switch name {
        case .limits: return "the run's own cgroup (limits enforced and measured)"
        case .seccomp: return "a seccomp filter"
        case .userns: return "user namespaces"
        case .network: return "a network namespace (--net none)"
        case .confine: return "confinement (Landlock)"
        }
    }
}

/// The sandbox layers this host can give, each probed on its own before anything starts, so that
/// `dgrun ci --require` fails first instead of running weaker than asked. The namespace probes are
/// real sandboxes, made by the launcher as every run is: a sysctl says what the kernel allows, not
/// what an AppArmor profile allows this binary.
public enum HostLayers {
    public static func probe(provisioner: Provisioner, seccompWanted: Bool) -> [SandboxLayer] {
        let network = namespaceProbe(network: true, executable: provisioner.executable)
        // A network namespace needs a user namespace: when both work, one probe said so.
        let userns = network == nil ? nil : namespaceProbe(network: false, executable: provisioner.executable)
        return [limits(provisioner), seccomp(wanted: seccompWanted), usernsLayer(userns), networkLayer(network, userns: userns),
                SandboxLayer(name: .confine, state: .unavailable,
                             detail: "dgrun does not implement confinement (Landlock) yet",
                             fix: "none yet: leave confine out of --require and [ci] require until dgrun has --confine")]
    }

    // MARK: - limits

    static func limits(_ provisioner: Provisioner) -> SandboxLayer {
        let fix = "run dgrun as root (sudo), or inside a delegated cgroup (systemd-run --user --scope -p Delegate=yes dgrun ...)"
        guard let driver = provisioner.driver else {
            return SandboxLayer(name: .limits, state: .unavailable,
                                detail: "no writable cgroup: \(provisioner.driverUnavailableReason); limits would fall back to rlimits and nothing is measured",
                                fix: fix)
        }
        // The driver's detection says where; creating one says whether this user may.
        do {
            let run = try driver.create(limits: ResourceLimits())
            try? run.remove()
            return SandboxLayer(name: .limits, state: .active, detail: "a cgroup per run (\(driver.name))")
        } catch {
            return SandboxLayer(name: .limits, state: .unavailable, detail: "cannot create a cgroup: \(error)", fix: fix)
        }
    }

    // MARK: - seccomp

    static func seccomp(wanted: Bool) -> SandboxLayer {
        // /proc/self/status has a Seccomp line (PR_GET_SECCOMP's mode) only on a kernel with seccomp.
        let status = FileIO.readSmall("/proc/self/status") ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("Seccomp:") }
        let mode = line.flatMap { Int(String($0.dropFirst(8)).trimmingCharacters(in: " \t")) }
        let fix = "use a kernel built with CONFIG_SECCOMP_FILTER (every distribution kernel is)"
        guard mode != nil else {
            return SandboxLayer(name: .seccomp, state: .unavailable, detail: "the kernel has no seccomp (no Seccomp line in /proc/self/status)", fix: fix)
        }
        guard FileIO.exists("/proc/sys/kernel/seccomp/actions_avail") else {
            return SandboxLayer(name: .seccomp, state: .unavailable, detail: "the kernel has no seccomp filters (/proc/sys/kernel/seccomp/actions_avail is absent)", fix: fix)
        }
        let nested = mode == 2 ? "; dgrun itself already runs under a filter (a container's), which stays under the task's" : ""
        guard wanted else {
            return SandboxLayer(name: .seccomp, state: .off, detail: "available, but the profile or --seccomp unconfined turns it off" + nested)
        }
        return SandboxLayer(name: .seccomp, state: .active, detail: "the profile's filter, loaded before exec" + nested)
    }

    // MARK: - namespaces

    /// nil when a sandbox (with a network namespace of its own when `network`) started; else why not.
    static func namespaceProbe(network: Bool, executable: String) -> String? {
        let quiet: @Sendable (String) -> Void = { _ in }
        var spec = SandboxSpec(argv: [executable, "--version"], environment: ["PATH=/usr/bin:/bin"], workingDirectory: "/")
        spec.network = network ? .none : .host
        spec.outputFile = "/dev/null"
        spec.tuning = nil
        do {
            let sandbox = Provisioner(executable: executable, driver: nil, warn: quiet).provision(spec)
            defer { sandbox.release() }
            let outcome = try Launcher(warn: quiet).run(sandbox)
            // Setup got as far as exec: every namespace was made (126/127 only say the probe
            // program could not run in there).
            return outcome.exitCode == 125 ? (outcome.error ?? "the sandbox setup failed") : nil
        } catch {
            return error.message
        }
    }

    static func sysctl(_ path: String) -> String? {
        FileIO.readSmall(path).map { $0.trimmingCharacters(in: " \n") }
    }

    /// Why the kernel may refuse user namespaces to this user, from the sysctls that say so.
    static func usernsRestriction(root: Bool = getuid() == 0, sysctl: (String) -> String? = HostLayers.sysctl) -> (detail: String, fix: String)? {
        if !root, sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1" {
            return ("AppArmor restricts unprivileged user namespaces here (kernel.apparmor_restrict_unprivileged_userns=1, as on GitHub's Ubuntu 24.04 runners)",
                    "run dgrun through sudo (root is not restricted), or install the AppArmor profile ci/apparmor/dgrun "
                    + "(sudo install -m 644 ci/apparmor/dgrun /etc/apparmor.d/dgrun && sudo apparmor_parser -r /etc/apparmor.d/dgrun; "
                    + "it names /usr/local/bin/dgrun: edit the path if dgrun is elsewhere), "
                    + "or sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
        }
        if !root, sysctl("/proc/sys/kernel/unprivileged_userns_clone") == "0" {
            return ("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0)",
                    "run dgrun through sudo, or sudo sysctl -w kernel.unprivileged_userns_clone=1")
        }
        if sysctl("/proc/sys/user/max_user_namespaces") == "0" {
            return ("user namespaces are disabled (user.max_user_namespaces=0)", "sudo sysctl -w user.max_user_namespaces=15000")
        }
        return nil
    }

    static func usernsLayer(_ failure: String?, restriction: (detail: String, fix: String)? = usernsRestriction()) -> SandboxLayer {
        guard let failure else {
            let note = restriction.map { "; \($0.detail), but this dgrun may create them" } ?? ""
            return SandboxLayer(name: .userns, state: .active, detail: "a user namespace per sandbox" + note)
        }
        if let restriction {
            return SandboxLayer(name: .userns, state: .unavailable, detail: "\(restriction.detail): \(failure)", fix: restriction.fix)
        }
        return SandboxLayer(name: .userns, state: .unavailable, detail: failure,
                            fix: "run dgrun through sudo, or allow unprivileged user namespaces on this runner")
    }

    static func networkLayer(_ failure: String?, userns: String?) -> SandboxLayer {
        guard let failure else { return SandboxLayer(name: .network, state: .active, detail: "a network namespace with loopback only for --net none") }
        if userns != nil {
            return SandboxLayer(name: .network, state: .unavailable, detail: "needs user namespaces, which are not available", fix: usernsLayer(userns).fix)
        }
        let limit = sysctl("/proc/sys/user/max_net_namespaces") == "0" ? " (user.max_net_namespaces=0)" : ""
        return SandboxLayer(name: .network, state: .unavailable, detail: failure + limit,
                            fix: limit.isEmpty ? "run dgrun through sudo" : "sudo sysctl -w user.max_net_namespaces=15000")
    }
}
