import DgrunStore
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// What the planner needs to know about one task besides its recorded dependencies.
public struct PlanInput: Sendable {
    public var taskID: String
    public var dependencies: [Dependency]
    /// The last finished run (any exit status); nil before the first.
    public var lastRun: RunRecord?
    /// Set when a task this one reads from produced new outputs since this one last ran.
    public var staleReason: String?
    public var argv: [String]
    public var environmentDigest: String
    /// ref → the workspace task that produces it: a missing input is provisioned, not a blocker.
    public var producers: [String: String]
    /// Controllers the requested limits need but this host cannot give (from the cgroup driver).
    public var missingControllers: [String]
    public var requestedCPUs: Double?
    public var force: Bool
    /// Whether a run recorded the task's dependencies (a run without a trace did not).
    public var hasRecordedGraph = true
    /// Set when `Planner.filesUnchanged` already found every file dependency as recorded (how
    /// many it checked): `dependencies` then holds only the others (services, names, network).
    public var verifiedFiles: Int?

    public init(taskID: String, dependencies: [Dependency], lastRun: RunRecord?, staleReason: String? = nil,
                argv: [String], environmentDigest: String, producers: [String: String] = [:],
                missingControllers: [String] = [], requestedCPUs: Double? = nil, force: Bool = false) {
        self.taskID = taskID
        self.dependencies = dependencies
        self.lastRun = lastRun
        self.staleReason = staleReason
        self.argv = argv
        self.environmentDigest = environmentDigest
        self.producers = producers
        self.missingControllers = missingControllers
        self.requestedCPUs = requestedCPUs
        self.force = force
    }
}

/// A dependency that moved since the last run.
public struct Change: Sendable, Equatable {
    public var ref: String
    public var relation: Dependency.Relation
    /// "changed", "missing", "deleted", "modified", "appeared", "produced by TASK"
    public var what: String
    public var description: String { "\(relation.rawValue) \(ref): \(what)" }
}

/// Something the task needs that is not there: the run cannot start.
public struct Blocker: Sendable, Equatable {
    public var ref: String
    public var why: String
    public var remedy: String
    public var description: String { "\(ref): \(why) (\(remedy))" }
    public init(ref: String, why: String, remedy: String) { self.ref = ref; self.why = why; self.remedy = remedy }
}

public struct Plan: Sendable {
    public enum Decision: Sendable, Equatable { case upToDate, run, blocked }
    public var decision: Decision
    /// Why it runs: "forced", "no previous run", the changes.
    public var reasons: [String]
    public var changes: [Change]
    public var blockers: [Blocker]
    /// Files whose stat moved but whose content did not: their new fingerprints, to remember.
    public var refreshed: [(nodeID: String, ref: String, relation: Dependency.Relation, fingerprint: FileFingerprint)]
    /// How many dependencies were checked, and how many of them had to be hashed.
    public var checked: Int
    public var hashed: Int
}

/// The planner: checks every recorded dependency of a task against the host as it is now.
/// Pure policy over `PlanEnvironment`, so that it is unit-tested with a fake host.
public struct Planner {
    public var environment: any PlanEnvironment

    public init(environment: any PlanEnvironment) { self.environment = environment }

    /// Paths that are not files of the host: kernel interfaces. (What lived in the sandbox's
    /// private /tmp is left out when the run is recorded.)
    static let ephemeralPrefixes = ["/proc/", "/sys/", "/dev/"]

    public func plan(_ input: PlanInput) -> Plan {
        var plan = Plan(decision: .upToDate, reasons: [], changes: [], blockers: [], refreshed: [], checked: 0, hashed: 0)
        checkAll(input, into: &plan)
        checkResources(input, into: &plan)
        decide(input, &plan)
        return plan
    }

