import DgrunCache
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

extension Engine {
    /// Everything the planner needs for one task, read from its store and the request; writes nothing.
    public struct Prepared: Sendable {
        public var input: PlanInput
        public var spec: SandboxSpec
        public var request: RunRequest
        /// The task's recorded graph before this run (the store's version number), nil when none.
        public var graphVersion: Int64?
        /// Whether the store holds packed file checks (a store from before them gets them at the next no-op).
        public var hasFileChecks: Bool
        /// Whether `input.lastRun` is the whole record, not the check's summary (`withAllDependencies` reads it).
        public var hasWholeLastRun = false
    }

    /// task.toml under the request, the network the last run needed when nothing chose one, the
    /// spec, and the plan's input.
    public func prepare(_ task: TaskFile, request: RunRequest, store: Store, workspace: Workspace?,
                        producers: [String: String]) throws(DgrunError) -> Prepared {
        var merged = request.applying(task)
        // The workspace is shown read-only, so that a task reads what its siblings produce (even
        // under /tmp, which is private in the sandbox).
        if let root = workspace?.root, !merged.binds.contains(where: { $0.source == root }) {
            merged.binds.append(RunRequest.Bind(source: root, readonly: true))
        }
        // dgrun's own state is never the task's to change: its store, lock and graph.json are
        // read-only inside, so a task can neither forge its history nor plant a link there.
        let stateDirectory = StateLocation.directory(for: task, stateOption: request.stateDirectory)
        if FileIO.isRealDirectory(stateDirectory) { merged.binds.append(RunRequest.Bind(source: stateDirectory, readonly: true)) }
        merged.trace = true
        // Files first, from the packed checks (one read, one stat a file): when none moved, only
        // the other dependencies are read as rows. `dependencies(ofAll:)` reads the rest on demand.
        var packed = false
        let verified = try store.withFileChecks(task: task.directory) { checks -> Int? in
            packed = checks != nil
            return checks.flatMap(Planner(environment: HostEnvironment()).filesUnchanged)
        }
        let dependencies = verified == nil ? try store.dependencies(task: task.directory)
                                           : try store.nonPathDependencies(task: task.directory)
        if merged.network == nil {
            // Neither task.toml nor a flag chose it: what the last run needed (none → none), else
            // the host's, so that the trace sees what the task reaches.
            merged.network = dependencies.contains { $0.relation == .uses && $0.ref == "network:none" } ? SandboxProfile.Network.none : .host
        }
        let spec = try provisioner.sandboxSpec(for: merged)
        let state = try store.task(id: task.directory)
        var input = PlanInput(taskID: task.directory, dependencies: dependencies,
                              lastRun: try store.lastFinishedRunSummary(task: task.directory), staleReason: state?.staleReason,
                              argv: task.argv,
                              environmentDigest: StateCapture.environmentDigest(task: task, requestKeys: request.environmentKeys,
                                                                                 environment: spec.environment),
                              producers: producers, missingControllers: provisioner.missingControllers(spec),
                              requestedCPUs: spec.limits.cpus, force: request.force)
        input.hasRecordedGraph = state?.graphVersion != nil
        input.verifiedFiles = verified
        return Prepared(input: input, spec: spec, request: merged, graphVersion: state?.graphVersion, hasFileChecks: packed)
    }

    /// The whole recorded dependency list and last run, for what follows a decision to run (the
    /// cache key, the capture): the check read only the dependencies that are not files and the
    /// last run's summary.
    /// `rows`: false after a decision to run that is forced: the cache, the one reader of the rows
    /// from there on, is not consulted (a pipeline's 8,000 were ~8 ms to read for nothing).
    func withAllDependencies(_ prepared: Prepared, store: Store, task: TaskFile, rows: Bool = true) throws(DgrunError) -> Prepared {
        var prepared = prepared
        if !prepared.hasWholeLastRun {
            prepared.input.lastRun = try store.lastFinishedRun(task: task.directory)
            prepared.hasWholeLastRun = true
        }
        guard rows, prepared.input.verifiedFiles != nil else { return prepared }
        prepared.input.dependencies = try store.dependencies(task: task.directory)
        prepared.input.verifiedFiles = nil
        return prepared
    }

