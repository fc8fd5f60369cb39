import DgrunCgroups
import DgrunGraph
import DgrunPlanner
import DgrunProvision
import DgrunRuntime
import DgrunSpec
import DgrunStore
import DgrunSystem
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Exit status of `exec TASKDIR` when the planner blocks the run: something the task needs is
/// missing or unavailable, and nothing was started. Chosen outside the range tools commonly use
/// (1-2, 124-127, 128+N) so that CI can tell it from the task's own failure.
let blockedExitStatus: Int32 = 122

/// `dgrun exec TASKDIR`: plan against the recorded graph, then skip, block, or run traced and record.
struct TaskExecution {
    /// The flags with task.toml applied under them.
    var exec: Exec
    var task: TaskFile
    var store: Store
    var force: Bool
    /// The workspace the task belongs to, shown read-only so that it can read what its siblings
    /// produce (even under /tmp, which is private in the sandbox).
    var workspace: Workspace?

    init(base: Exec, task: TaskFile, store: Store, force: Bool, workspace: Workspace? = nil) {
        exec = Discover.applying(task, to: base)
        if let root = workspace?.root, !exec.readonlyPaths.contains(root) { exec.readonlyPaths.append(root) }
        self.task = task
        self.store = store
        self.force = force
        self.workspace = workspace
    }

    var taskID: String { task.directory }
    var label: String { task.name }

    /// Opens the task's store: --state DIR, else $DGRUN_STATE_DIR, else TASKDIR/.dgrun.
    static func openStore(for task: TaskFile, stateOption: String?) throws(StoreError) -> Store {
        try Store(directory: stateDirectory(for: task, stateOption: stateOption))
    }

    static func stateDirectory(for task: TaskFile, stateOption: String?) -> String {
        if let stateOption { return Exec.absolute(stateOption) }
        if let env = getenv("DGRUN_STATE_DIR"), env.pointee != 0 { return Exec.absolute(String(cString: env)) }
        return task.directory + "/.dgrun"
    }

    /// The environment the task is defined by: what task.toml and --env set, and PATH/locale.
    /// The rest of the caller's environment (SHLVL, OLDPWD...) would make every shell look new.
    func environmentDigest(_ spec: [String]) -> String {
        let keys = Set(task.env.map(\.key) + exec.env.map { String($0.prefix { $0 != "=" }) } + ["PATH", "LANG", "LC_ALL"])
        let relevant = spec.filter { keys.contains(String($0.prefix { $0 != "=" })) }.sorted()
        return ContentHash.version(ofBytes: Array(relevant.joined(separator: "\0").utf8)) ?? relevant.joined(separator: "\0")
    }

