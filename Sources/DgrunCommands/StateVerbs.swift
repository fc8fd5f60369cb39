import DgrunCache
import DgrunEngine
import DgrunGraph
import DgrunRecord
import DgrunPlanner
import DgrunSpec
import DgrunStore
import DgrunSystem
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// `dgrun status`, `explain`, `history` and `graph`: read-only views of the state store. They plan
/// (stat, hash what moved, probe services) but never run a task nor change what is recorded.
struct StateQuery {
    enum Verb: String { case status, explain, history, graph }
    var verb: Verb
    var directory = "."
    var state: String?
    var json = false
    var limit = 20
    var format: GraphFormat = .text
    /// history -- CMD: an ad-hoc command's runs (keyed by it and the current directory).
    var command: [String] = []

    static func spec(_ verb: Verb) -> VerbSpec<StateQuery> {
        let texts: [Verb: (String, String, String)] = [
            .status: ("dgrun status [options] [TASKDIR | WORKSPACE]",
                      "Show what changed, is missing or unavailable since each task's last run.",
                      """
                      Like `git status`, for dependencies. Each task is one of: up to date, stale (it
                      would run: the changes follow), blocked (it could not start: what is missing), or
                      never run. A task whose upstream is stale is stale too.
                      EXIT STATUS: 0 when every task is up to date, 1 when one would run, 122 when one is
                      blocked, 125 on bad input.
                      """),
            .explain: ("dgrun explain [options] TASKDIR",
                       "Say why the next exec of a task would run: the changes and their path to it.",
                       """
                       For each change: the node that moved and, when it is produced by another task of
                       the workspace, the path from it to this task (params.txt → gen → data.txt → apply).
                       """),
            .history: ("dgrun history [options] [TASKDIR | WORKSPACE | -- CMD [ARGS...]]",
                       "List the recorded runs, newest first.",
                       """
                       Each run: when, status, exit, wall and CPU time, peaks, why it ran and the limit changes.
                       -- CMD: the runs of `dgrun exec -- CMD` in the current directory (those that lasted
                       0.1 s or more, or were tuned or OOM-killed: the history the tuner starts from).
                       """),
            .graph: ("dgrun graph [options] [TASKDIR | WORKSPACE]",
                     "Print the recorded graph with each node's state as it is now.",
                     """
                     TASKDIR: the graph of its last recorded run, each node's state checked now
                     (available, unavailable) and a "change" field on the nodes that moved.
                     WORKSPACE: the graph of tasks, linked by the files one writes and another reads.
                     """),
        ]
        let (usage, abstract, discussion) = texts[verb]!
        var options: [OptionSpec<StateQuery>] = [
            .value("state", "dir", "The state store's directory (default: TASKDIR/.dgrun, or $DGRUN_STATE_DIR).") { $0.state = $1 },
        ]
        switch verb {
        case .history:
            options.append(.flag("json", "Print the runs as JSON (one array).") { $0.json = true })
            options.append(.value("limit", short: "n", "n", "How many runs per task (default: 20).") {
                (target: inout StateQuery, text: String) throws(DgrunError) in
                guard let n = Int(text), n > 0 else { throw DgrunError.usage("--limit \"\(text)\" is not a positive number", verb: "history") }
                target.limit = n
            })
        case .graph:
            options.append(.value("format", "json|dot|mermaid|text", "Output format (default: text).") {
                (target: inout StateQuery, text: String) throws(DgrunError) in target.format = try choice(text, option: "format")
            })
        case .status:
            options.append(.flag("json", "Print the state of each task as JSON.") { $0.json = true })
        case .explain:
            break
        }
        return VerbSpec(name: verb.rawValue, usage: usage, abstract: abstract, discussion: discussion, options: options)
    }

    static func parse(_ verb: Verb, _ args: ArraySlice<String>) throws(DgrunError) -> StateQuery? {
        var query = StateQuery(verb: verb)
        let spec = spec(verb)
        guard let parsed = try spec.parseOrShowHelp(args, into: &query) else { return nil }
        if verb == .history, !parsed.command.isEmpty, parsed.positionals.isEmpty {
            query.command = parsed.command
            return query
        }
        guard parsed.command.isEmpty, parsed.positionals.count <= 1 else {
            throw DgrunError.usage("give at most one directory; usage: \(spec.usage)", verb: verb.rawValue)
        }
        query.directory = parsed.positionals.first ?? "."
        return query
    }

