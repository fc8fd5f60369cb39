#if canImport(Glibc)
import Glibc
#endif

/// What the store keeps: the current dependencies of each task (what the planner checks), graph
/// versions, execution records and samples. Plain values; Store reads and writes them.

/// The stat identity of a file at the time its version was recorded: when none of these moved, the
/// content is taken as unchanged without hashing it (git's index and ninja's log do the same).
public struct FileFingerprint: Sendable, Equatable, Codable {
    public var size: Int64
    public var mtimeNs: Int64
    public var ctimeNs: Int64
    public var inode: UInt64
    public var device: UInt64

    public init(size: Int64, mtimeNs: Int64, ctimeNs: Int64, inode: UInt64, device: UInt64) {
        self.size = size
        self.mtimeNs = mtimeNs
        self.ctimeNs = ctimeNs
        self.inode = inode
        self.device = device
    }
}

/// One dependency of a task: a node of its graph and how the task relates to it.
public struct Dependency: Sendable, Equatable {
    public enum Relation: String, Sendable, CaseIterable {
        case reads, writes, executes, loads, requires, probes, connects, resolves
        /// Infrastructure the run used (the network reach it needed); not checked, but read back.
        case uses
    }
    public var nodeID: String
    public var kind: String
    /// A canonical path for files; a URI for services (tcp://, unix:, dns:).
    public var ref: String
    public var relation: Relation
    /// sha256:… of the content the task saw or produced; nil when unknown.
    public var version: String?
    public var fingerprint: FileFingerprint?
    public var priority: Int
    /// Bytes for files: cheap checks go first.
    public var costBytes: Int64
    /// Seen by the tracer (not only named by static analysis): only those can block a run.
    public var traced: Bool

    public init(nodeID: String, kind: String, ref: String, relation: Relation, version: String? = nil,
                fingerprint: FileFingerprint? = nil, priority: Int = 0, costBytes: Int64 = 0, traced: Bool = true) {
        self.nodeID = nodeID
        self.kind = kind
        self.ref = ref
        self.relation = relation
        self.version = version
        self.fingerprint = fingerprint
        self.priority = priority
        self.costBytes = costBytes
        self.traced = traced
    }
}

/// The record of one execution attempt of a task.
public struct RunRecord: Sendable, Equatable, Codable {
    public enum Status: String, Sendable, Codable {
        /// Started and not finished yet (or dgrun was killed: see `Store.settleAbandonedRuns`).
        case running
        /// The command ran; `exitCode` says how it ended.
        case finished
        /// The planner refused to start it; `reasons` names what was missing.
        case blocked
        /// dgrun died while the run was in flight (kill -9, power loss).
        case abandoned
        /// dgrun was asked to stop (a signal to it) and stopped the run: its graph is partial,
        /// so the task's dependencies stay those of its last finished run and it is marked stale.
        case interrupted
    }
    public var id: Int64?
    public var taskID: String
    public var status: Status
    public var startedAt: Double
    public var finishedAt: Double?
    public var pid: Int32
    public var argv: [String]
    /// sha256 of the sorted environment: which environment ran, without storing secrets.
    public var environmentDigest: String
    /// Why it ran (or why it was blocked): "input data.csv changed", "forced", "no previous run".
    public var reasons: [String]
    /// The limits applied, as the report's JSON object.
    public var limitsJSON: String
    public var exitCode: Int32?
    public var signal: Int32?
    public var oomKilled: Bool
    public var timedOut: Bool
    public var wallSeconds: Double?
    public var cpuUserSeconds: Double?
    public var cpuSystemSeconds: Double?
    public var memoryPeakBytes: Int64?
    public var pidsPeak: Int64?
    /// path → version of every output the run left behind.
    public var outputs: [String: String]
    /// The report's adjustments list ({t_s, knob, from, to, reason}) as JSON.
    public var adjustmentsJSON: String
    /// The graph version this run recorded, when it recorded one.
    public var graphVersion: Int64?
    /// The action key of the run (the cache's): the same key on another machine means the same run.
    public var actionKey: String?
    /// Set when the outputs were restored from a cache instead of running: "local" or the remote URL.
    public var restoredFrom: String?

    public init(taskID: String, status: Status, startedAt: Double, pid: Int32, argv: [String],
                environmentDigest: String, reasons: [String], limitsJSON: String = "{}") {
        self.taskID = taskID
        self.status = status
        self.startedAt = startedAt
        self.pid = pid
        self.argv = argv
        self.environmentDigest = environmentDigest
        self.reasons = reasons
        self.limitsJSON = limitsJSON
        self.oomKilled = false
        self.timedOut = false
        self.outputs = [:]
        self.adjustmentsJSON = "[]"
    }

    public var succeeded: Bool { status == .finished && exitCode == 0 }
}

/// A task as the store knows it.
public struct TaskState: Sendable, Equatable {
    public var id: String
    public var directory: String
    /// Set when a task this one depends on produced new outputs since this one last ran.
    public var staleReason: String?
    /// The latest graph version, nil before the first recorded run.
    public var graphVersion: Int64?
}

/// A past run as the tuner sees it.
public struct RunUsage: Sendable, Equatable {
    public var id: Int64
    /// Finished with exit status 0 and not OOM-killed: its peak is what the task needs.
    public var succeeded: Bool
    public var memoryPeakBytes: Int64?
    public var wallSeconds: Double?
    public var cpuSeconds: Double?

    public init(id: Int64, succeeded: Bool, memoryPeakBytes: Int64?, wallSeconds: Double?, cpuSeconds: Double?) {
        self.id = id
        self.succeeded = succeeded
        self.memoryPeakBytes = memoryPeakBytes
        self.wallSeconds = wallSeconds
        self.cpuSeconds = cpuSeconds
    }
}

extension Dependency {
    /// A version's first word (the content hash of "sha256:… deb:…"), split by bytes when the
    /// space is followed by ASCII (as a split by Characters would be), else by Characters.
    public static func firstWord(_ version: String) -> String {
        let utf8 = version.utf8
        // memchr over the contiguous bytes, not a walk of the view byte by byte: twice a
        // dependency, 8,000 of them, in a recording (an external file's is "sha256:… deb:…").
        var word: String? = nil, decided = false
        _ = utf8.withContiguousStorageIfAvailable { bytes in
            guard !bytes.isEmpty, let hit = memchr(bytes.baseAddress!, 0x20, bytes.count) else { decided = true; return }
            let space = UnsafeRawPointer(bytes.baseAddress!).distance(to: UnsafeRawPointer(hit))
            guard space + 1 == bytes.count || bytes[space + 1] < 0x80 else { return }  // by Characters, below
            word = String(decoding: UnsafeBufferPointer(rebasing: bytes[..<space]), as: UTF8.self)
            decided = true
        }
        if decided { return word ?? version }
        guard let space = utf8.firstIndex(of: UInt8(ascii: " ")) else { return version }
        let next = utf8.index(after: space)
        guard next == utf8.endIndex || utf8[next] < 0x80 else { return String(version.prefix { $0 != " " }) }
        return String(version[..<space])
    }
}