    func run(producers: [String: String] = [:]) -> Int32 {
        let lock: FileLock
        do { lock = try FileLock.acquire(store.directory + "/task-" + FileLock.name(for: taskID) + ".lock",
                                          waiting: { CLI.write(2, "dgrun: \(label): waiting for another dgrun running this task\n") }) }
        catch { return exec.finish(failure: error.message, exitCode: 125) }
        defer { lock.release() }

        let prepared: Prepared
        do {
            try store.registerTask(id: taskID, directory: task.directory)
            let abandoned = try store.settleAbandonedRuns(task: taskID) { pid, start in
                DgrunSystem.ProcessInfo.startTime(of: pid).map { start == nil || $0 == start } ?? false
            }
            if abandoned > 0 { CLI.write(2, "dgrun: \(label): \(abandoned) earlier run(s) were interrupted (dgrun was killed); recorded as abandoned\n") }
            prepared = try prepare(producers: producers)
        } catch let error as StoreError {
            return exec.finish(failure: error.message, exitCode: 125)
        } catch {
            return exec.finish(error)
        }
        let (inputs, spec, runExec) = (prepared.input, prepared.spec, prepared.exec)
        // Provisioning first: [fetch] files in place (the planner then sees whether they changed).
        var fetchBlockers: [Blocker] = []
        for fetch in task.fetches {
            switch Fetcher().provision(fetch, in: task.directory) {
            case .ready(let note): CLI.write(2, "dgrun: \(label): \(fetch.path) ← \(fetch.url): \(note)\n")
            case .failed(let why, let remedy): fetchBlockers.append(Blocker(ref: fetch.url, why: why, remedy: remedy))
            }
        }
        var plan = Planner(environment: HostEnvironment()).plan(inputs)
        if !fetchBlockers.isEmpty {
            plan.blockers = fetchBlockers + plan.blockers
            plan.decision = .blocked
            plan.reasons = plan.blockers.map(\.description)
        }
        plan = waitForServices(plan, inputs: inputs)
        switch plan.decision {
        case .upToDate:
            try? store.refreshFingerprints(task: taskID, plan.refreshed)
            CLI.write(2, "dgrun: \(label): up to date (\(plan.checked) dependencies checked, \(plan.hashed) hashed)\n")
            return 0
        case .blocked:
            CLI.write(2, "dgrun: \(label): blocked; nothing was started:\n" + plan.blockers.map { "  - \($0.description)\n" }.joined())
            var record = newRecord(reasons: plan.reasons, environment: spec.environment)
            record.finishedAt = Clock.now()
            try? store.recordBlocked(record)
            return exec.finish(failure: "\(label): blocked by \(plan.blockers.count) missing or unavailable dependencies", exitCode: blockedExitStatus, quiet: true)
        case .run:
            CLI.write(2, "dgrun: \(label): running: " + plan.reasons.prefix(3).joined(separator: "; ")
                      + (plan.reasons.count > 3 ? "; and \(plan.reasons.count - 3) more" : "") + "\n")
        }
        return runAndRecord(exec: runExec, spec: spec, reasons: plan.reasons, previous: inputs.lastRun)
    }

    /// [services] wait: when only services block, check again until they answer or the bound passes.
    func waitForServices(_ plan: Plan, inputs: PlanInput) -> Plan {
        guard plan.decision == .blocked, let wait = task.serviceWait, let bound = try? DurationText.parse(wait), bound > 0,
              plan.blockers.allSatisfy({ $0.ref.hasPrefix("tcp://") || $0.ref.hasPrefix("unix:") || $0.ref.hasPrefix("dns:") })
        else { return plan }
        CLI.write(2, "dgrun: \(label): waiting up to \(wait) for " + plan.blockers.map(\.ref).joined(separator: ", ") + "\n")
        let deadline = Clock.now() + bound
        let host = HostEnvironment(connectTimeoutMilliseconds: 250)
        // Only the missing services are probed while waiting (a task's thousands of files are
        // not stat'ed four times a second); then one whole plan decides, files included.
        var missing = plan.blockers.map(\.ref)
        while !missing.isEmpty, Clock.now() < deadline {
            usleep(250_000)
            missing = missing.filter { host.unreachable($0) != nil }
        }
        return Planner(environment: host).plan(inputs)
    }

    struct Prepared {
        var input: PlanInput
        var spec: SandboxSpec
        /// The flags the run will use (the network chosen from history when nothing chose it).
        var exec: Exec
    }

    /// Everything the planner needs, read from the store and the sandbox spec; writes nothing.
    func prepare(producers: [String: String]) throws -> Prepared {
        var runExec = exec
        let dependencies = try store.dependencies(task: taskID)
        // Neither task.toml nor a flag chose the network: what the last run needed (none → none).
        if exec.net == nil, dependencies.contains(where: { $0.relation == .uses && $0.ref == "network:none" }) {
            runExec.net = SandboxProfile.Network.none
        }
        let spec = try runExec.makeSpec()
        let state = try store.task(id: taskID)
        var input = PlanInput(taskID: taskID, dependencies: dependencies,
                              lastRun: try store.lastFinishedRun(task: taskID), staleReason: state?.staleReason,
                              argv: task.argv, environmentDigest: environmentDigest(spec.environment),
                              producers: producers, missingControllers: missingControllers(spec),
                              requestedCPUs: spec.limits.cpus, force: force)
        input.hasRecordedGraph = state?.graphVersion != nil
        return Prepared(input: input, spec: spec, exec: runExec)
    }

