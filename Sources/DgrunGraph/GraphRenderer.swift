import FoundationEssentials

/// json (the contract), dot (Graphviz), mermaid, and text for people.
public enum GraphFormat: String, Sendable, CaseIterable { case json, dot, mermaid, text }

public enum GraphRenderer {
    /// The rendering as bytes, to write: for JSON (thousands of nodes, megabytes) straight from
    /// the buffer it was written into, without a String or an array in between.
    public static func withBytes<R>(_ graph: Graph, as format: GraphFormat,
                                    _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        if format == .json { return try GraphJSON.write(graph).withBytes { try body(UnsafeRawBufferPointer($0)) } }
        return try Array(try render(graph, as: format).utf8).withUnsafeBytes(body)
    }

    public static func render(_ graph: Graph, as format: GraphFormat) throws -> String {
        switch format {
        case .json:
            return GraphJSON.render(graph)
        case .dot:
            var out = "digraph dgrun {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n"
            for node in graph.nodes {
                let style = node.state == "unavailable" ? ", style=dashed" : node.change != nil ? ", color=red" : ""
                out += "  \(quote(node.id)) [label=\(quote(node.kind.rawValue + "\n" + node.ref))\(style)];\n"
            }
            for edge in graph.edges { out += "  \(quote(edge.from)) -> \(quote(edge.to)) [label=\(quote(edge.relation))];\n" }
            return out + "}\n"
        case .mermaid:
            var ids: [String: String] = [:]
            for (i, node) in graph.nodes.enumerated() { ids[node.id] = "n\(i)" }
            var out = "graph LR\n"
            for node in graph.nodes {
                let label = (node.kind.rawValue + ": " + node.ref).replacing("\"", with: "'")
                out += "  \(ids[node.id]!)[\"\(label)\"]\n"
            }
            for edge in graph.edges {
                guard let from = ids[edge.from], let to = ids[edge.to] else { continue }
                out += "  \(from) -->|\(edge.relation)| \(to)\n"
            }
            return out
        case .text:
            var out = "\(graph.task.id)  \(graph.task.argv.joined(separator: " "))  (in \(graph.task.dir))\n"
            let byID = Dictionary(graph.nodes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            for relation in ["executes", "reads", "loads", "writes", "probes", "connects", "resolves", "uses"] {
                let targets = graph.edges.filter { $0.from == graph.task.id && $0.relation == relation }.compactMap { byID[$0.to] }
                guard !targets.isEmpty else { continue }
                out += "\n\(relation) (\(targets.count)):\n"
                for node in targets {
                    let mark = node.change.map { "   [\($0)]" } ?? (node.state == "unavailable" ? "   [unavailable]" : "")
                    out += "  \(node.kind.rawValue.padding(14)) \(node.ref)\(mark)\n"
                }
            }
            // A graph of tasks (a workspace): who feeds whom, and each task's state.
            let tasks = graph.nodes.filter { $0.kind == .task }
            if tasks.count > 1 {
                for node in tasks {
                    let feeds = graph.edges.filter { $0.from == node.id }.compactMap { byID[$0.to]?.id }
                    out += "  \(node.id.padding(20)) \((node.change ?? "up to date").padding(11))"
                        + (feeds.isEmpty ? "" : " → " + feeds.joined(separator: ", ")) + "\n"
                }
            }
            let requires = graph.edges.filter { $0.relation == "requires" }
            if !requires.isEmpty {
                out += "\nrequires (static analysis, \(requires.count)):\n"
                for edge in requires {
                    out += "  \(byID[edge.from]?.ref ?? edge.from) -> \(byID[edge.to]?.ref ?? edge.to)\n"
                }
            }
            return out
        }
    }

    static func quote(_ s: String) -> String {
        "\"" + s.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"")
            .replacing("\n", with: "\\n") + "\""
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
