import DgrunCache
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

/// State capture, the last stage of a run: what it used and produced goes into the task's store
/// (the graph, the fingerprints of its dependencies, the run record and its samples), the graph
/// into TASKDIR/.dgrun/graph.json, and the workspace tasks that read a rewritten output are marked
/// stale. Everything a later plan reads was written here.
public struct StateCapture: Sendable {
    public let store: Store
    public let task: TaskFile
    /// Where the other tasks' stores are (the --state option), for marking them stale.
    public let stateOption: String?

    public init(store: Store, task: TaskFile, stateOption: String?) {
        self.store = store
        self.task = task
        self.stateOption = stateOption
    }

    public var taskID: String { task.directory }

    /// A new record for a run of this task (not yet stored).
    public func newRecord(reasons: [String], environmentDigest: String) -> RunRecord {
        RunRecord(taskID: taskID, status: .running, startedAt: Clock.now(), pid: getpid(), argv: task.argv,
                  environmentDigest: environmentDigest, reasons: reasons)
    }

    /// The run is starting: recorded as running, so that a dgrun killed now leaves a trace.
    public func begin(_ record: RunRecord) throws(DgrunError) -> Int64 {
        try store.beginRun(record, pidStartTime: DgrunSystem.ProcessInfo.startTime(of: getpid()))
    }

    public func recordBlocked(_ record: RunRecord) {
        var record = record
        record.status = .blocked
        record.finishedAt = Clock.now()
        try? store.recordBlocked(record)
    }

    /// An OOM-killed attempt that --retry-oom runs again: kept in the history as it was; returns
    /// the id of the next attempt's record.
    public func recordRetriedAttempt(_ killed: RunOutcome, record: RunRecord, id: Int64) -> Int64 {
        var attempt = record
        attempt.fill(from: killed, finishedAt: Clock.now())
        attempt.reasons.append("OOM-killed; run again with more memory (--retry-oom)")
        try? store.finishRun(attempt, id: id, graphJSON: nil, dependencies: nil)
        try? store.addSamples(killed.samples, run: id)
        return (try? begin(record)) ?? id
    }

    /// dgrun could not start the run: recorded as finished with that status and why.
    public func recordFailure(_ error: DgrunError, record: RunRecord, id: Int64) {
        var record = record
        record.status = .finished
        record.exitCode = error.exitStatus
        record.finishedAt = Clock.now()
        record.reasons.append("dgrun failed: \(error.message)")
        try? store.finishRun(record, id: id, graphJSON: nil, dependencies: nil)
    }

    /// What a finished run leaves: its record with outputs and the graph's dependencies. Returns
    /// the outputs whose version changed since `previous`, and a warning when the record failed.
    public func recordFinished(_ outcome: RunOutcome, graph: Graph?, spec: SandboxSpec, record: RunRecord, id: Int64,
                               previous: RunRecord?, cache: CacheContext? = nil)
        -> (changed: [String], warning: String?, actionKey: String?) {
        var record = record
        let finished = Clock.now()
        record.fill(from: outcome, finishedAt: finished)
        var dependencies: [Dependency]? = nil
        var graphJSON: String? = nil
        var graphSavedAt: String? = nil
        var rows: Store.PreparedRows? = nil
        var warning: String?
        if let graph, outcome.interruptedBy == nil {
            // The dependencies and the action key on one CPU, the JSON rendered and saved as
            // graph.json on another: a pipeline's 8,000-node graph took ~35 and ~20 ms of them.
            // The store's rows of the dependencies are made on the first CPU too, out of the write.
            let task = self.task, isPrivate = Self.privatePaths(of: spec), taskKey = cache?.taskKey, store = self.store
            let (made, rendered) = Parallel.both({ () -> (recording: GraphRecording, key: ActionKey.Outcome?, rows: Store.PreparedRows) in
                let recording = GraphRecording(graph: graph, now: finished, isPrivate: isPrivate)
                return (recording, taskKey.map { Self.actionKey($0, of: task, dependencies: recording.dependencies) },
                        store.prepareRows(recording.dependencies))
            }, { () -> (json: String?, warning: String?) in
                let json = try? GraphRenderer.render(graph, as: .json)
                return (json, Self.save(graph, in: task, json: json))
            })
            dependencies = made.recording.dependencies
            rows = made.rows
            record.outputs = made.recording.outputs
            graphJSON = rendered.json
            warning = rendered.warning
            if rendered.json != nil && rendered.warning == nil { graphSavedAt = StateLocation.ownDirectory(of: task) + "/graph.json" }
            if let cache, case .key(let key, _) = made.key {
                record.actionKey = key
                storeOutputs(cache, key: key, dependencies: made.recording.dependencies, graphJSON: graphJSON, outcome: outcome,
                             written: Array(made.recording.outputs.keys))
            }
        }
        do {
            try store.finishRun(record, id: id, graphJSON: graphJSON, dependencies: dependencies, graphSavedAt: graphSavedAt, rows: rows)
            try store.addSamples(outcome.samples, run: id)
            if let signal = outcome.interruptedBy {
                try store.markStale(task: task.directory, reason: "its last run (\(id)) was interrupted by signal \(signal)")
            }
        } catch {
            warning = "dgrun: \(task.name): the run finished but could not be recorded: \(error)"
        }
        let changed = record.outputs.filter { previous?.outputs[$0.key] != $0.value }.map(\.key)
        return (outcome.exitCode == 0 ? changed : [], warning, record.actionKey)
    }

