import DgrunGraph
import DgrunMonitor
import DgrunPlanner
import DgrunProvision
import DgrunRecord
import DgrunRuntime
import DgrunSpec
import DgrunStore
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Provision, launch and release one sandbox: the step the engine repeats for every run. A
/// protocol so that the engine's policy (retries, scheduling, recording) is unit-tested with a fake.
public protocol SandboxLauncher: Sendable {
    /// `control`: the read end of a pipe carrying signals to forward, or -1 (this call reads them).
    func launch(_ spec: SandboxSpec, control: Int32) throws(DgrunError) -> RunOutcome
}

/// The real one: the launcher clones, then makes the provisioner's cgroup, limits and monitor, and waits.
public struct HostLauncher: SandboxLauncher {
    public var provisioner: Provisioner
    public var launcher: Launcher

    public func launch(_ spec: SandboxSpec, control: Int32) throws(DgrunError) -> RunOutcome {
        let sandbox = provisioner.provision(spec)
        defer { sandbox.release() }
        return try launcher.run(sandbox, control: control)
    }
}

/// The pipeline for one command, one task and one workspace: task → plan → provision → launch →
/// monitor/tune → capture → record. It prints nothing: progress goes to `sink` as events and every
/// entry point returns a typed result for the face to render.
public struct Engine: Sendable {
    public var sink: EventSink
    public var provisioner: Provisioner
    public var launcher: any SandboxLauncher

    public init(sink: @escaping EventSink, provisioner: Provisioner, launcher: any SandboxLauncher) {
        self.sink = sink
        self.provisioner = provisioner
        self.launcher = launcher
    }

    /// For this host: its cgroup driver, the real launcher, warnings as events.
    public static func forHost(sink: @escaping EventSink) -> Engine {
        let warn: @Sendable (String) -> Void = { sink(.warning($0)) }
        let provisioner = Provisioner.forHost(warn: warn)
        return Engine(sink: sink, provisioner: provisioner,
                      launcher: HostLauncher(provisioner: provisioner, launcher: Launcher(warn: warn)))
    }

    // MARK: - one sandbox, with --retry-oom

    /// Launches; after an OOM kill, again with twice the memory, up to `retries` times. Each
    /// attempt that runs again is passed to `retried`; the last outcome carries every retry in
    /// its adjustments.
    public func launchRetryingOOM(_ spec: SandboxSpec, retries: Int, task: String? = nil, control: Int32 = -1,
                                  retried: (RunOutcome) -> Void = { _ in }) throws(DgrunError) -> RunOutcome {
        var spec = spec
        var adjustments: [LimitAdjustment] = []
        var elapsed = 0.0
        while true {
            var outcome = try launcher.launch(spec, control: control)
            elapsed += outcome.wallSeconds
            if outcome.oomKilled, adjustments.count < retries, outcome.interruptedBy == nil,
               let limit = spec.limits.memoryBytes, let next = OOMRetry.nextLimit(after: limit) {
                retried(outcome)
                sink(.retryingOOM(task: task, from: limit, to: next, attempt: adjustments.count + 2, of: retries + 1))
                adjustments.append(LimitAdjustment(seconds: elapsed, knob: "memory.max", from: ByteSize.describe(limit),
                                                   to: ByteSize.describe(next), reason: "retry \(adjustments.count + 1) after an OOM kill"))
                spec.limits.memoryBytes = next
                spec.tuning?.memoryStart = nil  // the new ceiling is the start: the last one was too small
                spec.tuning?.memorySchedule = UsageSchedule()
                continue
            }
            outcome.adjustments = adjustments + outcome.adjustments
            return outcome
        }
    }

    // MARK: - exec -- CMD

    /// An ad-hoc command: history-based starting limits when it has history, recorded when worth it.
    public func runCommand(_ request: RunRequest) throws(DgrunError) -> RunOutcome {
        provisioner.detectCgroupsAhead()
        // History for tuned limits: only when there is a ceiling to tune below, and the store is
        // opened only for a command that has history (a marker file says so): a short command
        // pays nothing for it.
        let key = request.tune && (request.limits.memoryBytes != nil || request.limits.cpus != nil)
            ? AdHocHistory(argv: request.command,
                           directory: FileIO.realPath(request.workingDirectory ?? ".") ?? FileIO.currentDirectory()) : nil
        var store: Store? = nil
        var tuning: SandboxSpec.TuningPlan? = nil
        if let key, key.exists, let opened = key.open() {
            store = opened
            tuning = TuningFromHistory.plan(limits: request.limits, store: opened, task: key.id)
        }
        let spec = try provisioner.sandboxSpec(for: request, tuning: tuning)
        let record = { (attempt: RunOutcome) in
            guard let key, key.worthRecording(attempt) else { return }
            if store == nil { store = key.open() }
            if let store { key.record(attempt, argv: request.command, in: store) }
        }
        let outcome = try launchRetryingOOM(spec, retries: request.retryOOM, retried: record)
        record(outcome)
        return outcome
    }

