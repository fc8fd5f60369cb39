import DgrunEngine
import DgrunPlanner
import DgrunRuntime
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// What `dgrun ci` reports of one run, whatever the CI: the engine's typed results, with what only
/// its events carry (why each task ran, its record). Every renderer and report file reads this.
struct CIReport: Sendable {
    enum Outcome: String, Sendable, CaseIterable {
        // "restored": the task's outputs came from the cache under its action key; nothing ran.
        case failed, blocked, notStarted = "not started", ran, restored, upToDate = "up to date"

        /// Worst first: CI shows only about ten annotations of each kind.
        var rank: Int { Self.allCases.firstIndex(of: self)! }
        var passed: Bool { self == .ran || self == .restored || self == .upToDate }
    }

    struct Task: Sendable {
        var name: String
        var directory: String
        var outcome: Outcome
        /// The task's exit status under the exec contract (0 up to date, 122 blocked, its own...).
        var exitStatus: Int32
        /// Why it ran (the planner's reasons), or why it was up to date.
        var reasons: [String] = []
        var blockers: [Blocker] = []
        /// dgrun's own error, the reason it did not start, or the run's error (not found...).
        var message: String?
        var signal: Int32?
        var timedOut = false
        var oomKilled = false
        var wallSeconds: Double?
        var cpuSeconds: Double?
        var memoryPeakBytes: UInt64?
        var limitChanges: [String] = []
        var log: String?
        var logTail: [String] = []
        var undeclaredInputs: [String] = []
        var undeclaredOutputs: [String] = []
        var producers: [String] = []
        var graphVersion: Int64?
        /// The action key its state stands for (issue 12), when it has one.
        var actionKey: String?

        init(name: String, directory: String, outcome: Outcome, exitStatus: Int32) {
            self.name = name
            self.directory = directory
            self.outcome = outcome
            self.exitStatus = exitStatus
        }

        /// One line on why it ended as it did.
        var headline: String {
            switch outcome {
            case .upToDate: return "up to date"
            case .restored: return "restored"
            case .ran: return "ran (exit 0)"
            case .failed:
                if let message, wallSeconds == nil { return "dgrun failed (exit \(exitStatus)): \(message)" }
                var text = "failed with exit status \(exitStatus)"
                if timedOut { text += " (timed out)" } else if oomKilled { text += " (killed: out of memory)" }
                else if let signal { text += " (killed by signal \(signal))" }
                if let message { text += ": \(message)" }
                return text
            case .blocked: return "blocked by \(blockers.count) missing or unavailable dependenc\(blockers.count == 1 ? "y" : "ies"); not started"
            case .notStarted: return "not started: \(message ?? "a task it depends on did not complete")"
            }
        }

        /// Why it ran, in one line (the summary's column).
        var why: String {
            switch outcome {
            case .blocked: return blockers.map { "\($0.ref): \($0.why)" }.joined(separator: "; ")
            case .notStarted: return message ?? ""
            default:
                return reasons.prefix(3).joined(separator: "; ") + (reasons.count > 3 ? "; and \(reasons.count - 3) more" : "")
            }
        }
    }

    /// The workspace's name (the JUnit classname): the directory of the workspace, or of the task.
    var name: String
    var root: String
    var tasks: [Task]
    var layers: [SandboxLayer] = []
    var required: [SandboxLayer.Name] = []
    var exitStatus: Int32
    /// Set when dgrun failed before any task (exit 125): a required layer missing, a bad task.toml.
    var error: String?

    func count(_ outcome: Outcome) -> Int { tasks.filter { $0.outcome == outcome }.count }

    /// Worst first, then in the workspace's order.
    var worstFirst: [Task] {
        tasks.enumerated().sorted { ($0.element.outcome.rank, $0.offset) < ($1.element.outcome.rank, $1.offset) }.map(\.element)
    }

    /// A key for the CI's own cache (actions/cache, GitLab `cache:key`): sha256 of the workspace's
    /// task names and each task's action key (issue 12: its command, environment, sandbox and the
    /// content of its inputs). The same key on another machine means the same results; a task
    /// without a key (blocked, failed, never run) counts as "-", so the key then moves as well.
    var cacheKey: String {
        let lines = tasks.map { "\($0.name)\t\($0.actionKey ?? "-")" }.sorted()
        // Not the workspace's directory name: a clone under another name is the same work.
        let text = "dgrun-ci-cache-1\n" + lines.joined(separator: "\n")
        return ContentHash.version(ofBytes: Array(text.utf8)) ?? "fnv64:" + ShortHash.hex(text)
    }

    /// The layers that were not active, for the annotation and the summary.
    var inactiveLayers: [SandboxLayer] { layers.filter { $0.state != .active } }
}

