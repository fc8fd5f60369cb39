import Dispatch
import DgrunPlanner
import DgrunSpec
import DgrunStore
import DgrunSystem

/// The action key of a task run: sha256 over a canonical encoding of everything that decides what
/// the run produces. The same key on another machine means the same run (Bazel's action digest).
///
/// Two levels, as ccache's direct mode: the *task key* covers what is known before any file is
/// read (dgrun's schema, the task's place in its workspace, the command, the environment digest,
/// the sandbox settings that change behaviour); the *action key* adds the content of every input
/// of the task's last graph (files by content digest, directories by their entry names, system
/// libraries and programs by content), which includes the outputs of the upstream tasks it reads.
/// A fresh clone has no graph yet: the cache keeps the inputs manifest under the task key, so the
/// clone learns which files to hash, then looks up the action key.
public enum ActionKey {
    /// Changes whenever the encoding or the meaning of a key changes: old entries are then misses.
    public static let schemaVersion = "dgrun.action/1"

    /// Each field length-prefixed, so that no two field lists encode alike.
    public static func digest(_ fields: [String]) -> String {
        // The same bytes as "\(count):" + field + "\n" each, appended in place: a task with
        // 8,000 inputs has 16,000 fields, and two arrays a field were most of a recording's key.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(fields.reduce(0) { $0 + $1.utf8.count + 8 })
        for field in fields {
            var field = field
            field.withUTF8 { utf8 in
                appendDecimal(utf8.count, to: &bytes)
                bytes.append(UInt8(ascii: ":"))
                bytes.append(contentsOf: utf8)
            }
            bytes.append(0x0a)
        }
        let version = ContentHash.version(ofBytes: bytes) ?? ""
        return String(version.dropFirst("sha256:".count))
    }

    static func appendDecimal(_ value: Int, to bytes: inout [UInt8]) {
        var digits: [UInt8] = []
        var v = value
        repeat { digits.append(UInt8(ascii: "0") + UInt8(v % 10)); v /= 10 } while v > 0
        bytes.append(contentsOf: digits.reversed())
    }

    public static func taskKey(argv: [String], environmentDigest: String, sandbox: [String], taskPath: String) -> String {
        digest([schemaVersion, "task", taskPath, "argv"] + argv + ["env", environmentDigest, "sandbox"] + sandbox)
    }

    /// The task's place, the same in every copy: its name in its workspace, or "." alone.
    public static func taskPath(_ relocation: PathRelocation) -> String {
        relocation.workspaceRoot == nil ? "." : relocation.encode(relocation.taskDirectory)
    }

    /// The sandbox settings that change what a run does, paths made relative. `request` is the
    /// caller's request with task.toml applied (not yet the engine's defaults from history: a
    /// clone, which has no history, must compute the same).
    public static func sandboxFields(_ request: RunRequest, relocation: PathRelocation) -> [String] {
        var profile = request.profile ?? "default"
        if profile.contains("/"), let digest = ContentHash.version(of: FileSystem.absolute(profile)) {
            profile = relocation.encode(FileSystem.absolute(profile)) + "@" + digest
        }
        let limits = request.limits
        var fields: [String] = ["profile=" + profile]
        fields.append("network=" + (request.network?.rawValue ?? "auto"))
        fields.append("memory=" + (limits.memoryBytes.map { String($0) } ?? ""))
        fields.append("cpus=" + (limits.cpus.map { String($0) } ?? ""))
        fields.append("pids=" + (limits.pids.map { String($0) } ?? ""))
        fields.append("timeout=" + (request.timeoutSeconds.map { String($0) } ?? ""))
        fields.append("user=" + request.user.rawValue)
        fields.append("userns=" + request.userNamespace.rawValue)
        fields.append("seccomp=" + (request.seccomp ?? ""))
        fields.append("rootfs=" + (request.rootfs.map { relocation.encode($0) } ?? ""))
        fields.append("hostname=" + (request.hostname ?? ""))
        fields.append("clearenv=" + String(request.clearEnvironment))
        fields.append("workdir=" + (request.workingDirectory.map { relocation.encode($0) } ?? ""))
        fields += request.capabilities.sorted().map { "cap=" + $0 }
        for bind in request.binds {
            let target: String = bind.target.map { relocation.encode($0) } ?? ""
            let mode = bind.readonly ? ":ro" : ":rw"
            fields.append("bind=" + relocation.encode(bind.source) + ":" + target + mode)
        }
        fields += request.tmpfs.map { "tmpfs=" + $0 }
        return fields
    }

    /// The dependencies whose content the key covers: files the task read, loaded, executed or
    /// required (not the ones it wrote itself), as the planner checks them.
    public static func inputs(of dependencies: [Dependency]) -> [Dependency] {
        inputIndices(of: dependencies).map { dependencies[$0] }
    }

