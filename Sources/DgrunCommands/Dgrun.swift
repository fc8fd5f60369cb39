import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The `dgrun` command: verbs and top-level flags. Exit status 125 for any usage error.
public enum CLI {
    public static let version = "0.1.0"

    static let overview = """
    OVERVIEW: A Linux sandbox runtime for builds, tests and data jobs.

    USAGE: dgrun <command> [options]

    COMMANDS:
      exec      Run a command in a sandbox with enforced limits.
      discover  Run a command once, traced, and print the graph of what it depends on.
      ci        Run a task or a workspace as a CI step: grouped logs, annotations, summary, JUnit.
      status    Show what changed, is missing or unavailable since each task's last run.
      explain   Say why the next exec of a task would run.
      history   List the recorded runs of a task or workspace.
      graph     Print a task's recorded graph (or a workspace's tasks) with current states.
      cache     A task's action key; the local output cache's size (stats) and eviction (prune).

    OPTIONS:
      --version   Show the version.
      -h, --help  Show this help; 'dgrun <command> --help' for a command's.
    """

    /// Runs dgrun with `arguments` (without the program name); returns the exit status.
    public static func main(_ arguments: [String]) -> Int32 {
        guard let verb = arguments.first else {
            write(2, overview + "\n")
            return 125
        }
        do throws(DgrunError) {
            switch verb {
            case "exec":
                guard let exec = try Exec.parse(arguments.dropFirst()) else { return 0 }
                return exec.run()
            case "ci":
                guard let ci = try CI.parse(arguments.dropFirst()) else { return 0 }
                return ci.run()
            case "discover":
                guard let discover = try Discover.parse(arguments.dropFirst()) else { return 0 }
                return discover.run()
            case "status", "explain", "history", "graph":
                guard let query = try StateQuery.parse(StateQuery.Verb(rawValue: verb)!, arguments.dropFirst()) else { return 0 }
                return query.run()
            case "cache":
                guard let cache = try CacheVerb.parse(arguments.dropFirst()) else { return 0 }
                return cache.run()
            case "--help", "-h", "help":
                write(1, overview + "\n")
                return 0
            case "--version":
                write(1, version + "\n")
                return 0
            default:
                throw DgrunError.usage("unknown command '\(verb)'; commands: exec, discover, ci, status, explain, history, graph, cache (see dgrun --help)")
            }
        } catch {
            let hint = error.verb.map { "\nSee 'dgrun \($0) --help'." } ?? ""
            write(2, "dgrun: \(error.message)\(hint)\n")
            return 125
        }
    }

    static func write(_ fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { write(fd, $0) }
    }

    /// Best effort: a closed stdout or stderr ends what is written, not dgrun.
    static func write(_ fd: Int32, _ bytes: UnsafeBufferPointer<UInt8>) {
        try? FileSystem.writeAll(fd, UnsafeRawBufferPointer(bytes), path: "standard output or error")
    }
}