    /// One task: lock → plan → (skip | block | provision, run traced, capture) → result.
    public func runTask(_ task: TaskFile, request: RunRequest, workspace: Workspace?, producers: [String: String],
                        control: Int32 = -1) -> TaskResult {
        let name = task.name
        let store: Store
        let lock: FileLock
        var prepared: Prepared
        do throws(DgrunError) {
            // Opened to read when it exists: a no-op check writes nothing, the first write reopens it.
            if let existing = try StateLocation.existing(for: task, stateOption: request.stateDirectory) {
                store = existing
            } else {
                store = try StateLocation.open(for: task, stateOption: request.stateDirectory)
            }
            lock = try FileLock.task(task.directory, in: store, waiting: { sink(.waitingForLock(task: name)) })
        } catch {
            return .failed(error)
        }
        defer { lock.release() }
        do throws(DgrunError) {
            try store.registerTask(id: task.directory, directory: task.directory)
            let abandoned = try store.settleAbandonedRuns(task: task.directory) { pid, start in
                DgrunSystem.ProcessInfo.startTime(of: pid).map { start == nil || $0 == start } ?? false
            }
            if abandoned > 0 { sink(.abandonedRuns(task: name, count: abandoned)) }
            prepared = try prepare(task, request: request, store: store, workspace: workspace, producers: producers)
        } catch {
            return .failed(error)
        }
        let capture = StateCapture(store: store, task: task, stateOption: request.stateDirectory)

        // Provisioning first: [fetch] files in place (the planner then sees whether they changed).
        var fetchBlockers: [Blocker] = []
        for fetch in task.fetches {
            switch Fetcher().provision(fetch, in: task.directory) {
            case .ready(let note): sink(.fetched(task: name, path: fetch.path, url: fetch.url, note: note))
            case .failed(let why, let remedy): fetchBlockers.append(Blocker(ref: fetch.url, why: why, remedy: remedy))
            }
        }
        // A fetch may have replaced a file after the fast path found it unchanged: check them all.
        if !task.fetches.isEmpty {
            do throws(DgrunError) { prepared = try withAllDependencies(prepared, store: store, task: task) } catch { return .failed(error) }
        }
        var plan = Planner(environment: HostEnvironment()).plan(prepared.input)
        if !fetchBlockers.isEmpty {
            plan.blockers = fetchBlockers + plan.blockers
            plan.decision = .blocked
            plan.reasons = plan.blockers.map(\.description)
        }
        plan = waitForServices(plan, task: task, input: prepared.input)
        switch plan.decision {
        case .upToDate:
            let events = recordUpToDate(plan, prepared: prepared, store: store, task: task, request: request)
            for event in events { sink(event) }
            return .upToDate(checked: plan.checked, hashed: plan.hashed)
        case .blocked:
            if request.reportRecords { sink(.recorded(task: name, TaskRecordSummary(graphVersion: prepared.graphVersion))) }
            sink(.blocked(task: name, blockers: plan.blockers))
            capture.recordBlocked(capture.newRecord(reasons: plan.reasons, environmentDigest: prepared.input.environmentDigest))
            return .blocked(plan.blockers)
        case .run:
            // The run is hashed after (its record, its graph's versions) and often before (the
            // cache's action key): libcrypto loads beside the steps up to the launch.
            ContentHash.loadAhead()
        }
        do throws(DgrunError) { prepared = try withAllDependencies(prepared, store: store, task: task, rows: !request.force) } catch { return .failed(error) }
        let cacheContext = self.cacheContext(task, request: request, environmentDigest: prepared.input.environmentDigest)
        if let restored = restoreFromCache(task, context: cacheContext, prepared: prepared, plan: plan, store: store,
                                           capture: capture, workspace: workspace) {
            return restored
        }
        sink(.running(task: name, reasons: plan.reasons))

        let record = capture.newRecord(reasons: plan.reasons, environmentDigest: prepared.input.environmentDigest)
        var runID: Int64
        do throws(DgrunError) { runID = try capture.begin(record) } catch { return .failed(error) }
        var spec = prepared.spec
        if let logs = request.logDirectory {
            // One log per task, fresh for this run; every --retry-oom attempt is appended to it.
            spec.outputFile = logs + "/" + Self.logName(of: task)
            unlink(spec.outputFile!)
        }
        if prepared.request.tune, spec.limits.memoryBytes != nil || spec.limits.cpus != nil {
            spec.tuning = TuningFromHistory.plan(limits: spec.limits, store: store, task: task.directory)
        }
        let outcome: RunOutcome
        do throws(DgrunError) {
            outcome = try launchRetryingOOM(spec, retries: prepared.request.retryOOM, task: name, control: control) { killed in
                runID = capture.recordRetriedAttempt(killed, record: record, id: runID)
            }
        } catch {
            capture.recordFailure(error, record: record, id: runID)
            return .failed(error)
        }
        let graph = graphOf(outcome, spec: spec, task: task)
        let recorded = capture.recordFinished(outcome, graph: graph, spec: spec, record: record, id: runID,
                                              previous: prepared.input.lastRun, cache: cacheContext)
        if let warning = recorded.warning { sink(.warning(warning)) }
        if let workspace { capture.markReadersStale(of: recorded.changed, in: workspace, runID: runID) }
        if request.reportRecords {
            let check = graph.map { DeclarationCheck(task: task, graph: $0) }
            sink(.recorded(task: name, TaskRecordSummary(graphVersion: (try? store.task(id: task.directory))??.graphVersion,
                                                         undeclaredInputs: check?.undeclaredInputs ?? [],
                                                         undeclaredOutputs: check?.undeclaredOutputs ?? [],
                                                         actionKey: outcome.exitCode == 0 ? recorded.actionKey : nil)))
        }
        sink(.finished(task: name, outcome: outcome))
        return .ran(outcome, runID: runID)
    }