    // MARK: - loading

    struct Subject {
        var tasks: [TaskFile]
        /// Set when the directory is (or belongs to) a workspace.
        var workspace: Workspace?
        var isWorkspace: Bool
    }

    func load() throws(DgrunError) -> Subject {
        guard let root = FileIO.realPath(directory), FileIO.isDirectory(root) else { throw DgrunError("\(directory) is not a directory") }
        if FileIO.exists(root + "/task.toml") {
            let task = try TaskFile.load(directory: root)
            return Subject(tasks: [task], workspace: try Workspace.enclosing(task, stateOption: state), isWorkspace: false)
        }
        let workspace = try Workspace.load(root: root, stateOption: state)
        guard !workspace.tasks.isEmpty else {
            throw DgrunError("\(directory) is neither a task directory (no task.toml) nor a workspace (no subdirectory has one)")
        }
        return Subject(tasks: workspace.tasks, workspace: workspace, isWorkspace: true)
    }

    /// The store of a task, only when one exists: a query never creates state.
    func existingStore(_ task: TaskFile) throws(DgrunError) -> Store? {
        try StateLocation.existing(for: task, stateOption: state)
    }

    /// The engine's planning, made once per command (the launcher is never called).
    static let planning = Engine.forHost(sink: { _ in })

    /// The plan the next exec would make, or nil when the task never ran.
    func plan(_ task: TaskFile, in workspace: Workspace?, producers: [String: String]) throws -> Plan? {
        guard let store = try existingStore(task), try store.lastFinishedRun(task: task.directory) != nil else { return nil }
        var request = RunRequest()
        request.stateDirectory = state.map(FileSystem.absolute)
        let input = try Self.planning.prepare(task, request: request, store: store, workspace: workspace, producers: producers).input
        return Planner(environment: HostEnvironment()).plan(input)
    }

    func producers(of task: TaskFile, in workspace: Workspace?) -> [String: String] {
        guard let workspace, let me = workspace.index(of: task) else { return [:] }
        return workspace.producerNames(of: me)
    }

    func run() -> Int32 {
        do {
            if !command.isEmpty { return try adHocHistory() }
            let subject = try load()
            switch verb {
            case .status: return try status(subject)
            case .explain: return try explain(subject)
            case .history: return try history(subject)
            case .graph: return try graph(subject)
            }
        } catch let error as DgrunError {
            CLI.write(2, "dgrun: \(error.message)\n")
            return error.exitStatus
        } catch {
            CLI.write(2, "dgrun: \(error)\n")
        }
        return 125
    }

    // MARK: - status

    enum TaskStatus: String, Encodable { case upToDate = "up to date", stale, blocked, neverRun = "never run" }

    struct TaskReport: Encodable {
        var task: String
        var dir: String
        var status: TaskStatus
        var reasons: [String]
    }

    /// Every task's state; a task downstream of a stale one is stale as well.
    func reports(_ subject: Subject) throws -> [TaskReport] {
        var reports: [TaskReport] = []
        var byDirectory: [String: Int] = [:]
        let order = topologicalOrder(subject)
        for task in order {
            let plan = try self.plan(task, in: subject.workspace, producers: producers(of: task, in: subject.workspace))
            var report = TaskReport(task: task.name, dir: task.directory, status: .neverRun, reasons: [])
            if let plan {
                switch plan.decision {
                case .upToDate: report.status = .upToDate
                case .run: report.status = .stale
                case .blocked: report.status = .blocked
                }
                report.reasons = plan.decision == .blocked ? plan.blockers.map(\.description) : plan.reasons
            }
            if let workspace = subject.workspace, let me = workspace.index(of: task) {
                for producer in Set(workspace.producers(of: me)) {
                    let name = workspace.tasks[producer].name
                    guard let index = byDirectory[workspace.tasks[producer].directory] else { continue }
                    if reports[index].status != .upToDate {
                        if report.status == .upToDate { report.status = .stale }
                        report.reasons.append("upstream task \(name) is \(reports[index].status.rawValue)")
                    }
                }
            }
            byDirectory[task.directory] = reports.count
            reports.append(report)
        }
        return reports
    }

