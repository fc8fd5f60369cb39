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

    /// The sandbox options discover shares with exec, taken from exec's own table.
    static let sharedOptions: Set<String> = ["profile", "timeout", "cwd", "env", "ro", "rw", "tmpfs", "net", "memory", "cpus", "pids", "limits", "report"]

    static let verb = VerbSpec<Discover>(
        name: "discover",
        usage: "dgrun discover [options] -- CMD [ARGS...]",
        abstract: "Run a command once, traced, and print the graph of what it depends on.",
        discussion: """
        The command runs in the exec sandbox (host network by default, so that what it reaches can
        be seen) under a seccomp user-notification tracer that sees every file, exec and network call
        of every process it starts. Static analysis adds what the executed programs load (ELF
        interpreter and libraries, script interpreters). The graph follows the dgrun.graph/1 schema;
        a summary goes to stderr. Exit status: the command's, as with exec.
        """,
        options: [
            .value("format", "json|dot|mermaid|text", "Output format (default: json).") {
                (target: inout Discover, text: String) throws(UsageError) in target.format = try choice(text, option: "format")
            },
            .value("output", short: "o", "file", "Write the graph to this file instead of stdout.") { $0.output = $1 },
        ] + Exec.verb.options.filter { sharedOptions.contains($0.long) }.map { option in
            OptionSpec<Discover>(long: option.long, short: option.short, valueName: option.valueName, help: option.help) {
                (target: inout Discover, value: String) throws(UsageError) in try option.apply(&target.exec, value)
            }
        })

    static func parse(_ args: ArraySlice<String>) throws(UsageError) -> Discover? {
        var discover = Discover()
        let parsed = try verb.parse(args, into: &discover)
        if parsed.help {
            CLI.write(1, verb.help)
            return nil
        }
        if let first = parsed.positionals.first {
            throw UsageError(message: "task directories (\(first)) are not supported by discover yet; run a command with: \(verb.usage)", verb: "discover")
        }
        guard !parsed.command.isEmpty else { throw UsageError(message: "no command given; usage: \(verb.usage)", verb: "discover") }
        discover.exec.command = parsed.command
        return discover
    }

    func run() -> Int32 {
        let outcome: RunOutcome
        var environment: [String] = []
        var directory = ""
        do {
            outcome = try exec.launch { spec in
                spec.trace = true
                if exec.net == nil { spec.network = .host }  // discover sees what the task reaches
                environment = spec.environment
                directory = spec.workingDirectory
            }
        } catch let error as SpecError {
            return exec.finish(failure: error.message, exitCode: 125)
        } catch let error as LaunchError {
            return exec.finish(failure: error.message, exitCode: error.exitCode)
        } catch {
            return exec.finish(failure: "\(error)", exitCode: 125)
        }
        if let message = outcome.error { CLI.write(2, "dgrun: \(message)\n") }
        _ = exec.writeReport(outcome)
        guard let trace = outcome.trace else { return outcome.exitCode }

        var builder = GraphBuilder(taskDirectory: directory, argv: exec.command, environment: environment)
        let graph = builder.build(trace: trace, outcome: outcome)
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
        CLI.write(2, "dgrun: discovered \(graph.nodes.count) nodes (\(summary.joined(separator: ", "))), \(graph.edges.count) edges from \(trace.notifications) traced calls"
                  + (trace.lost > 0 ? " (\(trace.lost) lost: their process died first)" : "") + "\n")
        return outcome.exitCode
    }
}