    // MARK: - discover

    public struct Discovery: Sendable {
        public var task: TaskFile?
        public var outcome: RunOutcome
        /// nil when the tracer saw nothing (the command never started).
        public var graph: Graph?
        public var trace: TraceResult?
        /// Set when a task directory's graph could not be saved.
        public var warning: String?
    }

    /// `discover`: the command (or the task, with task.toml under the request) once, traced.
    public func discover(_ request: RunRequest, taskDirectory: String?) throws(DgrunError) -> Discovery {
        ContentHash.loadAhead()  // the graph's versions are hashed after the run
        let task = try taskDirectory.map { (dir: String) throws(DgrunError) in try TaskFile.load(directory: dir) }
        var request = task.map { request.applying($0) } ?? request
        if let task {
            // graph.json goes to TASKDIR/.dgrun after the run: made now and read-only inside, so
            // that the task cannot put a link there for dgrun to write through.
            let dir = StateLocation.ownDirectory(of: task)
            mkdir(dir, 0o755)
            if FileIO.isRealDirectory(dir) { request.binds.append(RunRequest.Bind(source: dir, readonly: true)) }
        }
        request.trace = true
        // discover sees what the task reaches: the host network unless asked otherwise.
        if request.network == nil { request.network = .host }
        let spec = try provisioner.sandboxSpec(for: request)
        let outcome = try launchRetryingOOM(spec, retries: request.retryOOM)
        var discovery = Discovery(task: task, outcome: outcome, graph: graphOf(outcome, spec: spec, task: task), trace: outcome.trace)
        if let task, let graph = discovery.graph { discovery.warning = StateCapture.save(graph, in: task) }
        return discovery
    }

    /// The graph of a traced run.
    func graphOf(_ outcome: RunOutcome, spec: SandboxSpec, task: TaskFile?) -> Graph? {
        guard let trace = outcome.trace else { return nil }
        var builder = GraphBuilder(taskDirectory: task?.directory ?? spec.workingDirectory, argv: spec.argv,
                                   environment: spec.environment, name: task?.name)
        if let task {
            // dgrun's own state is read-only inside and never a dependency of the task: what the
            // task tried there (listing it, removing it) would make every next run look stale.
            builder.ignoredDirectory = StateLocation.ownDirectory(of: task)
            builder.taskPriority = task.priority
        }
        // Nothing changed on the graph after: the builder shares its nodes, and a change would
        // copy all of them (8,000 for a pipeline over /usr/include).
        return builder.build(trace: trace, usage: ResourceUsage(
            wallSeconds: outcome.wallSeconds, cpuUserSeconds: outcome.cpuUserSeconds, cpuSystemSeconds: outcome.cpuSystemSeconds,
            memoryPeakBytes: outcome.memoryPeakBytes, pidsPeak: outcome.pidsPeak, cgroupDriver: outcome.cgroupDriver))
    }

    // MARK: - exec TASKDIR | WORKSPACE

