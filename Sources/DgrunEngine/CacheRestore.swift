import DgrunCache
import DgrunPlanner
import DgrunRecord
import DgrunSpec
import DgrunStore
import DgrunSystem

extension Engine {
    /// The task key of a task under a request (see ActionKey) and the cache it uses (nil: off).
    public func cacheContext(_ task: TaskFile, request: RunRequest, environmentDigest: String) -> CacheContext {
        let relocation = PathRelocation.of(task)
        let taskKey = ActionKey.taskKey(argv: task.argv, environmentDigest: environmentDigest,
                                        sandbox: ActionKey.sandboxFields(request.applying(task), relocation: relocation),
                                        taskPath: ActionKey.taskPath(relocation))
        let sink = self.sink
        return CacheContext(cache: OutputCache.resolve(request.cache, task: task, warn: { sink(.warning($0)) }), taskKey: taskKey)
    }

    /// What `dgrun cache key` and `explain` say of a task.
    public enum CacheKeyResult: Sendable {
        /// changed: the inputs whose content differs from the last recorded run's.
        case key(String, taskKey: String, inputs: Int, lastKey: String?, changed: [String], from: String)
        /// No key can be computed: why (the task never ran and no cache knows it, an input is missing).
        case none(String)
    }

    /// The dependencies the key is computed over: the last recorded graph's, else the inputs
    /// manifest the cache keeps under the task key (a clone with no state).
    func keyDependencies(_ task: TaskFile, context: CacheContext, recorded: [Dependency], hasGraph: Bool)
        -> (dependencies: [Dependency], graphJSON: String?, from: String)? {
        if hasGraph, !recorded.isEmpty { return (recorded, nil, "the last recorded run") }
        guard let inputs = context.cache?.inputs(taskKey: context.taskKey) else { return nil }
        return (inputs.resolved(PathRelocation.of(task)), inputs.graph, "the cache's inputs manifest")
    }

    /// The action key of the next run of a task, computed before running: nothing runs, nothing is written.
    public func cacheKey(_ task: TaskFile, request: RunRequest) throws(DgrunError) -> CacheKeyResult {
        let merged = request.applying(task)
        let spec = try provisioner.sandboxSpec(for: merged)
        let digest = StateCapture.environmentDigest(task: task, requestKeys: request.environmentKeys, environment: spec.environment)
        let context = cacheContext(task, request: request, environmentDigest: digest)
        let store = try StateLocation.existing(for: task, stateOption: request.stateDirectory)
        let recorded = try store?.dependencies(task: task.directory) ?? []
        let hasGraph = try store?.task(id: task.directory)?.graphVersion != nil
        let lastKey = try store?.lastFinishedRun(task: task.directory)?.actionKey
        guard let found = keyDependencies(task, context: context, recorded: recorded, hasGraph: hasGraph) else {
            return .none("\(task.name) has no recorded run here and no cache has its inputs manifest: run it once (dgrun exec) first")
        }
        let current = ActionKey.currentVersions(of: found.dependencies)
        switch ActionKey.compute(taskKey: context.taskKey, dependencies: found.dependencies, relocation: PathRelocation.of(task),
                                 version: current) {
        case .missing(let ref):
            return .none("the input \(ref) of \(task.name) is missing: no key until it is there")
        case .key(let key, let inputs):
            let changed = ActionKey.inputs(of: found.dependencies).filter { d in
                guard let version = d.version else { return false }
                return current(d).map { !version.hasPrefix($0) && !$0.hasPrefix(version) } ?? true
            }.map(\.ref)
            return .key(key, taskKey: context.taskKey, inputs: inputs.count, lastKey: lastKey, changed: changed, from: found.from)
        }
    }