    /// Producers before consumers (the workspace's tasks), or the single task.
    func topologicalOrder(_ subject: Subject) -> [TaskFile] {
        guard let workspace = subject.workspace else { return subject.tasks }
        var done: Set<Int> = []
        var order: [Int] = []
        func visit(_ t: Int, _ depth: Int) {
            guard !done.contains(t), depth < workspace.tasks.count else { return }
            for p in workspace.producers(of: t) { visit(p, depth + 1) }
            if done.insert(t).inserted { order.append(t) }
        }
        let wanted = Set(subject.tasks.map(\.directory))
        for t in workspace.tasks.indices where wanted.contains(workspace.tasks[t].directory) { visit(t, 0) }
        return order.map { workspace.tasks[$0] }
    }

    func status(_ subject: Subject) throws -> Int32 {
        var all = try reports(subject)
        if !subject.isWorkspace { all = all.filter { $0.dir == subject.tasks[0].directory } }
        if json {
            CLI.write(1, (StateCapture.json(all) ?? "[]") + "\n")
        } else {
            for report in all {
                CLI.write(1, "\(report.task): \(report.status.rawValue)\n")
                for reason in report.reasons { CLI.write(1, "    \(reason)\n") }
            }
        }
        if all.contains(where: { $0.status == .blocked }) { return DgrunExit.blocked }
        return all.allSatisfy { $0.status == .upToDate } ? 0 : 1
    }

    // MARK: - explain

    func explain(_ subject: Subject) throws -> Int32 {
        guard !subject.isWorkspace, let task = subject.tasks.first else {
            throw DgrunError("explain takes one task directory (of a workspace: dgrun explain WORKSPACE/TASK)")
        }
        let all = try reports(subject)
        guard let mine = all.first(where: { $0.dir == task.directory }) else { return 125 }
        switch mine.status {
        case .upToDate:
            CLI.write(1, "\(task.name) is up to date: the next exec would not run it.\n")
            return 0
        case .neverRun:
            CLI.write(1, "\(task.name) has never run: the next exec runs it (no recorded graph yet).\n")
            return 1
        case .blocked:
            CLI.write(1, "\(task.name) is blocked: the next exec would not start it until these are back:\n")
            for reason in mine.reasons { CLI.write(1, "  - \(reason)\n") }
            return DgrunExit.blocked
        case .stale:
            CLI.write(1, "\(task.name) would run, because:\n")
        }
        for reason in mine.reasons where !reason.hasPrefix("upstream task ") {
            CLI.write(1, "  - \(reason)\n")
        }
        explainKey(task)
        // Changes further up: each stale upstream task's own changes, and the path down to this one.
        if let workspace = subject.workspace, let me = workspace.index(of: task) {
            let byName = Dictionary(all.map { ($0.task, $0) }, uniquingKeysWith: { a, _ in a })
            for path in paths(to: me, in: workspace) {
                guard let origin = byName[workspace.tasks[path[0]].name],
                      origin.reasons.contains(where: { !$0.hasPrefix("upstream task ") }) else { continue }
                let chain = zip(path, path.dropFirst()).map { producer, consumer -> String in
                    let via = workspace.links.first { $0.producer == producer && $0.consumer == consumer }?.ref ?? "?"
                    return "\(workspace.tasks[producer].name) → \(Self.relative(via, to: workspace.root))"
                }.joined(separator: " → ") + " → \(task.name)"
                let own = origin.reasons.filter { !$0.hasPrefix("upstream task ") }
                CLI.write(1, "  - upstream: \(chain)\n")
                for reason in own { CLI.write(1, "      \(origin.task): \(reason)\n") }
            }
        }
        return 1
    }

