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
        out.raw("{\n  \"edges\" : ")
        if graph.edges.isEmpty {
            out.raw("[]")
        } else {
            out.raw("[\n")
            for (i, edge) in graph.edges.enumerated() {
                out.raw("    {\n      \"from\" : ")
                out.string(edge.from)
                out.raw(",\n      \"relation\" : ")
                out.string(edge.relation)
                out.raw(",\n      \"to\" : ")
                out.string(edge.to)
                out.raw(i == graph.edges.count - 1 ? "\n    }\n" : "\n    },\n")
            }
            out.raw("  ]")
        }
        out.raw(",\n  \"nodes\" : ")
        if graph.nodes.isEmpty {
            out.raw("[]")
        } else {
            out.raw("[\n")
            for (i, node) in graph.nodes.enumerated() {
                out.raw("    {\n")
                if let change = node.change {
                    out.raw("      \"change\" : ")
                    out.string(change)
                    out.raw(",\n")
                }
                out.raw("      \"cost\" : ")
                if node.cost.isEmpty {
                    out.raw("{}")
                } else {
                    let costs = node.cost.sorted { $0.key < $1.key }
                    out.raw("{\n")
                    for (j, (name, value)) in costs.enumerated() {
                        out.raw("        ")
                        out.string(name)
                        out.raw(" : ")
                        out.number(value)
                        out.raw(j == costs.count - 1 ? "\n" : ",\n")
                    }
                    out.raw("      }")
                }
                out.raw(",\n      \"evidence\" : ")
                if node.evidence.isEmpty {
                    out.raw("[]")
                } else {
                    out.raw("[\n")
                    for (j, text) in node.evidence.enumerated() {
                        out.raw("        ")
                        out.string(text)
                        out.raw(j == node.evidence.count - 1 ? "\n" : ",\n")
                    }
                    out.raw("      ]")
                }
                out.raw(",\n      \"id\" : ")
                out.string(node.id)
                out.raw(",\n      \"kind\" : ")
                out.string(node.kind.rawValue)
                out.raw(",\n      \"ownership\" : ")
                out.string(node.ownership)
                out.raw(",\n      \"priority\" : ")
                out.raw(String(node.priority))
                out.raw(",\n      \"ref\" : ")
                out.string(node.ref)
                out.raw(",\n      \"state\" : ")
                out.string(node.state)
                out.raw(",\n      \"version\" : ")
                if let version = node.version { out.string(version) } else { out.raw("null") }
                out.raw(i == graph.nodes.count - 1 ? "\n    }\n" : "\n    },\n")
            }
            out.raw("  ]")
        }
        out.raw(",\n  \"schema\" : ")
        out.string(graph.schema)
        out.raw(",\n  \"task\" : {\n    \"argv\" : ")
        if graph.task.argv.isEmpty {
            out.raw("[]")
        } else {
            out.raw("[\n")
            for (j, text) in graph.task.argv.enumerated() {
                out.raw("      ")
                out.string(text)
                out.raw(j == graph.task.argv.count - 1 ? "\n" : ",\n")
            }
            out.raw("    ]")
        }
        out.raw(",\n    \"dir\" : ")
        out.string(graph.task.dir)
        out.raw(",\n    \"id\" : ")
        out.string(graph.task.id)
        out.raw("\n  }\n}\n")
        return out
    }
}