    func checkAll(_ input: PlanInput, into plan: inout Plan) {
        plan.checked += input.verifiedFiles ?? 0
        let deps = input.dependencies
        let written = Set(deps.lazy.filter { $0.relation == .writes }.map(\.ref))
        let files = deps.map { isHostFile($0) && ($0.traced || $0.relation == .requires) && $0.relation != .uses }
        let now = fingerprints(of: deps, where: files)
        // Priority first (higher first), then the cheapest check.
        let ordered = deps.indices.sorted {
            (deps[$0].priority, -deps[$0].costBytes, $1) > (deps[$1].priority, -deps[$1].costBytes, $0)
        }
        for i in ordered {
            let dependency = deps[i]
            guard dependency.traced || dependency.relation == .requires else { continue }
            switch dependency.relation {
            case .reads, .loads, .executes, .requires:
                guard files[i], !written.contains(dependency.ref) else { continue }
                check(input: dependency, now: now[i], producers: input.producers, into: &plan)
            case .writes:
                guard files[i] else { continue }
                check(output: dependency, now: now[i], into: &plan)
            case .probes:
                guard files[i], !written.contains(dependency.ref) else { continue }
                plan.checked += 1
                if now[i] != nil {
                    plan.changes.append(Change(ref: dependency.ref, relation: .probes, what: "appeared (it was absent when the task looked for it)"))
                }
            case .connects, .resolves:
                check(service: dependency, into: &plan)
            case .uses:
                continue
            }
        }
    }

    /// The stat of every file dependency, taken up front on all CPUs: a large task's check is
    /// thousands of stats and little else.
    func fingerprints(of deps: [Dependency], where wanted: [Bool]) -> [FileFingerprint?] {
        let environment = self.environment
        let paths = deps.map(\.ref)
        return Parallel.map(deps.count, workers: deps.count < 1024 ? 1 : DgrunSystem.ProcessInfo.cpuCount) {
            wanted[$0] ? environment.fingerprint(paths[$0]) : nil
        }
    }

    func isHostFile(_ d: Dependency) -> Bool {
        d.kind != "infrastructure" && Self.isHostPath(d.ref.utf8)
    }

    /// Absolute and not a kernel interface; compared as bytes (String.hasPrefix compares
    /// characters, and this runs for every dependency).
    /// The same for a String, from another module (the generic one is not specialised across
    /// modules: ~0.6 µs a path from the action key, 8,000 paths a recording).
    public static func isHostPath(_ path: String) -> Bool {
        var path = path
        return path.withUTF8 { isHostPath($0) }
    }

    static func isHostPath<Bytes: Collection<UInt8>>(_ path: Bytes) -> Bool {
        guard path.first == UInt8(ascii: "/") else { return false }
        return !ephemeralPrefixBytes.contains { path.starts(with: $0) }
    }
    static let ephemeralPrefixBytes = ephemeralPrefixes.map { Array($0.utf8) }

