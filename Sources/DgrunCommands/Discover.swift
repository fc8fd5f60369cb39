import DgrunEngine
import DgrunGraph
import DgrunRecord
import DgrunRuntime
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// `dgrun discover`: options → request → engine → render the graph → exit status.
struct Discover {
    var exec = Exec()
    var format: GraphFormat = .json
    var output: PinnedOutput?
    var taskDirectory: String?
    /// How long the processes the command leaves behind (daemons) are traced after it exits.
    var linger = 2.0

    /// The sandbox options discover shares with exec, taken from exec's own table.
    static let sharedOptions: Set<String> = ["profile", "timeout", "cwd", "env", "ro", "rw", "tmpfs", "net", "memory", "cpus", "pids",
                                             "limits", "report", "seccomp", "cap-add", "hostname", "user", "userns", "stop-timeout", "clear-env", "retry-oom"]

    static let verb = VerbSpec<Discover>(
        name: "discover",
        usage: "dgrun discover [options] (TASKDIR | -- CMD [ARGS...])",
        abstract: "Run a command once, traced, and print the graph of what it depends on.",
        discussion: """
        The command runs in the exec sandbox (host network by default, so that what it reaches can
        be seen) under a seccomp user-notification tracer that sees every file, exec and network call
        of every process it starts. Static analysis adds what the executed programs load (ELF
        interpreter and libraries, script interpreters). The graph follows the dgrun.graph/1 schema;
        a summary goes to stderr. When the graph goes to stdout, the command's own stdout goes to
        stderr, so that stdout is only the graph (`discover --format json ... > graph.json`); with
        -o FILE it stays on stdout. Exit status: the command's, as with exec.

        TASKDIR: a directory with a task.toml. Its command runs in its workdir with its env, limits
        and sandbox settings (flags override them); the graph is also saved as TASKDIR/.dgrun/graph.json,
        and the summary names inputs and outputs used but not declared, and declared but unused.
        """,
        options: [
            .value("format", "json|dot|mermaid|text", "Output format (default: json).") {
                (target: inout Discover, text: String) throws(DgrunError) in target.format = try choice(text, option: "format")
            },
            .value("output", short: "o", "file", "Write the graph to this file instead of stdout.") { $0.output = PinnedOutput($1) },
            .value("linger", "duration", "Trace what the command leaves running this long after it exits (default: 2s; 0: none).") {
                (target: inout Discover, text: String) throws(DgrunError) in
                if text == "0" { target.linger = 0; return }
                target.linger = try Exec.option("linger") { () throws(DgrunError) in try DurationText.parse(text) }
            },
        ] + Exec.sandboxOptions.filter { sharedOptions.contains($0.long) }.map { option in
            OptionSpec<Discover>(long: option.long, short: option.short, valueName: option.valueName, help: option.help) {
                (target: inout Discover, value: String) throws(DgrunError) in try option.apply(&target.exec, value)
            }
        })

    static func parse(_ args: ArraySlice<String>) throws(DgrunError) -> Discover? {
        var discover = Discover()
        guard let parsed = try verb.parseOrShowHelp(args, into: &discover) else { return nil }
        switch (parsed.positionals.count, parsed.command.isEmpty) {
        case (0, false): discover.exec.request.command = parsed.command
        case (1, true): discover.taskDirectory = parsed.positionals[0]
        case (0, true): throw DgrunError.usage("no task directory or command given; usage: \(verb.usage)", verb: "discover")
        default: throw DgrunError.usage("give one task directory or a command after --, not both; usage: \(verb.usage)", verb: "discover")
        }
        return discover
    }

    func run() -> Int32 {
        var request = exec.request
        request.lingerSeconds = linger
        // The graph owns stdout when it is printed there: the task's output goes to stderr.
        request.stdoutToStderr = output == nil
        let discovery: Engine.Discovery
        do throws(DgrunError) {
            discovery = try Engine.forHost(sink: Terminal.render).discover(request, taskDirectory: taskDirectory)
        } catch {
            return exec.finish(error)
        }
        // Left to the process's exit: freeing a large graph and its trace object by object
        // (8,000 nodes and 9,000 events, their strings) took ~8 ms the exit does not need.
        defer { _ = Unmanaged.passRetained(KeptUntilExit(discovery)) }
        let outcome = discovery.outcome
        if let message = outcome.error { Terminal.line("dgrun: \(message)") }
        if let warning = discovery.warning { Terminal.line(warning) }
        _ = exec.writeReport(outcome)
        guard let graph = discovery.graph, let trace = discovery.trace else { return outcome.exitCode }
        // Written from the renderer's buffer: a large graph's JSON is megabytes.
        var writeError: SystemError?
        do {
            try GraphRenderer.withBytes(graph, as: format) { bytes in
                guard let output else { return CLI.write(1, bytes.assumingMemoryBound(to: UInt8.self)) }
                do throws(SystemError) { try output.write(bytes) } catch { writeError = error }
            }
        } catch {
            Terminal.line("dgrun: cannot render the graph: \(error)")
            return 125
        }
        if let writeError {
            Terminal.line("dgrun: cannot write the graph: \(writeError)")
            return 125
        }
        // Counted by kind without copying each node (thousands) or hashing its kind's name.
        let kinds = Graph.Node.Kind.allCases
        var counts = [Int](repeating: 0, count: kinds.count)
        for i in graph.nodes.indices { counts[kinds.firstIndex(of: graph.nodes[i].kind)!] += 1 }
        let summary = kinds.enumerated().compactMap { i, kind in counts[i] > 0 ? "\(counts[i]) \(kind.rawValue)" : nil }
        // The supervisor's CPU time against the run's wall time: near 1 would make it the bottleneck.
        let busy = trace.supervisorSeconds > 0
            ? "; the tracer was busy \(trace.supervisorSeconds.fixed(3)) s of the \(outcome.wallSeconds.fixed(3)) s run" : ""
        Terminal.line("dgrun: discovered \(graph.nodes.count) nodes (\(summary.joined(separator: ", "))), \(graph.edges.count) edges from \(trace.notifications) traced calls"
                      + (trace.untrapped > 0 ? " (\(trace.untrapped) without a trap)" : "")
                      + (trace.lost > 0 ? " (\(trace.lost) lost: their process died first)" : "") + busy)
        if let task = discovery.task { CLI.write(2, Self.summary(DeclarationCheck(task: task, graph: graph))) }
        if GraphBuilder.hashingWasUnavailable {
            Terminal.line("dgrun: file versions are not hashed: the system's libcrypto (libssl3) could not be loaded")
        }
        return outcome.exitCode
    }

    static func summary(_ check: DeclarationCheck) -> String {
        var lines: [String] = []
        func add(_ title: String, _ items: [String]) {
            guard !items.isEmpty else { return }
            lines.append("dgrun: \(title): " + items.prefix(20).joined(separator: ", ") + (items.count > 20 ? ", ... (\(items.count))" : ""))
        }
        add("inputs used but not declared in task.toml", check.undeclaredInputs)
        add("inputs declared but not used", check.unusedInputs)
        add("outputs written but not declared in task.toml", check.undeclaredOutputs)
        add("outputs declared but not written", check.unwrittenOutputs)
        return lines.isEmpty ? "dgrun: inputs and outputs match task.toml\n" : lines.joined(separator: "\n") + "\n"
    }
}

/// A value never released: what the process is about to exit with anyway.
private final class KeptUntilExit<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