    /// A task directory (its upstream tasks in the workspace first, unless --no-deps) or a
    /// workspace: planned once, in this process, every task with the caller's whole request.
    public func execDirectory(_ directory: String, request: RunRequest) throws(DgrunError) -> DirectoryResult {
        guard let root = FileIO.realPath(directory), FileIO.isDirectory(root) else {
            throw DgrunError("\(directory) is not a directory")
        }
        if FileIO.exists(root + "/task.toml") {
            let task = try TaskFile.load(directory: root)
            guard let workspace = try Workspace.enclosing(task, stateOption: request.stateDirectory),
                  let me = workspace.index(of: task) else {
                return .task(task, runTask(task, request: request, workspace: nil, producers: [:]), upstream: nil)
            }
            if let cycle = workspace.cycle() {
                throw DgrunError("the tasks of \(workspace.root) form a cycle: \(cycle.joined(separator: " → "))")
            }
            let upstream = workspace.ancestors(of: me)
            var upstreamResult: WorkspaceResult?
            if !request.noDependencies, !upstream.isEmpty {
                var upstreamRequest = request
                upstreamRequest.force = false  // --force is for the task asked for, not its inputs' producers
                var results = schedule(workspace, targets: upstream, request: upstreamRequest)
                results.producers[task.name] = workspace.producers(of: me).map { workspace.tasks[$0].name }
                upstreamResult = results
                if !results.results.allSatisfy({ $0.result.completed }) {
                    let because = "a task it depends on did not complete"
                    sink(.notStarted(task: task.name, because: because))
                    return .task(task, .notStarted(because), upstream: upstreamResult)
                }
            }
            let result = runTask(task, request: request, workspace: workspace, producers: workspace.producerNames(of: me))
            return .task(task, result, upstream: upstreamResult)
        }
        let workspace = try Workspace.load(root: root, stateOption: request.stateDirectory)
        guard !workspace.tasks.isEmpty else {
            throw DgrunError("\(directory) is neither a task directory (no task.toml) nor a workspace (no subdirectory has one)")
        }
        if let cycle = workspace.cycle() {
            throw DgrunError("the tasks of \(root) form a cycle: \(cycle.joined(separator: " → "))")
        }
        return .workspace(schedule(workspace, targets: Set(workspace.tasks.indices), request: request))
    }

    /// Runs `targets` of a loaded workspace through the scheduler, each task with `request`.
    func schedule(_ workspace: Workspace, targets: Set<Int>, request: RunRequest) -> WorkspaceResult {
        let needs = Self.needs(of: workspace, targets: targets, stateOption: request.stateDirectory)
        let scheduler = Scheduler(workspace: workspace, targets: targets, needs: needs, pool: ResourcePool(request.pool), sink: sink)
        let engine = self
        let check: @Sendable (Int) -> Speculation? = { index in
            let task = workspace.tasks[index]
            let speculation = engine.speculate(task, request: request, workspace: workspace,
                                               producers: workspace.producerNames(of: index))
            // Up to date: nothing of this command reads its store again. Otherwise it runs, with the store open.
            if speculation != nil { StateLocation.release(for: task, stateOption: request.stateDirectory) }
            return speculation
        }
        // --force reruns every target: nothing to find up to date ahead.
        let results = scheduler.run(speculate: request.force ? nil : check) { index, control in
            let task = workspace.tasks[index]
            defer { StateLocation.release(for: task, stateOption: request.stateDirectory) }
            return engine.runTask(task, request: request, workspace: workspace,
                                  producers: workspace.producerNames(of: index), control: control)
        }
        var producers: [String: [String]] = [:]
        for t in targets { producers[workspace.tasks[t].name] = workspace.producers(of: t).filter(targets.contains).map { workspace.tasks[$0].name } }
        return WorkspaceResult(root: workspace.root, results: targets.sorted().map { (workspace.tasks[$0], results[$0]!) },
                               producers: producers)
    }

    /// Every target's need, read from the stores on all CPUs (each a statement prepared in its own store).
    static func needs(of workspace: Workspace, targets: Set<Int>, stateOption: String?) -> [Int: TaskNeed] {
        let order = targets.sorted()
        let found = Parallel.map(order.count, workers: order.count < 16 ? 1 : DgrunSystem.ProcessInfo.cpuCount) {
            need(of: workspace.tasks[order[$0]], stateOption: stateOption)
        }
        return Dictionary(uniqueKeysWithValues: zip(order, found))
    }

    /// What a task's last run used: its peak memory, CPUs and seconds (for the pool and the order).
    static func need(of task: TaskFile, stateOption: String?) -> TaskNeed {
        var need = TaskNeed(memory: Int64(task.memoryBytes ?? 0), cpus: task.cpus ?? 1, seconds: 1)
        if let store = try? StateLocation.existing(for: task, stateOption: stateOption),
           let last = try? store.lastFinishedRunSummary(task: task.directory) {
            if let peak = last.memoryPeakBytes { need.memory = peak }
            if let wall = last.wallSeconds, wall > 0 {
                need.seconds = wall
                let used = ((last.cpuUserSeconds ?? 0) + (last.cpuSystemSeconds ?? 0)) / wall
                if task.cpus == nil { need.cpus = max(0.1, min(used, Double(DgrunSystem.ProcessInfo.cpuCount))) }
            }
        }
        return need
    }
}