    /// Where `inputs(of:)`'s dependencies are in `dependencies`: the key reads them in place (a
    /// copy of a dependency retains and releases its five strings, 8,000 times a recording).
    static func inputIndices(of dependencies: [Dependency]) -> [Int] {
        var written: Set<String> = []
        for d in dependencies where d.relation == .writes { written.insert(d.ref) }
        var seen: Set<String> = []
        seen.reserveCapacity(dependencies.count)
        var result: [Int] = []
        result.reserveCapacity(dependencies.count)
        for i in dependencies.indices {
            switch dependencies[i].relation {
            case .reads, .loads, .executes, .requires: break
            default: continue
            }
            guard dependencies[i].traced || dependencies[i].relation == .requires, dependencies[i].kind != "infrastructure",
                  Planner.isHostPath(dependencies[i].ref), !written.contains(dependencies[i].ref),
                  seen.insert(dependencies[i].ref).inserted else { continue }
            result.append(i)
        }
        return result
    }

    public enum Outcome: Sendable, Equatable {
        case key(String, inputs: [(ref: String, version: String)])
        /// An input is not there (or cannot be read): no key, the task runs.
        case missing(String)

        public static func == (a: Outcome, b: Outcome) -> Bool {
            switch (a, b) {
            case (.key(let x, _), .key(let y, _)): return x == y
            case (.missing(let x), .missing(let y)): return x == y
            default: return false
            }
        }
        public var key: String? { if case .key(let k, _) = self { return k } else { return nil } }
    }

    /// The action key over `dependencies`' inputs, each at the version `version` gives (the
    /// recorded one after a run; the current content before one).
    public static func compute(taskKey: String, dependencies: [Dependency], relocation: PathRelocation,
                               version: (Dependency) -> String?) -> Outcome {
        let wanted = inputIndices(of: dependencies)
        var pairs: [(ref: String, version: String)] = []
        pairs.reserveCapacity(wanted.count)
        for i in wanted {
            guard let v = version(dependencies[i]) else { return .missing(dependencies[i].ref) }
            pairs.append((relocation.encode(dependencies[i].ref), Dependency.firstWord(v)))
        }
        pairs = sortedByRef(pairs)
        var fields: [String] = [schemaVersion, "action", taskKey]
        fields.reserveCapacity(3 + 2 * pairs.count)
        for pair in pairs { fields.append(pair.ref); fields.append(pair.version) }
        return .key(digest(fields), inputs: pairs)
    }

    /// `pairs` in the order of their refs as Strings compare them. All-ASCII refs (paths, nearly
    /// always) compare as Strings do by their bytes, so they are sorted as indices by memcmp; a
    /// sort of the tuples themselves by String `<` was a quarter of computing a key over 8,000
    /// inputs (perf). Refs are unique (`inputIndices`), so the order is the same either way.
    static func sortedByRef(_ pairs: [(ref: String, version: String)]) -> [(ref: String, version: String)] {
        var arena: [UInt8] = [], starts: [Int] = []
        arena.reserveCapacity(pairs.count * 64)
        starts.reserveCapacity(pairs.count + 1)
        for pair in pairs {
            starts.append(arena.count)
            arena.append(contentsOf: pair.ref.utf8)
        }
        starts.append(arena.count)
        guard arena.allSatisfy({ $0 < 0x80 }) else { return pairs.sorted { $0.ref < $1.ref } }
        return ByteOrder.sortedIndices(arena: arena, starts: starts).map { pairs[$0] }
    }

    /// The current versions of the inputs of `dependencies`, for `compute`: the recorded one when
    /// a file's stat did not move, else its content through the persistent content-hash cache
    /// (keyed by stat identity, as discover's), all files at once on every CPU. A clone has new
    /// inodes for its own files (hashed: they are small) and the host's for the toolchain (known).
    public static func currentVersions(of dependencies: [Dependency]) -> @Sendable (Dependency) -> String? {
        let wanted = inputs(of: dependencies)
        let cache = ContentHashCache(path: ContentHashCache.defaultPath())
        let now = Clock.now()
        let found = Locked([String: String]())
        DispatchQueue.concurrentPerform(iterations: wanted.count) { i in
            let d = wanted[i]
            var version: String?
            if let recorded = d.fingerprint, let v = d.version, Fingerprints.of(d.ref) == recorded { version = v }
            else { version = cache.version(of: d.ref, now: now) }
            if let version { found.withLock { $0[d.ref] = version } }
        }
        cache.save()
        let table = found.withLock { $0 }
        return { table[$0.ref] }
    }

    /// The current version of an input: the recorded one when its stat did not move, else its
    /// content hashed now (nil when it is gone).
    public static func currentVersion(_ d: Dependency) -> String? {
        if let recorded = d.fingerprint, let version = d.version, Fingerprints.of(d.ref) == recorded { return version }
        return ContentHash.version(of: d.ref)
    }
}
