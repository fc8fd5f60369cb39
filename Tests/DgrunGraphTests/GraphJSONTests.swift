@testable import DgrunGraph
import Foundation
import Testing

/// The hand-written graph JSON against JSONEncoder's, on a graph with every awkward value.
@Suite struct GraphJSONTests {
    static let graph: Graph = {
        var changed = Graph.Node(id: "file:/a \"quoted\"\\path", kind: .data, ref: "/a \"quoted\"\\path\n\t\u{1}é/ü",
                                 version: "sha256:00 deb:libc6=2.36", state: "available", ownership: "external",
                                 cost: ["bytes": 1234, "wall_s": 0.125, "cpu_s": 1.0e-5, "huge": 1.5e20],
                                 priority: -3, evidence: ["traced:openat", "static:elf-needed"])
        changed.change = "modified"
        let bare = Graph.Node(id: "service:tcp://127.0.0.1:80", kind: .service, ref: "tcp://127.0.0.1:80", version: nil,
                              state: "unavailable", ownership: "internal", cost: [:], priority: 0, evidence: [])
        return Graph(task: .init(id: "task:t", dir: "/tmp/t", argv: ["sh", "-c", "echo \"hi\" > /dev/null"]),
                     nodes: [changed, bare],
                     edges: [.init(from: "task:t", to: changed.id, relation: "reads"),
                             .init(from: "task:t", to: bare.id, relation: "connects")])
    }()

    static func object(_ text: String) throws -> NSDictionary {
        try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? NSDictionary)
    }

    @Test func sameValuesAsJSONEncoder() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let reference = String(decoding: try encoder.encode(Self.graph), as: UTF8.self)
        let ours = GraphJSON.render(Self.graph)
        #expect(try Self.object(ours) == Self.object(reference), "\(ours)\n---\n\(reference)")
        #expect(ours.contains("\"ref\" : \"tcp://127.0.0.1:80\""), "slashes are not escaped")
    }

    @Test func decodesBackToTheSameGraph() throws {
        let decoded = try JSONDecoder().decode(Graph.self, from: Data(GraphJSON.render(Self.graph).utf8))
        #expect(decoded.nodes == Self.graph.nodes)
        #expect(decoded.edges == Self.graph.edges)
        #expect(decoded.task.argv == Self.graph.task.argv)
    }

    @Test func emptyGraphAndNonFiniteCosts() throws {
        let node = Graph.Node(id: "x", kind: .infrastructure, ref: "x", version: nil, state: "available",
                              ownership: "external", cost: ["nan": .nan, "inf": .infinity], priority: 0, evidence: [])
        let text = GraphJSON.render(Graph(task: .init(id: "task:e", dir: "/", argv: []), nodes: [node], edges: []))
        let object = try Self.object(text)
        #expect((object["edges"] as? [Any])?.isEmpty == true)
        let cost = ((object["nodes"] as? [NSDictionary])?.first?["cost"] as? NSDictionary)
        #expect(cost?["nan"] is NSNull && cost?["inf"] is NSNull, "JSON has no NaN or infinity")
    }
}