/// Builds a CIReport from the engine's events (on any task's thread) and its result.
final class CICollector: Sendable {
    private struct Seen {
        var reasons: [String: [String]] = [:]
        var records: [String: TaskRecordSummary] = [:]
        var upToDate: [String: Int] = [:]
        var warnings: [String] = []
    }
    private let seen = Locked(Seen())

    func note(_ event: EngineEvent) {
        seen.withLock { seen in
            switch event {
            case .running(let task, let reasons): seen.reasons[task] = reasons
            case .recorded(let task, let summary): seen.records[task] = summary
            case .upToDate(let task, let checked, _): seen.upToDate[task] = checked
            case .restored(let task, let from, let files, _): seen.reasons[task] = ["restored from the \(from) (\(files) files): its action key matched; nothing ran"]
            case .warning(let text): seen.warnings.append(text)
            default: break
            }
        }
    }

    var warnings: [String] { seen.withLock { $0.warnings } }

    /// The tasks of a result, in the workspace's order (a task's upstream first).
    func tasks(of result: DirectoryResult, logTailLines: Int) -> [CIReport.Task] {
        let seen = seen.withLock { $0 }
        var pairs: [(TaskFile, TaskResult)] = []
        var producers: [String: [String]] = [:]
        switch result {
        case .task(let task, let taskResult, let upstream):
            pairs = (upstream?.results.map { ($0.task, $0.result) } ?? []) + [(task, taskResult)]
            producers = upstream?.producers ?? [:]
        case .workspace(let workspace):
            pairs = workspace.results.map { ($0.task, $0.result) }
            producers = workspace.producers
        }
        return pairs.map { task, result in
            var item = Self.task(name: task.name, directory: task.directory, result, logTailLines: logTailLines)
            if item.outcome == .upToDate, let checked = seen.upToDate[task.name] {
                item.reasons = ["nothing it used changed (\(checked) dependencies checked)"]
            } else if let reasons = seen.reasons[task.name] {
                item.reasons = reasons
            }
            if let record = seen.records[task.name] {
                item.graphVersion = record.graphVersion
                item.actionKey = record.actionKey
                item.undeclaredInputs = record.undeclaredInputs
                item.undeclaredOutputs = record.undeclaredOutputs
            }
            var seenNames: Set<String> = []
            item.producers = (producers[task.name] ?? []).filter { seenNames.insert($0).inserted }
            return item
        }
    }

    func reasons(of task: String) -> [String] { seen.withLock { $0.reasons[task] ?? [] } }

    static func task(name: String, directory: String, _ result: TaskResult, logTailLines: Int) -> CIReport.Task {
        switch result {
        case .upToDate:
            return CIReport.Task(name: name, directory: directory, outcome: .upToDate, exitStatus: 0)
        case .restored(_, let from):
            var item = CIReport.Task(name: name, directory: directory, outcome: .restored, exitStatus: 0)
            item.message = "restored from the \(from)"
            return item
        case .blocked(let blockers):
            var item = CIReport.Task(name: name, directory: directory, outcome: .blocked, exitStatus: result.exitStatus)
            item.blockers = blockers
            return item
        case .notStarted(let because):
            var item = CIReport.Task(name: name, directory: directory, outcome: .notStarted, exitStatus: result.exitStatus)
            item.message = because
            return item
        case .failed(let error):
            var item = CIReport.Task(name: name, directory: directory, outcome: .failed, exitStatus: error.exitStatus)
            item.message = error.message
            return item
        case .ran(let outcome, _):
            var item = CIReport.Task(name: name, directory: directory, outcome: outcome.exitCode == 0 ? .ran : .failed,
                                     exitStatus: outcome.exitCode)
            item.message = outcome.error
            item.signal = outcome.signal
            item.timedOut = outcome.timedOut
            item.oomKilled = outcome.oomKilled
            item.wallSeconds = outcome.wallSeconds
            item.cpuSeconds = outcome.cpuUserSeconds + outcome.cpuSystemSeconds
            item.memoryPeakBytes = outcome.memoryPeakBytes
            item.limitChanges = outcome.adjustments.map { "\($0.knob) \($0.from)→\($0.to)" }
            item.log = outcome.log
            if let log = outcome.log { item.logTail = LogTail.lines(of: log, count: logTailLines) }
            return item
        }
    }
}

/// The end of a task's log, read from the end of the file (a log can be large).
enum LogTail {
    static let window = 64 << 10

    static func lines(of path: String, count: Int) -> [String] {
        guard count > 0, let bytes = tail(of: path, bytes: window) else { return [] }
        var lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return Array(lines.suffix(count))
    }

    /// The last `bytes` bytes of a file (all of a smaller one); nil when it cannot be read.
    static func tail(of path: String, bytes: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        guard size >= 0 else { return nil }
        let start = max(0, Int(size) - bytes)
        var buffer = [UInt8](repeating: 0, count: Int(size) - start)
        var done = 0
        while done < buffer.count {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(start + done)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            done += n
        }
        return Array(buffer.prefix(done))
    }
}