    /// A task that would run: its outputs restored from the cache when its action key matches.
    /// nil: no entry (or a bad one, reported), and the task runs.
    func restoreFromCache(_ task: TaskFile, context: CacheContext, prepared: Prepared, plan: Plan, store: Store,
                          capture: StateCapture, workspace: Workspace?) -> TaskResult? {
        guard let cache = context.cache, !prepared.request.force else { return nil }
        let started = Clock.now()
        let relocation = PathRelocation.of(task)
        guard let found = keyDependencies(task, context: context, recorded: prepared.input.dependencies,
                                          hasGraph: prepared.input.hasRecordedGraph) else { return nil }
        let current = ActionKey.currentVersions(of: found.dependencies)
        guard case .key(let key, _) = ActionKey.compute(taskKey: context.taskKey, dependencies: found.dependencies,
                                                        relocation: relocation, version: current),
              let (manifest, source) = cache.outputs(key: key) else { return nil }
        // A manifest names outputs: never the task's own inputs nor its task.toml (a poisoned entry
        // must not rewrite the sources it is keyed by).
        let sources = Set(ActionKey.inputs(of: found.dependencies).map(\.ref) + [task.directory + "/task.toml"])
        if let entry = manifest.entries.first(where: { sources.contains(task.directory + "/" + $0.path) }) {
            sink(.warning("dgrun: warning: \(task.name): the cache entry \(key) (\(source)) would overwrite \(entry.path), an input of the task; refused, and the task runs"))
            return nil
        }
        guard cache.fetchBlobs(manifest) else { return nil }
        let restored: (files: Int, bytes: Int64)
        do throws(OutputFiles.RestoreError) {
            restored = try OutputFiles.restore(manifest, into: task.directory, from: cache.local)
        } catch {
            switch error {
            case .corrupt(let digest, let path):
                cache.local.removeBlob(digest)
                sink(.warning("dgrun: warning: \(task.name): the cached \(path) (blob \(digest), from the \(source)) does not match its digest: poisoned or truncated; refused, removed from the local cache, and the task runs"))
            case .failed(let failure):
                sink(.warning("dgrun: warning: \(task.name): not restored from the cache: \(failure.message); the task runs"))
            }
            return nil
        }
        // Recorded as a finished run that exited 0, restored: the task is up to date from now on.
        let now = Clock.now()
        var record = capture.newRecord(reasons: plan.reasons + ["restored from the \(source)"],
                                       environmentDigest: prepared.input.environmentDigest)
        record.startedAt = started
        record.status = .finished
        record.exitCode = 0
        record.finishedAt = now
        record.wallSeconds = now - record.startedAt
        record.actionKey = key
        record.restoredFrom = source
        var outputs: [String: String] = [:]
        // The versions a run records (ContentHash.outputVersion): a link is the digest of its target text.
        for entry in manifest.entries {
            outputs[task.directory + "/" + entry.path] = entry.digest.map { "sha256:" + $0 }
                ?? ContentHash.outputVersion(of: task.directory + "/" + entry.path)
        }
        record.outputs = outputs
        let inputRefs = Set(ActionKey.inputs(of: found.dependencies).map(\.ref))
        let dependencies = found.dependencies.map { d in
            var d = d
            if inputRefs.contains(d.ref) { d.version = current(d) ?? d.version }
            if d.relation == .writes, let version = outputs[d.ref] { d.version = version }
            d.fingerprint = d.ref.hasPrefix("/") && d.relation != .probes ? Fingerprints.settled(d.ref, now: now) : nil
            return d
        }
        let graphJSON = found.graphJSON ?? (prepared.graphVersion.flatMap { try? store.graphJSON(version: $0) }) ?? "{}"
        let runID: Int64
        do throws(DgrunError) {
            runID = try capture.begin(record)
            try store.finishRun(record, id: runID, graphJSON: graphJSON, dependencies: dependencies)
        } catch {
            sink(.warning("dgrun: \(task.name): restored from the cache but could not be recorded: \(error.message)"))
            return .failed(error)
        }
        if let workspace {
            let changed = outputs.filter { prepared.input.lastRun?.outputs[$0.key] != $0.value }.map(\.key)
            capture.markReadersStale(of: changed, in: workspace, runID: runID)
        }
        if prepared.request.reportRecords {
            sink(.recorded(task: task.name, TaskRecordSummary(graphVersion: (try? store.task(id: task.directory))??.graphVersion, actionKey: key)))
        }
        sink(.restored(task: task.name, from: source, files: restored.files, bytes: restored.bytes))
        return .restored(runID: runID, from: source)
    }
}