    func newRecord(reasons: [String], environment: [String]) -> RunRecord {
        RunRecord(taskID: taskID, status: .running, startedAt: Clock.now(), pid: getpid(), argv: task.argv,
                  environmentDigest: environmentDigest(environment), reasons: reasons)
    }

    func missingControllers(_ spec: SandboxSpec) -> [String] {
        guard spec.limitMode == .enforce, spec.limits.memoryBytes != nil || spec.limits.pids != nil || spec.limits.cpus != nil else { return [] }
        let detected = CgroupDrivers.detect()
        return detected.driver == nil ? ["memory/pids/cpu (\(detected.reason))"] : []
    }

    func runAndRecord(exec: Exec, spec: SandboxSpec, reasons: [String], previous: RunRecord?) -> Int32 {
        var record = newRecord(reasons: reasons, environment: spec.environment)
        var runID: Int64
        do { runID = try store.beginRun(record, pidStartTime: DgrunSystem.ProcessInfo.startTime(of: getpid())) } catch {
            return exec.finish(failure: error.message, exitCode: 125)
        }
        var exec = exec
        if exec.tune, let limits = try? exec.makeLimits(), limits.memoryBytes != nil || limits.cpus != nil {
            exec.tuningPlan = TuningFromHistory.plan(limits: limits, store: store, task: taskID)
        }
        let traced = Discover.traced(exec: exec, task: task) { killed in
            // An OOM-killed attempt that --retry-oom runs again: kept in the history as it was.
            var attempt = record
            attempt.fill(from: killed, finishedAt: Clock.now())
            attempt.reasons.append("OOM-killed; run again with more memory (--retry-oom)")
            try? store.finishRun(attempt, id: runID, graphJSON: nil, dependencies: nil)
            try? store.addSamples(Sample.from(killed.samples, run: runID))
            if let next = try? store.beginRun(record, pidStartTime: DgrunSystem.ProcessInfo.startTime(of: getpid())) { runID = next }
        }
        let outcome: RunOutcome
        switch traced {
        case .failure(let code, let message):
            record.status = .finished
            record.exitCode = code
            record.finishedAt = Clock.now()
            record.reasons.append("dgrun failed: \(message)")
            try? store.finishRun(record, id: runID, graphJSON: nil, dependencies: nil)
            return exec.finish(failure: message, exitCode: code)
        case .success(let result):
            outcome = result.outcome
            let finished = Clock.now()
            record.fill(from: outcome, finishedAt: finished)
            var dependencies: [Dependency]? = nil
            var graphJSON: String? = nil
            if let graph = result.graph {
                let recorded = GraphRecording(graph: graph, now: finished, isPrivate: Self.privatePaths(of: spec))
                dependencies = recorded.dependencies
                record.outputs = recorded.outputs
                graphJSON = try? GraphRenderer.render(graph, as: .json)
                Discover.save(graph, in: task)
            }
            do {
                try store.finishRun(record, id: runID, graphJSON: graphJSON, dependencies: dependencies)
                try store.addSamples(Sample.from(outcome.samples, run: runID))
            } catch {
                CLI.write(2, "dgrun: \(label): the run finished but could not be recorded: \(error)\n")
            }
            let changed = record.outputs.filter { previous?.outputs[$0.key] != $0.value }.map(\.key)
            if !changed.isEmpty, outcome.exitCode == 0 {
                workspace?.markDependantsStale(of: task, changedOutputs: changed, runID: runID, stateOption: exec.state)
            }
        }
        if let message = outcome.error { CLI.write(2, "dgrun: \(message)\n") }
        if !exec.writeReport(outcome) { return 125 }
        return outcome.exitCode
    }