    /// The action key of a run that recorded `dependencies` (their recorded versions).
    static func actionKey(_ taskKey: String, of task: TaskFile, dependencies: [Dependency]) -> ActionKey.Outcome {
        ActionKey.compute(taskKey: taskKey, dependencies: dependencies, relocation: PathRelocation.of(task),
                          version: { $0.version ?? ActionKey.currentVersion($0) })
    }

    /// After a successful run, its outputs (the declared ones and the files the trace saw written
    /// in the task directory) stored in the cache under its action key.
    func storeOutputs(_ context: CacheContext, key: String, dependencies: [Dependency], graphJSON: String?, outcome: RunOutcome,
                      written: [String]) {
        guard let cache = context.cache, outcome.exitCode == 0, outcome.signal == nil, outcome.interruptedBy == nil else { return }
        // An output elsewhere in the workspace could not be restored (a manifest holds only paths
        // in the task directory): such a task is not cached, or a restore would leave it missing.
        let relocation = PathRelocation.of(task)
        if let root = relocation.workspaceRoot,
           let outside = (written + task.outputs.map { TaskFile.absolute($0, in: task.directory) }).first(where: {
               $0.hasPrefix(root + "/") && !$0.hasPrefix(task.directory + "/") && $0 != task.directory
           }) {
            cache.warn("dgrun: \(task.name): outputs not cached: it writes \(outside), outside its directory (a restore could not bring that back)")
            return
        }
        let declared = task.outputs.flatMap { Glob.paths(TaskFile.absolute($0, in: task.directory)) }
        let inputs = InputsManifest(taskKey: context.taskKey, dependencies: dependencies, relocation: relocation, graph: graphJSON)
        _ = cache.store(taskKey: context.taskKey, key: key, inputs: inputs, outputs: written + declared, taskDirectory: task.directory)
    }

    /// After a run rewrote outputs: the workspace tasks reading them are marked stale, so that
    /// `dgrun status` says why before any file is checked.
    public func markReadersStale(of changedOutputs: [String], in workspace: Workspace, runID: Int64) {
        guard !changedOutputs.isEmpty else { return }
        for (index, output) in workspace.readers(of: changedOutputs, except: task) {
            // A task that never ran has no store: it will run anyway.
            guard let other = try? StateLocation.existing(for: workspace.tasks[index], stateOption: stateOption) else { continue }
            try? other.markStale(task: workspace.tasks[index].directory, reason: "input \(output) was rewritten by \(task.name) (run \(runID))")
        }
    }

    /// TASKDIR/.dgrun/graph.json, written atomically; a warning when it could not be. `json`: the
    /// graph already rendered (a recorded run stores the same text), else rendered here.
    public static func save(_ graph: Graph, in task: TaskFile, json: String? = nil) -> String? {
        let dir = StateLocation.ownDirectory(of: task)
        mkdir(dir, 0o755)
        guard FileIO.isRealDirectory(dir) else {
            return "dgrun: warning: the graph is not saved: \(dir) is not a directory (a symbolic link?)"
        }
        do {
            try FileSystem.writeAtomically(dir + "/graph.json", try json ?? GraphRenderer.render(graph, as: .json))
            return nil
        } catch {
            return "dgrun: warning: cannot save the graph in \(dir): \(error)"
        }
    }