    /// The action key the next exec looks up, against the last run's, and the inputs that moved it.
    func explainKey(_ task: TaskFile) {
        var request = RunRequest()
        request.stateDirectory = state.map { FileSystem.absolute($0) }
        try? Exec.applyCacheEnvironment(&request.cache)
        let engine = Engine.forHost(sink: { _ in })
        guard let result = try? engine.cacheKey(task, request: request) else { return }
        switch result {
        case .none(let why):
            CLI.write(1, "  action key: none (\(why))\n")
        case .key(let key, _, let inputs, let last, let changed, _):
            if let last, last != key {
                CLI.write(1, "  action key: \(last.prefix(16))… → \(key.prefix(16))… (over \(inputs) inputs)\n")
                for ref in changed { CLI.write(1, "      changed the key: \(ref)\n") }
                if changed.isEmpty { CLI.write(1, "      changed the key: the command, the environment or the sandbox settings\n") }
            } else {
                CLI.write(1, "  action key: \(key.prefix(16))… (\(last == key ? "the last run's: " : "")over \(inputs) inputs)\n")
            }
            if let cache = OutputCache.resolve(request.cache, task: task, warn: { _ in }),
               FileIO.exists(cache.local.actionPath(key)) {
                CLI.write(1, "  the local cache has outputs under this key: the next exec restores them instead of running\n")
            }
        }
    }

    /// Every path of tasks from a task with no stale-upstream (a source of change) down to `target`.
    func paths(to target: Int, in workspace: Workspace) -> [[Int]] {
        var result: [[Int]] = []
        func walk(_ path: [Int]) {
            let producers = Set(workspace.producers(of: path[0])).filter { !path.contains($0) }
            if path.count > 1 { result.append(path) }
            for p in producers.sorted() { walk([p] + path) }
        }
        walk([target])
        return result
    }

    static func relative(_ path: String, to root: String) -> String {
        path.hasPrefix(root + "/") ? String(path.dropFirst(root.count + 1)) : path
    }

    // MARK: - history

    struct HistoryEntry: Encodable {
        var task: String
        var id: Int64?
        var status: String
        var started_at: String
        var exit_code: Int32?
        var signal: Int32?
        var oom_killed: Bool
        var timed_out: Bool
        var wall_s: Double?
        var cpu_user_s: Double?
        var cpu_sys_s: Double?
        var memory_peak_bytes: Int64?
        var pids_peak: Int64?
        var reasons: [String]
        var outputs: [String: String]
        var adjustments: [Adjustment]
        /// The run's action key (issue 12), and where its outputs came from when it was restored.
        var action_key: String?
        var restored_from: String?

        struct Adjustment: Codable {
            var t_s: Double
            var knob: String
            var from: String
            var to: String
            var reason: String
        }
    }

    func history(_ subject: Subject) throws -> Int32 {
        var entries: [HistoryEntry] = []
        for task in subject.tasks {
            guard let store = try existingStore(task) else { continue }
            entries += try store.runs(task: task.directory, limit: limit).map { Self.entry($0, task: task.name) }
        }
        return try show(entries)
    }

    /// `history -- CMD`: the ad-hoc store's runs of this command line in this directory.
    func adHocHistory() throws -> Int32 {
        let key = AdHocHistory(argv: command, directory: FileIO.realPath(".") ?? FileIO.currentDirectory())
        guard key.exists, let store = key.open() else { return try show([]) }
        let name = command.joined(separator: " ")
        return try show(try store.runs(task: key.id, limit: limit).map { Self.entry($0, task: name) })
    }

    static func entry(_ run: RunRecord, task: String) -> HistoryEntry {
        let adjustments = (try? JSONDecoder().decode([HistoryEntry.Adjustment].self, from: Data(run.adjustmentsJSON.utf8))) ?? []
        return HistoryEntry(task: task, id: run.id, status: run.status.rawValue,
                            started_at: timestamp(run.startedAt), exit_code: run.exitCode, signal: run.signal,
                            oom_killed: run.oomKilled, timed_out: run.timedOut, wall_s: run.wallSeconds,
                            cpu_user_s: run.cpuUserSeconds, cpu_sys_s: run.cpuSystemSeconds,
                            memory_peak_bytes: run.memoryPeakBytes, pids_peak: run.pidsPeak,
                            reasons: run.reasons, outputs: run.outputs, adjustments: adjustments,
                            action_key: run.actionKey, restored_from: run.restoredFrom)
    }

    func show(_ entries: [HistoryEntry]) throws -> Int32 {
        var entries = entries
        entries.sort { ($0.started_at, $0.id ?? 0) > ($1.started_at, $1.id ?? 0) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            CLI.write(1, String(decoding: try encoder.encode(entries), as: UTF8.self) + "\n")
            return 0
        }
        if entries.isEmpty {
            CLI.write(2, command.isEmpty ? "dgrun: no recorded runs under \(directory)\n"
                                         : "dgrun: no recorded runs of this command in this directory\n")
        }
        for e in entries {
            var line = "\(e.started_at)  \(e.task) #\(e.id ?? 0)  \(e.status)"
            if let code = e.exit_code { line += " exit \(code)" }
            if let from = e.restored_from { line += " (restored from the \(from); nothing ran)" }
            if e.oom_killed { line += " (OOM-killed)" }
            if e.timed_out { line += " (timed out)" }
            if let wall = e.wall_s { line += "  wall \(Self.seconds(wall))" }
            if let u = e.cpu_user_s, let s = e.cpu_sys_s { line += "  cpu \(Self.seconds(u + s))" }
            if let peak = e.memory_peak_bytes { line += "  peak \(peak >> 20) MiB" }
            CLI.write(1, line + "\n")
            for reason in e.reasons.prefix(5) { CLI.write(1, "    \(reason)\n") }
            for a in e.adjustments { CLI.write(1, "    at \(Self.seconds(a.t_s)): \(a.knob) \(a.from) → \(a.to) (\(a.reason))\n") }
        }
        return 0
    }

    static func seconds(_ s: Double) -> String {
        s.fixed(s < 10 ? 2 : 1) + "s"
    }

    /// UTC, ISO 8601, to the second.
    static func timestamp(_ unix: Double) -> String {
        var t = time_t(unix)
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { String(v).leftPadded(2) }
        return String(Int(parts.tm_year) + 1900).leftPadded(4) + "-" + two(parts.tm_mon + 1) + "-" + two(parts.tm_mday)
            + "T" + two(parts.tm_hour) + ":" + two(parts.tm_min) + ":" + two(parts.tm_sec) + "Z"
    }

    // MARK: - graph

    func graph(_ subject: Subject) throws -> Int32 {
        let graph = subject.isWorkspace ? try taskGraph(subject) : try recordedGraph(subject.tasks[0], in: subject.workspace)
        CLI.write(1, try GraphRenderer.render(graph, as: format))
        return 0
    }

    /// The last recorded graph of a task, its nodes' states as they are now.
    func recordedGraph(_ task: TaskFile, in workspace: Workspace?) throws -> Graph {
        guard let store = try existingStore(task), let version = try store.task(id: task.directory)?.graphVersion,
              let json = try store.graphJSON(version: version) else {
            throw DgrunError("\(task.name) has no recorded graph yet; run `dgrun exec \(task.directory)` or `dgrun discover` first")
        }
        var graph = try JSONDecoder().decode(Graph.self, from: Data(json.utf8))
        let plan = try self.plan(task, in: workspace, producers: [:])
        var changes: [String: String] = [:]
        for change in plan?.changes ?? [] { changes[change.ref] = change.what }
        for blocker in plan?.blockers ?? [] { changes[blocker.ref] = blocker.why }
        let blocked = Set(plan?.blockers.map(\.ref) ?? [])
        graph.nodes = graph.nodes.map { node in
            var node = node
            if let what = changes[node.ref] { node.change = what }
            if blocked.contains(node.ref) { node.state = "unavailable" }
            else if node.ref.hasPrefix("/"), node.state == "available", !FileIO.exists(node.ref) { node.state = "unavailable" }
            return node
        }
        return graph
    }

    /// A workspace as a graph of tasks: edges from the producing task to the consuming one.
    func taskGraph(_ subject: Subject) throws -> Graph {
        guard let workspace = subject.workspace else { throw DgrunError("not a workspace") }
        let states = Dictionary(try reports(subject).map { ($0.dir, $0) }, uniquingKeysWith: { a, _ in a })
        var nodes: [Graph.Node] = []
        for task in workspace.tasks {
            let report = states[task.directory]
            var node = Graph.Node(id: "task:" + task.name, kind: .task, ref: task.directory, version: nil,
                                  state: report?.status == .blocked ? "unavailable" : "available", ownership: "internal",
                                  cost: [:], priority: task.priority, evidence: ["workspace"])
            if let report, report.status != .upToDate { node.change = report.status.rawValue }
            nodes.append(node)
        }
        var seen: Set<Graph.Edge> = []
        let edges = workspace.links.compactMap { link -> Graph.Edge? in
            let edge = Graph.Edge(from: "task:" + workspace.tasks[link.producer].name,
                                  to: "task:" + workspace.tasks[link.consumer].name, relation: "produces-for")
            return seen.insert(edge).inserted ? edge : nil
        }
        return Graph(task: .init(id: "workspace:" + (workspace.root.split(separator: "/").last.map(String.init) ?? "/"),
                                 dir: workspace.root, argv: []), nodes: nodes, edges: edges)
    }
}
