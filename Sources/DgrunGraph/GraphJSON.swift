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

/// The few pieces of JSON the graph needs, appended to one byte buffer.
struct JSONWriter {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(1 << 20) }

    mutating func raw(_ text: String) { bytes.append(contentsOf: text.utf8) }

    mutating func indent(_ level: Int) { bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: 2 * level)) }

    mutating func key(_ name: String, indent level: Int) {
        indent(level)
        string(name)
        raw(" : ")
    }

    mutating func field(_ name: String, _ value: String, indent level: Int, last: Bool = false) {
        key(name, indent: level)
        string(value)
        raw(last ? "\n" : ",\n")
    }

    mutating func array<T>(_ items: [T], indent level: Int, _ element: (inout JSONWriter, T) -> Void) {
        guard !items.isEmpty else { return raw("[]") }
        raw("[\n")
        for (i, item) in items.enumerated() {
            indent(level + 1)
            element(&self, item)
            raw(i == items.count - 1 ? "\n" : ",\n")
        }
        indent(level)
        raw("]")
    }

    /// A JSON string: quotes, backslashes and control characters escaped; everything else,
    /// slashes and non-ASCII included, as it is, copied in runs between the escapes.
    mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { utf8 in
            var start = 0
            for i in 0..<utf8.count {
                let byte = utf8[i]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<i]))
                escape(byte)
                start = i + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
        }
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func escape(_ byte: UInt8) {
        switch byte {
        case UInt8(ascii: "\""): raw("\\\"")
        case UInt8(ascii: "\\"): raw("\\\\")
        case 0x0A: raw("\\n")
        case 0x0D: raw("\\r")
        case 0x09: raw("\\t")
        case 0x08: raw("\\b")
        case 0x0C: raw("\\f")
        default:
            let hex = Array("0123456789abcdef".utf8)
            raw("\\u00")
            bytes.append(hex[Int(byte >> 4)])
            bytes.append(hex[Int(byte & 15)])
        }
    }

    /// Whole numbers without a fraction (byte counts), others as Swift's shortest round-trip
    /// form; JSON has no infinity or NaN, so those are null.
    mutating func number(_ value: Double) {
        if !value.isFinite {
            raw("null")
        } else if value == value.rounded(), abs(value) < 9.0e15 {
            raw(String(Int64(value)))
        } else {
            raw(String(value))
        }
    }
}
