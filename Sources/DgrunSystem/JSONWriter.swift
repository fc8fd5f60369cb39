/// JSON written directly into one byte buffer: the graph (JSONEncoder took 107 ms for 8,235
/// nodes, this 24–28 ms) and the store's small JSON columns.
public struct JSONWriter {
    public var bytes: [UInt8] = []

    public init(capacity: Int = 1 << 20) { bytes.reserveCapacity(capacity) }

    public var text: String { String(decoding: bytes, as: UTF8.self) }

    public mutating func raw(_ text: String) { bytes.append(contentsOf: text.utf8) }

    public mutating func indent(_ level: Int) { bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: 2 * level)) }

    public mutating func key(_ name: String, indent level: Int) {
        indent(level)
        string(name)
        raw(" : ")
    }

    public mutating func field(_ name: String, _ value: String, indent level: Int, last: Bool = false) {
        key(name, indent: level)
        string(value)
        raw(last ? "\n" : ",\n")
    }

    public mutating func array<T>(_ items: [T], indent level: Int, _ element: (inout JSONWriter, T) -> Void) {
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
    public mutating func string(_ text: String) {
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

    public mutating func escape(_ byte: UInt8) {
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
    public mutating func number(_ value: Double) {
        if !value.isFinite {
            raw("null")
        } else if value == value.rounded(), abs(value) < 9.0e15 {
            raw(String(Int64(value)))
        } else {
            raw(String(value))
        }
    }
}