    /// The up-to-date branch's writes (the new stats of files whose content hashed the same, the
    /// packed checks of a store from before them) and the events that report it.
    func recordUpToDate(_ plan: Plan, prepared: Prepared, store: Store, task: TaskFile, request: RunRequest) -> [EngineEvent] {
        try? store.refreshFingerprints(task: task.directory, plan.refreshed)
        if !prepared.hasFileChecks && plan.refreshed.isEmpty && prepared.input.hasRecordedGraph {
            try? store.rebuildFileChecks(task: task.directory)
        }
        var events: [EngineEvent] = []
        if request.reportRecords {
            events.append(.recorded(task: task.name, TaskRecordSummary(graphVersion: prepared.graphVersion,
                                                                       actionKey: prepared.input.lastRun?.actionKey)))
        }
        events.append(.upToDate(task: task.name, checked: plan.checked, hashed: plan.hashed))
        return events
    }

    /// A workspace task's no-op check made before its producers' results are in (the scheduler's
    /// speculation): `runTask`'s lock, reads, plan and up-to-date writes, which hold whatever the
    /// producers then do (a new stat of a file that hashed the same is true either way), with its
    /// events kept for when the scheduler accepts the result. nil, and the task goes the usual way
    /// after its producers, whenever that way could do more than find it up to date: no store yet,
    /// its lock held by another dgrun (the usual way waits and says so), a first registration,
    /// runs to settle, fetches, a service to wait for, or any decision but up to date.
    func speculate(_ task: TaskFile, request: RunRequest, workspace: Workspace, producers: [String: String]) -> Speculation? {
        guard task.fetches.isEmpty,
              let store = try? StateLocation.existing(for: task, stateOption: request.stateDirectory),
              let lock = FileLock.attemptTask(task.directory, in: store) else { return nil }
        defer { lock.release() }
        do throws(DgrunError) {
            guard try store.task(id: task.directory)?.directory == task.directory,
                  try !store.hasRunningRuns(task: task.directory) else { return nil }
            let prepared = try prepare(task, request: request, store: store, workspace: workspace, producers: producers)
            let plan = Planner(environment: HostEnvironment()).plan(prepared.input)
            guard plan.decision == .upToDate else { return nil }
            let events = recordUpToDate(plan, prepared: prepared, store: store, task: task, request: request)
            let sink = self.sink
            return Speculation(result: .upToDate(checked: plan.checked, hashed: plan.hashed)) {
                for event in events { sink(event) }
            }
        } catch {
            return nil
        }
    }

    /// The file name of a task's log in RunRequest.logDirectory: its name, made safe for a path.
    public static func logName(of task: TaskFile) -> String {
        String(task.name.map { $0 == "/" || $0 == "\0" ? "_" : $0 }) + ".log"
    }

    /// [services] wait: when only services block, check again until they answer or the bound passes.
    func waitForServices(_ plan: Plan, task: TaskFile, input: PlanInput) -> Plan {
        guard plan.decision == .blocked, let bound = task.serviceWaitSeconds, bound > 0,
              plan.blockers.allSatisfy({ $0.ref.hasPrefix("tcp://") || $0.ref.hasPrefix("unix:") || $0.ref.hasPrefix("dns:") })
        else { return plan }
        sink(.waitingForServices(task: task.name, seconds: bound, refs: plan.blockers.map(\.ref)))
        let deadline = Clock.now() + bound
        let host = HostEnvironment(connectTimeoutMilliseconds: 250)
        // Only the missing services are probed while waiting (a task's thousands of files are
        // not stat'ed four times a second); then one whole plan decides, files included.
        var missing = plan.blockers.map(\.ref)
        while !missing.isEmpty, Clock.now() < deadline {
            usleep(250_000)
            missing = missing.filter { host.unreachable($0) != nil }
        }
        return Planner(environment: host).plan(input)
    }
}
