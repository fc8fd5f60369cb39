#if canImport(Glibc)
import Glibc
#endif

/// The dependency graph of a task: the `dgrun.graph/1` contract of the design notes.
public struct Graph: Sendable, Codable {
    public struct TaskInfo: Sendable, Codable {
        public var id: String
        public var dir: String
        public var argv: [String]
        public init(id: String, dir: String, argv: [String]) { self.id = id; self.dir = dir; self.argv = argv }
    }

    public struct Node: Sendable, Codable, Equatable {
        public enum Kind: String, Sendable, Codable, CaseIterable { case task, data, code, library, service, infrastructure }
        public var id: String
        public var kind: Kind
        public var ref: String
        public var version: String?
        /// available, unavailable, loading or error
        public var state: String
        /// internal (in the task directory or produced by the task) or external
        public var ownership: String
        public var cost: [String: Double]
        public var priority: Int
        public var evidence: [String]
        /// `dgrun graph`: how the node moved since the run that recorded it (absent when it did not).
        public var change: String? = nil

        public init(id: String, kind: Kind, ref: String, version: String?, state: String, ownership: String,
                    cost: [String: Double], priority: Int, evidence: [String]) {
            self.id = id
            self.kind = kind
            self.ref = ref
            self.version = version
            self.state = state
            self.ownership = ownership
            self.cost = cost
            self.priority = priority
            self.evidence = evidence
        }

        enum CodingKeys: String, CodingKey { case id, kind, ref, version, state, ownership, cost, priority, evidence, change }
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(kind, forKey: .kind)
            try c.encode(ref, forKey: .ref)
            try c.encode(version, forKey: .version)
            try c.encode(state, forKey: .state)
            try c.encode(ownership, forKey: .ownership)
            try c.encode(cost, forKey: .cost)
            try c.encode(priority, forKey: .priority)
            try c.encode(evidence, forKey: .evidence)
            try c.encodeIfPresent(change, forKey: .change)
        }
    }

    public struct Edge: Sendable, Codable, Hashable {
        public var from: String
        public var to: String
        /// reads, writes, executes, loads, requires, probes, connects, resolves, uses
        public var relation: String
        public init(from: String, to: String, relation: String) { self.from = from; self.to = to; self.relation = relation }
    }

    public var schema = "dgrun.graph/1"
    public var task: TaskInfo
    public var nodes: [Node]
    public var edges: [Edge]
    /// By node index: the builder's stat(2) of each file node after the run (following links, as
    /// the node's canonical ref does), nil where it took none; empty for a graph read back from
    /// JSON. Not part of the JSON: recording the run reads it rather than stat every file again
    /// (8,000 stats of a pipeline's headers).
    public var fileStats: [stat?] = []

    enum CodingKeys: String, CodingKey { case schema, task, nodes, edges }

    public init(task: TaskInfo, nodes: [Node], edges: [Edge]) {
        self.task = task
        self.nodes = nodes
        self.edges = edges
    }
}
