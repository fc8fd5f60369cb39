import DgrunSystem
/// The graph as `dgrun.graph/1` JSON: pretty-printed, keys sorted, slashes unescaped, as
/// JSONEncoder wrote it. Written by hand because the schema is fixed and the graph of a file-heavy
/// task has thousands of nodes: JSONEncoder took 107 ms for 8,235 nodes, this a few.
/// GraphJSONTests checks the output against JSONEncoder's, value for value.
enum GraphJSON {
    static func render(_ graph: Graph) -> String {
        var out = JSONWriter()
        out.raw("{\n")
        out.key("edges", indent: 1)
        out.array(graph.edges, indent: 1) { out, edge in
            out.raw("{\n")
            out.field("from", edge.from, indent: 3)
            out.field("relation", edge.relation, indent: 3)
            out.field("to", edge.to, indent: 3, last: true)
            out.raw("    }")
        }
        out.raw(",\n")
        out.key("nodes", indent: 1)
        out.array(graph.nodes, indent: 1) { out, node in
            out.raw("{\n")
            if let change = node.change { out.field("change", change, indent: 3) }
            out.key("cost", indent: 3)
            let costs = node.cost.sorted { $0.key < $1.key }
            if costs.isEmpty {
                out.raw("{}")
            } else {
                out.raw("{\n")
                for (i, (name, value)) in costs.enumerated() {
                    out.key(name, indent: 4)
                    out.number(value)
                    out.raw(i == costs.count - 1 ? "\n" : ",\n")
                }
                out.raw("      }")
            }
            out.raw(",\n")
            out.key("evidence", indent: 3)
            out.array(node.evidence, indent: 3) { out, text in out.string(text) }
            out.raw(",\n")
            out.field("id", node.id, indent: 3)
            out.field("kind", node.kind.rawValue, indent: 3)
            out.field("ownership", node.ownership, indent: 3)
            out.key("priority", indent: 3)
            out.raw(String(node.priority) + ",\n")
            out.field("ref", node.ref, indent: 3)
            out.field("state", node.state, indent: 3)
            out.key("version", indent: 3)
            if let version = node.version { out.string(version) } else { out.raw("null") }
            out.raw("\n    }")
        }
        out.raw(",\n")
        out.field("schema", graph.schema, indent: 1)
        out.key("task", indent: 1)
        out.raw("{\n")
        out.key("argv", indent: 2)
        out.array(graph.task.argv, indent: 2) { out, text in out.string(text) }
        out.raw(",\n")
        out.field("dir", graph.task.dir, indent: 2)
        out.field("id", graph.task.id, indent: 2, last: true)
        out.raw("  }\n}\n")
        return String(decoding: out.bytes, as: UTF8.self)
    }
}
