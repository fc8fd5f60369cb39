import DgrunSystem
/// The graph as `dgrun.graph/1` JSON: pretty-printed, keys sorted, slashes unescaped, as
/// JSONEncoder wrote it. Written by hand because the schema is fixed and the graph of a file-heavy
/// task has thousands of nodes: JSONEncoder took 107 ms for 8,235 nodes, this a few. The keys and
/// their indentation are written as one literal each (half the calls per node).
/// GraphJSONTests checks the output against JSONEncoder's, value for value.
enum GraphJSON {
    static func render(_ graph: Graph) -> String { write(graph).text }

    static func write(_ graph: Graph) -> JSONWriter {
        // ~600 bytes a node and ~150 an edge, as written: one allocation, no regrowth.
        var out = JSONWriter(capacity: 4096 + graph.nodes.count * 640 + graph.edges.count * 160)
        out.literal("{\n  \"edges\" : ")
        if graph.edges.isEmpty {
            out.literal("[]")
        } else {
            out.literal("[\n")
            for (i, edge) in graph.edges.enumerated() {
                out.literal("    {\n      \"from\" : ")
                out.string(edge.from)
                out.literal(",\n      \"relation\" : ")
                out.string(edge.relation)
                out.literal(",\n      \"to\" : ")
                out.string(edge.to)
                out.literal(i == graph.edges.count - 1 ? "\n    }\n" : "\n    },\n")
            }
            out.literal("  ]")
        }
        out.literal(",\n  \"nodes\" : ")
        if graph.nodes.isEmpty {
            out.literal("[]")
        } else {
            out.literal("[\n")
            for (i, node) in graph.nodes.enumerated() {
                out.literal("    {\n")
                if let change = node.change {
                    out.literal("      \"change\" : ")
                    out.string(change)
                    out.literal(",\n")
                }
                out.literal("      \"cost\" : ")
                if node.cost.isEmpty {
                    out.literal("{}")
                } else {
                    let costs = node.cost.sorted { $0.key < $1.key }
                    out.literal("{\n")
                    for (j, (name, value)) in costs.enumerated() {
                        out.literal("        ")
                        out.string(name)
                        out.literal(" : ")
                        out.number(value)
                        out.literal(j == costs.count - 1 ? "\n" : ",\n")
                    }
                    out.literal("      }")
                }
                out.literal(",\n      \"evidence\" : ")
                if node.evidence.isEmpty {
                    out.literal("[]")
                } else {
                    out.literal("[\n")
                    for (j, text) in node.evidence.enumerated() {
                        out.literal("        ")
                        out.string(text)
                        out.literal(j == node.evidence.count - 1 ? "\n" : ",\n")
                    }
                    out.literal("      ]")
                }
                out.literal(",\n      \"id\" : ")
                out.string(node.id)
                out.literal(",\n      \"kind\" : ")
                out.string(node.kind.rawValue)
                out.literal(",\n      \"ownership\" : ")
                out.string(node.ownership)
                out.literal(",\n      \"priority\" : ")
                out.raw(String(node.priority))
                out.literal(",\n      \"ref\" : ")
                out.string(node.ref)
                out.literal(",\n      \"state\" : ")
                out.string(node.state)
                out.literal(",\n      \"version\" : ")
                if let version = node.version { out.string(version) } else { out.literal("null") }
                out.literal(i == graph.nodes.count - 1 ? "\n    }\n" : "\n    },\n")
            }
            out.literal("  ]")
        }
        out.literal(",\n  \"schema\" : ")
        out.string(graph.schema)
        out.literal(",\n  \"task\" : {\n    \"argv\" : ")
        if graph.task.argv.isEmpty {
            out.literal("[]")
        } else {
            out.literal("[\n")
            for (j, text) in graph.task.argv.enumerated() {
                out.literal("      ")
                out.string(text)
                out.literal(j == graph.task.argv.count - 1 ? "\n" : ",\n")
            }
            out.literal("    ]")
        }
        out.literal(",\n    \"dir\" : ")
        out.string(graph.task.dir)
        out.literal(",\n    \"id\" : ")
        out.string(graph.task.id)
        out.literal("\n  }\n}\n")
        return out
    }
}