    /// The no-op check's fast path, over the packed file checks of the last recorded run: the
    /// number of files checked when every one `checkAll` would examine is as recorded (stat
    /// only: an input or output whose fingerprint moved, a missing input, or a probed path that
    /// appeared all give nil, and the full check then says what changed and hashes what it must).
    /// Entry by entry the same rules as `checkAll`, so it never finds "unchanged" where it would not.
    public func filesUnchanged(_ checks: FileChecks) -> Int? {
        enum Expect { case input, output, absent }
        // Inputs the task also wrote are not checked as inputs (checkAll's `written`). A task
        // writes few files: a list compared by length first, not a set that hashes every path.
        guard let written = checks.paths(of: .writes) else { return nil }
        func isWritten(_ path: UnsafeRawBufferPointer) -> Bool {
            for w in written where w.count == path.count && (path.count == 0 || memcmp(w.baseAddress!, path.baseAddress!, path.count) == 0) {
                return true
            }
            return false
        }
        // The task directory and the workspace, held open: an entry under one of them is looked
        // up by the rest of its path from there, not walked from / (the kernel walks a path a
        // component at a time; on 5,000 files of a task that is ~45% less system time). Where the
        // ephemeral rule cannot be told from the directory alone, the full path is used.
        let environment = self.environment
        var baseFDs: [Int32] = [-1, -1]
        var baseIsHost: [Bool?] = [nil, nil]
        for base in [FileChecks.Base.task, .workspace] {
            let bytes = checks.directoryBytes(base)
            guard bytes.first == UInt8(ascii: "/"), let host = Self.isHostDirectory(bytes) else { continue }
            baseIsHost[base.rawValue] = host
            guard host else { continue }
            var path = bytes
            path.append(0)
            baseFDs[base.rawValue] = path.withUnsafeBufferPointer {
                $0.withMemoryRebound(to: CChar.self) { environment.openDirectory(cPath: $0.baseAddress!) }
            } ?? -1
        }
        defer { for fd in baseFDs where fd >= 0 { environment.closeDirectory(fd) } }

        var arena = PathArena(capacity: checks.byteCount + 4096)  // the paths to stat, one after another
        defer { arena.deallocate() }
        var starts: [Int] = [], entryBase: [Int8] = []   // -1: a full path
        var expected: [(Expect, FileFingerprint?)] = []
        let estimate = checks.byteCount / 48
        starts.reserveCapacity(estimate)
        entryBase.reserveCapacity(estimate)
        expected.reserveCapacity(estimate)
        var path: [UInt8] = []
        path.reserveCapacity(4096)
        var entries = checks.makeIterator()
        while let entry = entries.next() {
            guard entry.flags.contains(.traced) || entry.relation == .requires,
                  !entry.flags.contains(.infrastructure) else { continue }
            let expect: Expect
            switch entry.relation {
            case .reads, .loads, .executes, .requires: expect = .input
            case .writes: expect = .output
            case .probes: expect = .absent
            case .connects, .resolves, .uses: continue
            }
            if expect != .output, !written.isEmpty, isWritten(entry.storedPath) { continue }
            if let (base, rest) = checks.relative(entry.storedPath), let host = baseIsHost[base.rawValue],
               checks.directoryBytes(base).count + 1 + rest.count < 4096,  // as the full path must fit
               memchr(rest.baseAddress!, 0, rest.count) == nil {
                guard host else { continue }
                // Nothing recorded to compare with: checkAll would hash it.
                if expect != .absent && entry.fingerprint == nil { return nil }
                starts.append(arena.count)
                entryBase.append(baseFDs[base.rawValue] >= 0 ? Int8(base.rawValue) : -1)
                if baseFDs[base.rawValue] < 0 {  // not open: the full path after all
                    checks.directoryBytes(base).withUnsafeBytes { arena.append($0) }
                    arena.append(byte: UInt8(ascii: "/"))
                }
                arena.append(rest)
                arena.append(byte: 0)
            } else {
                guard checks.absolutePath(entry.storedPath, into: &path) else { return nil }
                guard path.withUnsafeBufferPointer({ Self.isHostPath(UnsafeBufferPointer(rebasing: $0.dropLast())) }) else { continue }
                if expect != .absent && entry.fingerprint == nil { return nil }
                starts.append(arena.count)
                entryBase.append(-1)
                path.withUnsafeBytes { arena.append($0) }
            }
            expected.append((expect, entry.fingerprint))
        }
        guard !entries.malformed else { return nil }
        let offsets = starts, expectations = expected, bases = entryBase, fds = baseFDs
        let matches = arena.withBytes { bytes in
            let base = SendablePointer(bytes.baseAddress!)
            return Parallel.map(offsets.count, workers: offsets.count < 1024 ? 1 : DgrunSystem.ProcessInfo.cpuCount) { i -> Bool in
                let now = (base.pointer + offsets[i]).withMemoryRebound(to: CChar.self, capacity: 1) { name in
                    bases[i] >= 0 ? environment.fingerprint(directory: fds[Int(bases[i])], name: name) : environment.fingerprint(cPath: name)
                }
                switch expectations[i] {
                case (.absent, _): return now == nil
                case (.input, let before): return now != nil && now == before
                case (.output, let before): return now.map { $0 == before || $0.isDirectory } ?? false
                }
            }
        }
        return matches.allSatisfy { $0 } ? offsets.count : nil
    }

    /// Whether every path under `directory` (absolute, bytes) is a host path by `isHostPath`;
    /// nil when that depends on the rest of the path (an ephemeral prefix reaches below it).
    static func isHostDirectory(_ directory: [UInt8]) -> Bool? {
        let under = directory + [UInt8(ascii: "/")]
        for prefix in ephemeralPrefixBytes {
            if prefix.count <= under.count {
                if under.starts(with: prefix) { return false }
            } else if prefix.starts(with: under) {
                return nil
            }
        }
        return true
    }

