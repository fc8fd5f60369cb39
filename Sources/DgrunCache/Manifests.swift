import DgrunStore
import DgrunSystem
import FoundationEssentials

/// What the cache keeps under /ac/KEY. dgrun stores its own JSON documents there, not Bazel's
/// protobuf ActionResult: a Bazel HTTP cache treats /ac/ values as opaque bytes (bazel-remote
/// needs --disable_http_ac_validation for that; nginx with WebDAV, BuildBuddy's HTTP face and
/// plain file servers do not look).

/// Under the action key: the outputs of a successful run, by content.
public struct OutputsManifest: Codable, Sendable, Equatable {
    public static let schema = "dgrun.outputs/1"
    public var schema: String = OutputsManifest.schema
    public var key: String
    public var entries: [Entry]

    public struct Entry: Codable, Sendable, Equatable {
        /// Relative to the task directory, without `.`, `..` or empty components.
        public var path: String
        /// "file" or "link".
        public var type: String
        /// Permission bits (files).
        public var mode: UInt32?
        /// Hex sha256 of the content (files).
        public var digest: String?
        public var size: Int64?
        /// A link's target text, stored as it was, never followed.
        public var target: String?

        public init(path: String, type: String, mode: UInt32? = nil, digest: String? = nil, size: Int64? = nil, target: String? = nil) {
            self.path = path
            self.type = type
            self.mode = mode
            self.digest = digest
            self.size = size
            self.target = target
        }
    }

    public init(key: String, entries: [Entry]) {
        self.key = key
        self.entries = entries
    }

    /// Every entry checked: a path that leaves the task directory, an unknown type or a digest
    /// that is not 64 hex digits makes the whole manifest unusable.
    public func validated() throws(DgrunError) -> OutputsManifest {
        guard schema == Self.schema else { throw DgrunError("cache entry \(key): unknown schema \(schema)") }
        for entry in entries {
            try Self.checkPath(entry.path)
            switch entry.type {
            case "file":
                guard let digest = entry.digest, Self.isDigest(digest), entry.size != nil, entry.mode != nil else {
                    throw DgrunError("cache entry \(key): \(entry.path) has no valid digest, size or mode")
                }
            case "link":
                guard let target = entry.target, !target.isEmpty, !target.contains("\0") else {
                    throw DgrunError("cache entry \(key): the link \(entry.path) has no target")
                }
            default: throw DgrunError("cache entry \(key): \(entry.path) has an unknown type \(entry.type)")
            }
        }
        return self
    }

    /// A manifest path: relative, no `.`/`..`/empty component, no NUL, never dgrun's own state.
    public static func checkPath(_ path: String) throws(DgrunError) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !path.isEmpty, !path.hasPrefix("/"), !path.contains("\0"),
              !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }), parts.first != ".dgrun" else {
            throw DgrunError("cache manifest path \"\(path)\" is refused: it must stay inside the task directory")
        }
    }

    public static func isDigest(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// The manifest's own digest: what the outputs are, for a dependant's key and `cache key`.
    public var digest: String { ActionKey.digest(entries.flatMap { [$0.path, $0.type, $0.digest ?? $0.target ?? ""] }) }
}

/// Under the task key: which dependencies the task's last successful run had (paths relative to
/// the task directory), so that a clone with no state knows what to hash; and its graph (a report).
public struct InputsManifest: Codable, Sendable {
    public static let schema = "dgrun.inputs/1"
    public var schema: String = InputsManifest.schema
    public var taskKey: String
    public var dependencies: [Entry]
    /// The graph of the run (dgrun.graph/1 JSON), as `dgrun graph` shows it; its paths are those
    /// of the machine that ran it.
    public var graph: String?

    public struct Entry: Codable, Sendable {
        public var node: String
        public var kind: String
        public var ref: String
        public var relation: String
        public var version: String?
        public var priority: Int
        public var cost: Int64
        public var traced: Bool
    }

    public init(taskKey: String, dependencies: [Dependency], relocation: PathRelocation, graph: String?) {
        self.taskKey = taskKey
        self.graph = graph
        self.dependencies = dependencies.map {
            Entry(node: relocation.encodeNodeID($0.nodeID), kind: $0.kind, ref: relocation.encode($0.ref), relation: $0.relation.rawValue,
                  version: $0.version, priority: $0.priority, cost: $0.costBytes, traced: $0.traced)
        }
    }

    /// The dependencies at this location (no fingerprints: the planner hashes them next time).
    public func resolved(_ relocation: PathRelocation) -> [Dependency] {
        dependencies.compactMap { e in
            guard let relation = Dependency.Relation(rawValue: e.relation) else { return nil }
            return Dependency(nodeID: relocation.decodeNodeID(e.node), kind: e.kind, ref: relocation.decode(e.ref), relation: relation,
                              version: e.version, priority: e.priority, costBytes: e.cost, traced: e.traced)
        }
    }
}

enum ManifestJSON {
    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(value)).map { Array($0) } ?? []
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) -> T? {
        try? JSONDecoder().decode(type, from: Data(bytes))
    }
}
