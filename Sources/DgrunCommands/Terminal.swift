import DgrunEngine
import DgrunPlanner
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The terminal face of the engine's events: one line (or a few) on stderr each, written with one
/// write(2) so that lines of tasks running at once never interleave.
enum Terminal {
    @Sendable static func render(_ event: EngineEvent) { render(event, to: line) }

    /// An event's lines, to `line` (dgrun ci writes them to its own copy of stdout).
    static func render(_ event: EngineEvent, to line: (String) -> Void) {
        switch event {
        case .warning(let text): line(text)
        case .waitingForLock(let task): line("dgrun: \(task): waiting for another dgrun running this task")
        case .abandonedRuns(let task, let count):
            line("dgrun: \(task): \(count) earlier run(s) were interrupted (dgrun was killed); recorded as abandoned")
        case .fetched(let task, let path, let url, let note): line("dgrun: \(task): \(path) ← \(url): \(note)")
        case .waitingForServices(let task, let seconds, let refs):
            line("dgrun: \(task): waiting up to \(DurationText.describe(seconds)) for " + refs.joined(separator: ", "))
        case .upToDate(let task, let checked, let hashed):
            line("dgrun: \(task): up to date (\(checked) dependencies checked, \(hashed) hashed)")
        case .blocked(let task, let blockers):
            line("dgrun: \(task): blocked; nothing was started:\n" + blockers.map { "  - \($0.description)" }.joined(separator: "\n"))
        case .running(let task, let reasons):
            line("dgrun: \(task): running: " + reasons.prefix(3).joined(separator: "; ")
                 + (reasons.count > 3 ? "; and \(reasons.count - 3) more" : ""))
        case .retryingOOM(_, let from, let to, let attempt, let of):
            line("dgrun: OOM-killed at \(ByteSize.describe(from)); retrying with \(ByteSize.describe(to)) (attempt \(attempt) of \(of))")
        case .finished(let task, let outcome):
            if let error = outcome.error { line("dgrun: \(task): \(error)") }
        case .recorded: break
        case .restored(let task, let from, let files, let bytes):
            line("dgrun: \(task): restored from cache (the \(from): \(files) files, \(ByteSize.describe(UInt64(max(0, bytes))))); nothing ran")
        case .notStarted(let task, let because): line("dgrun: \(task): not started: \(because)")
        case .interrupted(let signal):
            line("dgrun: interrupted (signal \(signal)): forwarded to the running tasks; nothing new starts")
        }
    }

    /// The closing line of a workspace run.
    static func summary(_ workspace: WorkspaceResult) {
        var failed: [String] = [], blocked: [String] = [], notStarted: [String] = []
        var ok = 0
        for (task, result) in workspace.results {
            switch result {
            case .upToDate, .restored: ok += 1
            case .ran(let outcome, _): if outcome.exitCode == 0 { ok += 1 } else { failed.append("\(task.name) (exit \(outcome.exitCode))") }
            case .failed(let error):
                line("dgrun: \(task.name): \(error.message)")
                failed.append("\(task.name) (exit \(error.exitStatus))")
            case .blocked: blocked.append(task.name)
            case .notStarted: notStarted.append(task.name)
            }
        }
        var text = "dgrun: workspace \(workspace.root): \(ok) of \(workspace.results.count) tasks complete"
        if !failed.isEmpty { text += "; failed: " + failed.joined(separator: ", ") }
        if !blocked.isEmpty { text += "; blocked: " + blocked.joined(separator: ", ") }
        if !notStarted.isEmpty { text += "; not started: " + notStarted.joined(separator: ", ") }
        line(text)
    }

    static func line(_ text: String) { CLI.write(2, text + "\n") }
}
