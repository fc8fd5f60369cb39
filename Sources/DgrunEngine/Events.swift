import DgrunSystem
import DgrunPlanner
import DgrunRuntime
import DgrunSpec

/// What the engine reports while it works. It prints nothing: a face renders these (a terminal's
/// lines, CI annotations, an OCI runtime's log).
public enum EngineEvent: Sendable {
    /// Something the user should read that does not stop the run.
    case warning(String)
    case waitingForLock(task: String)
    case abandonedRuns(task: String, count: Int)
    case fetched(task: String, path: String, url: String, note: String)
    case waitingForServices(task: String, seconds: Double, refs: [String])
    case upToDate(task: String, checked: Int, hashed: Int)
    case blocked(task: String, blockers: [Blocker])
    case running(task: String, reasons: [String])
    /// An OOM-killed attempt runs again with more memory.
    case retryingOOM(task: String?, from: UInt64, to: UInt64, attempt: Int, of: Int)
    case finished(task: String, outcome: RunOutcome)
    /// The task's outputs came from the cache (its action key matched): nothing ran.
    case restored(task: String, from: String, files: Int, bytes: Int64)
    /// What the record holds of a task after this run (only with RunRequest.reportRecords: the
    /// declared-versus-used check costs a stat per file the task used in its directory).
    case recorded(task: String, TaskRecordSummary)
    case notStarted(task: String, because: String)
    /// dgrun got a signal: it was forwarded into the running sandboxes and nothing new starts.
    case interrupted(signal: Int32)
}

/// A task's record as a face reports it (dgrun ci): which recorded graph it has now, and the
/// files in its directory it used without task.toml declaring them.
public struct TaskRecordSummary: Sendable, Equatable {
    /// The store's version number of the task's last recorded graph; nil: none recorded yet.
    public var graphVersion: Int64?
    public var undeclaredInputs: [String]
    public var undeclaredOutputs: [String]
    /// The action key of the run the task's state now stands for (the one that ran, was restored,
    /// or is still up to date); nil when there is none (blocked, failed, never ran).
    public var actionKey: String?
    public init(graphVersion: Int64?, undeclaredInputs: [String] = [], undeclaredOutputs: [String] = [], actionKey: String? = nil) {
        self.actionKey = actionKey
        self.graphVersion = graphVersion
        self.undeclaredInputs = undeclaredInputs
        self.undeclaredOutputs = undeclaredOutputs
    }
}

public typealias EventSink = @Sendable (EngineEvent) -> Void

/// What became of one task.
public enum TaskResult: Sendable {
    case upToDate(checked: Int, hashed: Int)
    /// Something it needs is missing or unavailable; nothing was started.
    case blocked([Blocker])
    /// It ran (whatever its exit status), with the record's id.
    case ran(RunOutcome, runID: Int64?)
    /// Its outputs were restored from the cache under its action key instead of running.
    case restored(runID: Int64, from: String)
    /// dgrun itself failed for this task (bad task.toml, store, sandbox setup).
    case failed(DgrunError)
    /// It did not start: a task it depends on did not complete, or dgrun was interrupted.
    case notStarted(String)

    /// Up to date, or ran and exited 0: its dependants may run.
    public var completed: Bool {
        switch self {
        case .upToDate, .restored: return true
        case .ran(let outcome, _): return outcome.exitCode == 0
        default: return false
        }
    }

    /// The exit status of the contract for this task alone.
    public var exitStatus: Int32 {
        switch self {
        case .upToDate, .restored: return 0
        case .blocked, .notStarted: return DgrunExit.blocked
        case .ran(let outcome, _): return outcome.exitCode
        case .failed(let error): return error.exitStatus
        }
    }
}

public enum DgrunExit {
    /// A task was blocked before starting: something it needs is missing or unavailable. Chosen
    /// outside the range tools commonly use (1-2, 124-127, 128+N) so that CI can tell it from the
    /// task's own failure.
    public static let blocked: Int32 = 122
}

/// The tasks of one workspace run, in the workspace's order.
public struct WorkspaceResult: Sendable {
    public var root: String
    public var results: [(task: TaskFile, result: TaskResult)]
    /// Task name → the names of the tasks it reads from, for every task of the run (a face's
    /// picture of the workspace).
    public var producers: [String: [String]]

    public init(root: String, results: [(task: TaskFile, result: TaskResult)], producers: [String: [String]] = [:]) {
        self.root = root
        self.results = results
        self.producers = producers
    }

    /// The first failure's status; else 122 when a task was blocked or not started; else 0.
    public var exitStatus: Int32 {
        if let failed = results.first(where: {
            switch $0.result {
            case .ran(let outcome, _): return outcome.exitCode != 0
            case .failed: return true
            default: return false
            }
        }) { return failed.result.exitStatus }
        return results.allSatisfy { $0.result.completed } ? 0 : DgrunExit.blocked
    }
}

/// `exec DIR`: one task (with what its upstream tasks did first), or a whole workspace.
public enum DirectoryResult: Sendable {
    case task(TaskFile, TaskResult, upstream: WorkspaceResult?)
    case workspace(WorkspaceResult)

    /// A task that did not start because its upstream failed gives the upstream's status.
    public var exitStatus: Int32 {
        switch self {
        case .task(_, .notStarted, let upstream?) where upstream.exitStatus != 0: return upstream.exitStatus
        case .task(_, let result, _): return result.exitStatus
        case .workspace(let workspace): return workspace.exitStatus
        }
    }
}