    /// Whether a path lived in one of the sandbox's own tmpfs mounts (its /tmp): gone with it, and
    /// no dependency of the next run, unless a bind mount showed a host directory there.
    static func privatePaths(of spec: SandboxSpec) -> (String) -> Bool {
        let tmpfs = spec.tmpfs.map { $0.hasSuffix("/") ? $0 : $0 + "/" }
        let binds = spec.binds.map { $0.target.hasSuffix("/") ? $0.target : $0.target + "/" }
        return { path in
            let probe = path + "/"
            return tmpfs.contains { probe.hasPrefix($0) } && !binds.contains { probe.hasPrefix($0) }
        }
    }


    static func json<T: Encodable>(_ value: T) -> String? {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// The graph of a finished run turned into what the planner checks next time: the task's edges
/// with the versions and stat fingerprints of the files as the run left them.
struct GraphRecording {
    var dependencies: [Dependency] = []
    /// path → version of each output that exists after the run.
    var outputs: [String: String] = [:]

    init(graph: Graph, now: Double, isPrivate: (String) -> Bool) {
        let nodes = Dictionary(graph.nodes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let codeNodes = Set(graph.edges.filter { $0.from == graph.task.id && $0.relation == "executes" }.map(\.to))
        for edge in graph.edges {
            guard let node = nodes[edge.to], let relation = Dependency.Relation(rawValue: edge.relation) else { continue }
            // What the task does, and what the programs it ran require (their libraries, interpreters).
            guard edge.from == graph.task.id || (relation == .requires && codeNodes.contains(edge.from)) else { continue }
            if node.ref.hasPrefix("/") && isPrivate(node.ref) { continue }
            // A server the task runs itself is up only while it runs: nothing to check before.
            if node.kind == .service && node.ownership == "internal" { continue }
            // A temporary the task removed itself: there is nothing of it to check next time.
            if relation == .writes && node.state == "unavailable" { continue }
            let traced = node.evidence.contains { $0.hasPrefix("traced:") }
            let isFile = node.ref.hasPrefix("/")
            let version = node.version.map { String($0.prefix { $0 != " " }) }
            let fingerprint = isFile && relation != .probes ? Fingerprints.settled(node.ref, now: now) : nil
            dependencies.append(Dependency(nodeID: node.id, kind: node.kind.rawValue, ref: node.ref, relation: relation,
                                           version: version, fingerprint: fingerprint, priority: node.priority,
                                           costBytes: Int64(node.cost["bytes"] ?? 0), traced: traced))
            if relation == .writes, let version, fingerprint != nil || FileIO.exists(node.ref) {
                outputs[node.ref] = version
            }
        }
        for node in graph.nodes where node.kind == .infrastructure && node.ref.hasPrefix("network:") {
            dependencies.append(Dependency(nodeID: node.id, kind: node.kind.rawValue, ref: node.ref, relation: .uses))
        }
    }
}

/// An exclusive flock held for one task's plan-run-record, so that two dgruns running the same
/// task take turns (the second then finds it up to date) instead of racing on its outputs.
struct FileLock {
    let fd: Int32

    static func acquire(_ path: String, waiting: () -> Void) throws(StoreError) -> FileLock {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StoreError("cannot open the task lock \(path): \(String(cString: strerror(errno))); is the state directory writable?") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            waiting()
            while flock(fd, LOCK_EX) != 0 {
                guard errno == EINTR else {
                    let e = errno
                    close(fd)
                    throw StoreError("cannot lock \(path): \(String(cString: strerror(e)))")
                }
            }
        }
        return FileLock(fd: fd)
    }

    func release() { close(fd) }

    /// A short stable file name for a task id (FNV-1a, 64 bits).
    static func name(for id: String) -> String {
        ShortHash.hex(id)
    }
}