    /// The environment the task is defined by: what task.toml and the request set, and PATH/locale.
    /// The rest of the caller's environment (SHLVL, OLDPWD...) would make every shell look new.
    public static func environmentDigest(task: TaskFile, requestKeys: [String], environment: [String]) -> String {
        // Compared as bytes, "KEY=" against the entry's start: the Character-wise prefix and a Set
        // of Strings were 0.28 M instructions a task, 11% of a 1,000-task workspace's no-op.
        let keys = (task.env.map(\.key) + requestKeys + ["PATH", "LANG", "LC_ALL"])
            .filter { !$0.utf8.contains(UInt8(ascii: "=")) }.map { Array($0.utf8) }
        let relevant = environment.filter { entry in
            let bytes = entry.utf8
            return keys.contains { key in
                bytes.starts(with: key) && (bytes.count == key.count || bytes[bytes.index(bytes.startIndex, offsetBy: key.count)] == UInt8(ascii: "="))
            }
        }.sorted()
        return ContentHash.version(ofBytes: Array(relevant.joined(separator: "\0").utf8)) ?? relevant.joined(separator: "\0")
    }

    /// Whether a path lived in one of the sandbox's own tmpfs mounts (its /tmp): gone with it, and
    /// no dependency of the next run, unless a bind mount showed a host directory there.
    public static func privatePaths(of spec: SandboxSpec) -> @Sendable (String) -> Bool {
        let tmpfs = spec.tmpfs.map { $0.hasSuffix("/") ? $0 : $0 + "/" }
        let binds = spec.binds.map { $0.target.hasSuffix("/") ? $0.target : $0.target + "/" }
        return { path in
            let probe = path + "/"
            return tmpfs.contains { probe.hasPrefix($0) } && !binds.contains { probe.hasPrefix($0) }
        }
    }

    public static func json<T: Encodable>(_ value: T) -> String? {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) }
    }
}

extension RunRecord {
    /// The record of a finished run, from its outcome.
    public mutating func fill(from outcome: RunOutcome, finishedAt: Double) {
        status = .finished
        self.finishedAt = finishedAt
        exitCode = outcome.exitCode
        signal = outcome.signal
        oomKilled = outcome.oomKilled
        timedOut = outcome.timedOut
        wallSeconds = outcome.wallSeconds
        cpuUserSeconds = outcome.cpuUserSeconds
        cpuSystemSeconds = outcome.cpuSystemSeconds
        memoryPeakBytes = outcome.memoryPeakBytes.map { Int64($0) }
        pidsPeak = outcome.pidsPeak.map { Int64($0) }
        limitsJSON = StateCapture.json(outcome.limits) ?? "{}"
        adjustmentsJSON = StateCapture.json(outcome.adjustments) ?? "[]"
        if let signal = outcome.interruptedBy {
            status = .interrupted
            reasons.append("interrupted by signal \(signal)")
        }
    }
}

/// The graph of a finished run turned into what the planner checks next time: the task's edges
/// with the versions and stat fingerprints of the files as the run left them.
public struct GraphRecording {
    public var dependencies: [Dependency] = []
    /// path → version of each output that exists after the run.
    public var outputs: [String: String] = [:]