    func check(input d: Dependency, now: FileFingerprint?, producers: [String: String], into plan: inout Plan) {
        plan.checked += 1
        guard let now else {
            if let producer = producers[d.ref] {
                plan.changes.append(Change(ref: d.ref, relation: d.relation, what: "missing; task \(producer) produces it"))
            } else {
                plan.blockers.append(Blocker(ref: d.ref, why: "missing (the task \(d.relation.rawValue) it)",
                                             remedy: "restore it, or re-run `dgrun discover` if the task no longer needs it"))
            }
            return
        }
        if let before = d.fingerprint, before == now { return }
        // A file's version is its content's hash; a listed directory's, that of its entry names.
        plan.hashed += 1
        let version = environment.contentVersion(d.ref)
        if let version, let recorded = d.version, recorded.hasPrefix(version) {
            plan.refreshed.append((d.nodeID, d.ref, d.relation, now))
        } else {
            let what = d.version == nil ? "version unknown" : now.isDirectory ? "entries changed" : "changed"
            plan.changes.append(Change(ref: d.ref, relation: d.relation, what: what))
        }
    }

    func check(output d: Dependency, now: FileFingerprint?, into plan: inout Plan) {
        plan.checked += 1
        guard let now else {
            plan.changes.append(Change(ref: d.ref, relation: .writes, what: "deleted since the task wrote it"))
            return
        }
        if let before = d.fingerprint, before == now { return }
        if now.isDirectory { return }
        plan.hashed += 1
        if let version = environment.outputVersion(d.ref), let recorded = d.version, recorded.hasPrefix(version) {
            plan.refreshed.append((d.nodeID, d.ref, d.relation, now))
        } else {
            plan.changes.append(Change(ref: d.ref, relation: .writes, what: "modified since the task wrote it"))
        }
    }

    func check(service d: Dependency, into plan: inout Plan) {
        // UDP has no handshake to test; a DNS server's use is checked through the names it resolved.
        guard d.ref.hasPrefix("tcp://") || d.ref.hasPrefix("unix:") || d.ref.hasPrefix("dns:") else { return }
        plan.checked += 1
        if let failure = environment.unreachable(d.ref) {
            let remedy = d.ref.hasPrefix("dns:") ? "check the resolver, or run offline with a cached copy"
                                                 : "start the service, or set a wait bound: [services] wait = \"30s\" in task.toml"
            plan.blockers.append(Blocker(ref: d.ref, why: "unavailable: \(failure)", remedy: remedy))
        }
    }

    func checkResources(_ input: PlanInput, into plan: inout Plan) {
        for controller in input.missingControllers {
            plan.blockers.append(Blocker(ref: "cgroup:\(controller)", why: "the \(controller) controller is not available to dgrun here",
                                         remedy: "run as root or in a delegated cgroup, or pass --limits best-effort"))
        }
        if let peak = input.lastRun?.memoryPeakBytes, let available = environment.memoryAvailableBytes(), available < peak {
            plan.blockers.append(Blocker(ref: "host:memory",
                                         why: "the last run peaked at \(peak >> 20) MiB and only \(available >> 20) MiB is available",
                                         remedy: "free memory or wait for other jobs; --force does not override this"))
        }
        if let cpus = input.requestedCPUs, cpus > Double(environment.cpuCount()) {
            plan.blockers.append(Blocker(ref: "host:cpu", why: "the task asks for \(cpus) CPUs and the host has \(environment.cpuCount())",
                                         remedy: "lower limits.cpus"))
        }
    }

