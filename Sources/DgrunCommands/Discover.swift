import DgrunGraph
import DgrunRuntime
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// `dgrun discover -- CMD`: run the command once in a tracing sandbox and print its dependency graph.
struct Discover {
    var exec = Exec()
    var format: GraphFormat = .json
    var output: String?
    var taskDirectory: String?
    /// How long the processes the command leaves behind (daemons) are traced after it exits.
    var linger = 2.0

    /// The sandbox options discover shares with exec, taken from exec's own table.
    static let sharedOptions: Set<String> = ["profile", "timeout", "cwd", "env", "ro", "rw", "tmpfs", "net", "memory", "cpus", "pids", "limits", "report"]

    static let verb = VerbSpec<Discover>(
        name: "discover",
        usage: "dgrun discover [options] (TASKDIR | -- CMD [ARGS...])",
        abstract: "Run a command once, traced, and print the graph of what it depends on.",
        discussion: """
        The command runs in the exec sandbox (host network by default, so that what it reaches can
        be seen) under a seccomp user-notification tracer that sees every file, exec and network call
        of every process it starts. Static analysis adds what the executed programs load (ELF
        interpreter and libraries, script interpreters). The graph follows the dgrun.graph/1 schema;
        a summary goes to stderr. Exit status: the command's, as with exec.

        TASKDIR: a directory with a task.toml. Its command runs in its workdir with its env, limits
        and sandbox settings (flags override them); the graph is also saved as TASKDIR/.dgrun/graph.json,
        and the summary names inputs and outputs used but not declared, and declared but unused.
        """,
        options: [
            .value("format", "json|dot|mermaid|text", "Output format (default: json).") {
                (target: inout Discover, text: String) throws(UsageError) in target.format = try choice(text, option: "format")
            },
            .value("output", short: "o", "file", "Write the graph to this file instead of stdout.") { $0.output = $1 },
            .value("linger", "duration", "Trace what the command leaves running this long after it exits (default: 2s; 0: none).") {
                (target: inout Discover, text: String) throws(UsageError) in
                if text == "0" { target.linger = 0; return }
                do throws(SpecError) { target.linger = try DurationText.parse(text) } catch {
                    throw UsageError(message: "--linger: \(error.message)", verb: "discover")
                }
            },
        ] + Exec.verb.options.filter { sharedOptions.contains($0.long) }.map { option in
            OptionSpec<Discover>(long: option.long, short: option.short, valueName: option.valueName, help: option.help) {
                (target: inout Discover, value: String) throws(UsageError) in try option.apply(&target.exec, value)
            }
        })

    static func parse(_ args: ArraySlice<String>) throws(UsageError) -> Discover? {
        var discover = Discover()
        guard let parsed = try verb.parseOrShowHelp(args, into: &discover) else { return nil }
        switch (parsed.positionals.count, parsed.command.isEmpty) {
        case (0, false): discover.exec.command = parsed.command
        case (1, true): discover.taskDirectory = parsed.positionals[0]
        case (0, true): throw UsageError(message: "no task directory or command given; usage: \(verb.usage)", verb: "discover")
        default: throw UsageError(message: "give one task directory or a command after --, not both; usage: \(verb.usage)", verb: "discover")
        }
        return discover
    }

    /// Applies task.toml under the flags: a flag given on the command line wins.
    static func applying(_ task: TaskFile, to base: Exec) -> Exec {
        var exec = base
        exec.command = task.argv
        exec.cwd = exec.cwd ?? task.workingDirectory
        exec.env = task.env.map { "\($0.key)=\($0.value)" } + exec.env
        exec.memory = exec.memory ?? task.memory
        exec.cpus = exec.cpus ?? task.cpus.map { String($0) }
        exec.pids = exec.pids ?? task.pids.map { String($0) }
        exec.timeout = exec.timeout ?? task.timeout
        if let profile = task.profile, exec.profile == "default" { exec.profile = profile }
        exec.net = exec.net ?? task.network
        if task.workdir != "." { exec.writablePaths.append(task.directory) }  // outputs may land anywhere in it
        // Declared inputs elsewhere that the sandbox's private /tmp would hide: shown read-only.
        for input in task.inputs {
            let absolute = Workspace.absolute(input, in: task.directory)
            guard absolute.hasPrefix("/tmp/"), !absolute.hasPrefix(task.directory + "/") else { continue }
            var dir = String(absolute.prefix { !"*?[".contains($0) })
            dir = String(dir[..<(dir.lastIndex(of: "/") ?? dir.endIndex)])
            if FileIO.isDirectory(dir), !exec.readonlyPaths.contains(dir) { exec.readonlyPaths.append(dir) }
        }
        return exec
    }

    /// The outcome of a traced run and the graph built from it (nil when the tracer saw nothing).
    struct TracedRun {
        var outcome: RunOutcome
        var graph: Graph?
        var trace: TraceResult?
    }

    enum TracedResult {
        case success(TracedRun)
        /// dgrun could not start the run: the exit status of the contract and the message.
        case failure(Int32, String)
    }