    public init(graph: Graph, now: Double, isPrivate: (String) -> Bool) {
        // Nodes by index and the files' fingerprints taken on every CPU: a pipeline over
        // /usr/include records 8,000 dependencies, and a dictionary of copied nodes, a stat each
        // in turn and a version split by Characters were most of what recording it cost. Nodes are
        // read field by field, never copied whole: a copy retains and releases their seven
        // references, and four copies a node were half of what is left (perf, 8,000 nodes).
        let nodes = graph.nodes
        var index: [String: Int] = [:]
        index.reserveCapacity(nodes.count)
        for i in nodes.indices where index[nodes[i].id] == nil { index[nodes[i].id] = i }
        let taskID = graph.task.id
        var codeNodes: Set<String> = []
        for edge in graph.edges where edge.relation == "executes" && edge.from == taskID { codeNodes.insert(edge.to) }
        var kept: [(node: Int, relation: Dependency.Relation)] = []
        kept.reserveCapacity(graph.edges.count)
        for edge in graph.edges {
            guard let n = index[edge.to], let relation = Dependency.Relation(rawValue: edge.relation) else { continue }
            // What the task does, and what the programs it ran require (their libraries, interpreters).
            guard edge.from == taskID || (relation == .requires && codeNodes.contains(edge.from)) else { continue }
            if nodes[n].ref.hasPrefix("/") && isPrivate(nodes[n].ref) { continue }
            // A server the task runs itself is up only while it runs: nothing to check before.
            if nodes[n].kind == .service && nodes[n].ownership == "internal" { continue }
            // A temporary the task removed itself: there is nothing of it to check next time.
            if relation == .writes && nodes[n].state == "unavailable" { continue }
            kept.append((n, relation))
        }
        // Kernel interfaces (/proc, /sys, /dev) are never compared by stat: their times move on
        // their own, and a stat taken here would make every run's rows look new.
        // The builder's stat where it took one (after the run, as this would be), else one now.
        let aligned = graph.fileStats.count == nodes.count
        let fileStats = graph.fileStats, keptNodes = kept
        let fingerprints = Parallel.map(kept.count) { i -> FileFingerprint? in
            let (n, relation) = keptNodes[i]
            guard nodes[n].ref.hasPrefix("/") && relation != .probes && nodes[n].kind != .infrastructure else { return nil }
            guard aligned, let st = fileStats[n] else { return Fingerprints.settled(nodes[n].ref, now: now) }
            return Fingerprints.settled(Fingerprints.of(st), now: now)
        }
        dependencies.reserveCapacity(kept.count + 1)
        for (i, (n, relation)) in kept.enumerated() {
            let traced = nodes[n].evidence.contains { $0.hasPrefix("traced:") }
            let version = nodes[n].version.map(Dependency.firstWord)
            let fingerprint = fingerprints[i]
            let ref = nodes[n].ref
            dependencies.append(Dependency(nodeID: nodes[n].id, kind: nodes[n].kind.rawValue, ref: ref, relation: relation,
                                           version: version, fingerprint: fingerprint, priority: nodes[n].priority,
                                           costBytes: Int64(nodes[n].cost["bytes"] ?? 0), traced: traced))
            if relation == .writes, let version, fingerprint != nil || FileIO.exists(ref) {
                outputs[ref] = version
            }
        }
        for i in nodes.indices where nodes[i].kind == .infrastructure && nodes[i].ref.hasPrefix("network:") {
            dependencies.append(Dependency(nodeID: nodes[i].id, kind: nodes[i].kind.rawValue, ref: nodes[i].ref, relation: .uses))
        }
    }
}


/// Declared inputs and outputs (task.toml globs) against what the run used inside the task directory.
public struct DeclarationCheck: Sendable {
    public var undeclaredInputs: [String] = []
    public var unusedInputs: [String] = []
    public var undeclaredOutputs: [String] = []
    public var unwrittenOutputs: [String] = []

    public init(task: TaskFile, graph: Graph) {
        let prefix = task.directory + "/"
        let refs = Dictionary(graph.nodes.map { ($0.id, $0.ref) }, uniquingKeysWith: { a, _ in a })
        func inside(_ relation: Set<String>) -> [String] {
            var seen: Set<String> = []
            return graph.edges.filter { relation.contains($0.relation) && $0.from == graph.task.id }
                .compactMap { refs[$0.to] }.filter { $0.hasPrefix(prefix) }
                .map { String($0.dropFirst(prefix.count)) }
                // Directories listed or created on the way to files are implied by the file globs.
                .filter { !$0.hasPrefix(".dgrun/") && $0 != "task.toml" && !FileIO.isDirectory(prefix + $0) }
                .filter { seen.insert($0).inserted }
        }
        let written = inside(["writes"])
        let read = inside(["reads", "loads", "executes"]).filter { !written.contains($0) }
        func matches(_ path: String, _ globs: [String]) -> Bool { globs.contains { fnmatch($0, path, FNM_PATHNAME) == 0 } }
        undeclaredInputs = read.filter { !matches($0, task.inputs) }
        unusedInputs = task.inputs.filter { glob in !read.contains { fnmatch(glob, $0, FNM_PATHNAME) == 0 } }
        undeclaredOutputs = written.filter { !matches($0, task.outputs) }
        unwrittenOutputs = task.outputs.filter { glob in !written.contains { fnmatch(glob, $0, FNM_PATHNAME) == 0 } }
    }
}

/// What the recorder needs of the cache for one task: its task key, and the cache (nil: off).
public struct CacheContext: Sendable {
    public var cache: OutputCache?
    public var taskKey: String
    public init(cache: OutputCache?, taskKey: String) {
        self.cache = cache
        self.taskKey = taskKey
    }
}

/// glob(3) of an absolute pattern: the paths it names now (a plain path: itself, when it exists).
public enum Glob {
    public static func paths(_ pattern: String) -> [String] {
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(pattern, 0, nil, &g) == 0 else { return [] }
        return (0..<Int(g.gl_pathc)).compactMap { g.gl_pathv[$0].map { String(cString: $0) } }
    }
}