    func decide(_ input: PlanInput, _ plan: inout Plan) {
        if !plan.blockers.isEmpty {
            plan.decision = .blocked
            plan.reasons = plan.blockers.map(\.description)
            return
        }
        var reasons: [String] = []
        if input.force { reasons.append("forced (--force)") }
        if input.lastRun != nil && !input.hasRecordedGraph {
            reasons.append("the last run recorded no dependencies")
        }
        if let last = input.lastRun {
            if last.exitCode != 0 || last.signal != nil {
                reasons.append("the last run failed (exit status \(last.exitCode.map(String.init) ?? "unknown"))")
            }
            if last.argv != input.argv { reasons.append("the command changed") }
            if last.environmentDigest != input.environmentDigest { reasons.append("the environment changed") }
        } else {
            reasons.append("no previous run")
        }
        if let stale = input.staleReason { reasons.append(stale) }
        reasons += plan.changes.map(\.description)
        plan.reasons = reasons
        plan.decision = reasons.isEmpty ? .upToDate : .run
    }
}

/// The host as the planner sees it; `HostEnvironment` is the real one.
public protocol PlanEnvironment: Sendable {
    /// nil when the path does not exist.
    func fingerprint(_ path: String) -> FileFingerprint?
    /// The same for a NUL-terminated path (the no-op check's fast path makes no String).
    func fingerprint(cPath: UnsafePointer<CChar>) -> FileFingerprint?
    /// A directory the no-op check stats many names in, held open (nil: it stats full paths).
    /// A kernel walks a path component by component: from an open directory a name is one
    /// lookup, and stat'ing 5,000 files of a task by name takes ~45% less system time.
    func openDirectory(cPath: UnsafePointer<CChar>) -> Int32?
    /// `name` in a directory from `openDirectory`, as `fingerprint(cPath:)` of the full path.
    func fingerprint(directory: Int32, name: UnsafePointer<CChar>) -> FileFingerprint?
    func closeDirectory(_ fd: Int32)
    /// sha256:… of a regular file's content; nil when it cannot be read.
    func contentVersion(_ path: String) -> String?
    /// The version of a file the task wrote (a link is its target text, not followed).
    func outputVersion(_ path: String) -> String?
    /// nil when reachable; otherwise why not.
    func unreachable(_ uri: String) -> String?
    func memoryAvailableBytes() -> Int64?
    func cpuCount() -> Int
}

extension PlanEnvironment {
    public func outputVersion(_ path: String) -> String? { contentVersion(path) }
    public func fingerprint(cPath: UnsafePointer<CChar>) -> FileFingerprint? { fingerprint(String(cString: cPath)) }
    public func openDirectory(cPath: UnsafePointer<CChar>) -> Int32? { nil }
    public func fingerprint(directory: Int32, name: UnsafePointer<CChar>) -> FileFingerprint? { nil }
    public func closeDirectory(_ fd: Int32) {}
}

extension FileFingerprint {
    /// Directories are recorded with size -1: their content is their entries, seen through mtime.
    public var isDirectory: Bool { size == -1 }
}

/// The no-op check's paths, NUL-terminated, one after another, copied in with memcpy: an array's
/// append(contentsOf:) of raw bytes cost ~80 instructions a path (5,000 paths: 0.4 M).
struct PathArena {
    private var storage: UnsafeMutableRawBufferPointer
    private(set) var count = 0

    init(capacity: Int) { storage = .allocate(byteCount: max(capacity, 16), alignment: 1) }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        reserve(bytes.count)
        if let from = bytes.baseAddress { memcpy(storage.baseAddress! + count, from, bytes.count) }
        count += bytes.count
    }

    mutating func append(byte: UInt8) {
        reserve(1)
        storage[count] = byte
        count += 1
    }

    private mutating func reserve(_ more: Int) {
        guard count + more > storage.count else { return }
        let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: max(storage.count * 2, count + more), alignment: 1)
        memcpy(grown.baseAddress!, storage.baseAddress!, count)
        storage.deallocate()
        storage = grown
    }

    func withBytes<T>(_ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
        body(UnsafeBufferPointer(start: storage.baseAddress!.assumingMemoryBound(to: UInt8.self), count: count))
    }

    func deallocate() { storage.deallocate() }
}

/// Read-only bytes shared with concurrentPerform's threads (alive for the whole call).
struct SendablePointer: @unchecked Sendable {
    let pointer: UnsafePointer<UInt8>
    init(_ pointer: UnsafePointer<UInt8>) { self.pointer = pointer }
}