    /// Runs `exec` (task.toml already applied to it) under the tracer and builds the task's graph.
    /// `attempt`: each OOM-killed attempt that --retry-oom runs again (the last one is returned).
    static func traced(exec: Exec, task: TaskFile?, linger: Double = 0, attempt: (RunOutcome) -> Void = { _ in }) -> TracedResult {
        let outcome: RunOutcome
        var environment: [String] = []
        var directory = ""
        do {
            outcome = try exec.launchRetryingOOM(configure: { spec in
                spec.trace = true
                spec.lingerSeconds = linger
                if exec.net == nil { spec.network = .host }  // discover sees what the task reaches
                environment = spec.environment
                directory = spec.workingDirectory
            }, record: { outcome, willRetry in if willRetry { attempt(outcome) } })
        } catch let error as SpecError {
            return .failure(125, error.message)
        } catch let error as LaunchError {
            return .failure(error.exitCode, error.message)
        } catch {
            return .failure(125, "\(error)")
        }
        guard let trace = outcome.trace else { return .success(TracedRun(outcome: outcome, graph: nil, trace: nil)) }
        var builder = GraphBuilder(taskDirectory: task?.directory ?? directory, argv: exec.command,
                                   environment: environment, name: task?.name)
        var graph = builder.build(trace: trace, outcome: outcome)
        if let task {
            graph.nodes = graph.nodes.map { node in
                var node = node
                if node.kind == .task { node.priority = task.priority }
                return node
            }
        }
        return .success(TracedRun(outcome: outcome, graph: graph, trace: trace))
    }

    func run() -> Int32 {
        var task: TaskFile?
        if let taskDirectory {
            do { task = try TaskFile.load(directory: taskDirectory) } catch {
                return exec.finish(failure: error.message, exitCode: 125)
            }
        }
        let result: TracedRun
        switch Self.traced(exec: task.map { Self.applying($0, to: exec) } ?? exec, task: task, linger: linger) {
        case .failure(let code, let message): return exec.finish(failure: message, exitCode: code)
        case .success(let run): result = run
        }
        let outcome = result.outcome
        if let message = outcome.error { CLI.write(2, "dgrun: \(message)\n") }
        _ = exec.writeReport(outcome)
        guard let graph = result.graph, let trace = result.trace else { return outcome.exitCode }
        if let task { Self.save(graph, in: task) }
        let text: String
        do { text = try GraphRenderer.render(graph, as: format) } catch {
            CLI.write(2, "dgrun: cannot render the graph: \(error)\n")
            return 125
        }
        if let output {
            do { try FileIO.write(output, text, create: true) } catch {
                CLI.write(2, "dgrun: cannot write the graph: \(error)\n")
                return 125
            }
        } else {
            CLI.write(1, text)
        }
        var counts: [String: Int] = [:]
        for node in graph.nodes { counts[node.kind.rawValue, default: 0] += 1 }
        let summary = Graph.Node.Kind.allCases.compactMap { kind in counts[kind.rawValue].map { "\($0) \(kind.rawValue)" } }
        // The supervisor's CPU time against the run's wall time: near 1 would make it the bottleneck.
        let busy = trace.supervisorSeconds > 0
            ? "; the tracer was busy \(trace.supervisorSeconds.fixed(2)) s of the \(outcome.wallSeconds.fixed(2)) s run" : ""
        CLI.write(2, "dgrun: discovered \(graph.nodes.count) nodes (\(summary.joined(separator: ", "))), \(graph.edges.count) edges from \(trace.notifications) traced calls"
                  + (trace.lost > 0 ? " (\(trace.lost) lost: their process died first)" : "") + busy + "\n")
        if let task { CLI.write(2, DeclarationCheck(task: task, graph: graph).summary) }
        if !GraphBuilder.canHash {
            CLI.write(2, "dgrun: file versions are not hashed: the system's libcrypto (libssl3) could not be loaded\n")
        }
        return outcome.exitCode
    }
}

extension Discover {
    /// TASKDIR/.dgrun/graph.json, written beside and renamed so a reader never sees half of it.
    static func save(_ graph: Graph, in task: TaskFile) {
        let dir = task.directory + "/.dgrun"
        mkdir(dir, 0o755)
        do {
            let text = try GraphRenderer.render(graph, as: .json)
            let temporary = dir + "/graph.json.tmp-\(getpid())"
            try FileIO.write(temporary, text, create: true)
            _ = try valueOrErrno("rename", path: dir + "/graph.json") { rename(temporary, dir + "/graph.json") }
        } catch {
            CLI.write(2, "dgrun: warning: cannot save the graph in \(dir): \(error)\n")
        }
    }
}

/// Declared inputs and outputs (task.toml globs) against what the run used inside the task directory.
struct DeclarationCheck {
    var undeclaredInputs: [String] = []
    var unusedInputs: [String] = []
    var undeclaredOutputs: [String] = []
    var unwrittenOutputs: [String] = []

    init(task: TaskFile, graph: Graph) {
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

    var summary: String {
        var lines: [String] = []
        func add(_ title: String, _ items: [String]) {
            guard !items.isEmpty else { return }
            lines.append("dgrun: \(title): " + items.prefix(20).joined(separator: ", ") + (items.count > 20 ? ", ... (\(items.count))" : ""))
        }
        add("inputs used but not declared in task.toml", undeclaredInputs)
        add("inputs declared but not used", unusedInputs)
        add("outputs written but not declared in task.toml", undeclaredOutputs)
        add("outputs declared but not written", unwrittenOutputs)
        return lines.isEmpty ? "dgrun: inputs and outputs match task.toml\n" : lines.joined(separator: "\n") + "\n"
    }
}
