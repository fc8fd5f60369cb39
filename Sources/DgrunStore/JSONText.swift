import DgrunSystem

/// The few JSON columns of the store (argv, reasons, outputs): small, written with sorted keys so
/// equal values give equal text, and read with JSONReader (no Foundation on the store's path).
enum JSONText {
    static func encode(_ strings: [String]) -> String {
        var out = JSONWriter(capacity: 64)
        out.raw("[")
        for (i, s) in strings.enumerated() {
            if i > 0 { out.raw(",") }
            out.string(s)
        }
        out.raw("]")
        return out.text
    }

    static func encode(_ map: [String: String]) -> String {
        var out = JSONWriter(capacity: 64)
        out.raw("{")
        for (i, key) in map.keys.sorted().enumerated() {
            if i > 0 { out.raw(",") }
            out.string(key)
            out.raw(":")
            out.string(map[key]!)
        }
        out.raw("}")
        return out.text
    }

    /// Anything but an array of strings reads as empty (a task can write its own store).
    static func decodeStrings(_ text: String?) -> [String] {
        guard let text, case .array(let items)? = try? JSONReader.parse(Array(text.utf8)) else { return [] }
        var out: [String] = []
        for item in items {
            guard case .string(let s) = item else { return [] }
            out.append(s)
        }
        return out
    }

    static func decodeStringMap(_ text: String?) -> [String: String] {
        guard let text, case .object(let members)? = try? JSONReader.parse(Array(text.utf8)) else { return [:] }
        var out: [String: String] = [:]
        for (key, value) in members {
            guard case .string(let s) = value else { return [:] }
            out[key] = s
        }
        return out
    }
}
