/// A JSON reader for the small documents dgrun reads on every exec (the sandbox profile, the
/// seccomp profile): a value tree, with the line and column of the first error.
///
/// Hand-written because Foundation's JSONDecoder costs more than the rest of the read: its first
/// use in a process took 1.15 ms of a static Swift binary's 2.85 ms start (a one-field struct,
/// `perf stat` task-clock, 30 runs: 1.70 ms without it), on every `dgrun exec`.
public indirect enum JSONValue: Sendable {
    case null
    case bool(Bool)
    /// The number's text as written: a seccomp argument is a full 64-bit value, which a Double
    /// would round.
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in document order; a key appears once (a repeated key is refused).
    case object([(key: String, value: JSONValue)])

    /// What the value is, for errors ("expected a string, got an array").
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

public enum JSONReader {
    /// Nesting deeper than this is refused (a document a user or a task controls must not
    /// exhaust the stack).
    public static let maximumDepth = 64

    /// The document's one value; errors say "line L, column C: what".
    public static func parse(_ bytes: [UInt8]) throws(DgrunError) -> JSONValue {
        var parser = Parser(bytes: bytes)
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.at == bytes.count else { throw parser.error("unexpected text after the JSON value") }
        return value
    }

    struct Parser {
        let bytes: [UInt8]
        var at = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        func error(_ what: String) -> DgrunError {
            var line = 1, column = 1
            for b in bytes[..<min(at, bytes.count)] {
                if b == UInt8(ascii: "\n") { line += 1; column = 1 } else { column += 1 }
            }
            return DgrunError("line \(line), column \(column): \(what)")
        }

        mutating func skipSpace() {
            while at < bytes.count, bytes[at] == 0x20 || bytes[at] == 0x0A || bytes[at] == 0x0D || bytes[at] == 0x09 { at += 1 }
        }

        mutating func expect(_ literal: String, _ value: JSONValue) throws(DgrunError) -> JSONValue {
            for b in literal.utf8 {
                guard at < bytes.count, bytes[at] == b else { throw error("not a JSON value (expected \(literal)?)") }
                at += 1
            }
            return value
        }

        mutating func value(depth: Int) throws(DgrunError) -> JSONValue {
            guard depth < JSONReader.maximumDepth else { throw error("nested more than \(JSONReader.maximumDepth) deep") }
            guard at < bytes.count else { throw error("unexpected end of the document") }
            switch bytes[at] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw error("not a JSON value")
            }
        }

        mutating func object(depth: Int) throws(DgrunError) -> JSONValue {
            at += 1
            var members: [(key: String, value: JSONValue)] = []
            skipSpace()
            if at < bytes.count, bytes[at] == UInt8(ascii: "}") { at += 1; return .object(members) }
            while true {
                skipSpace()
                guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") else { throw error("expected a key in quotes") }
                let keyStart = at
                let key = try string()
                // Refused: Go's encoding/json (runc, Docker) keeps a repeated key's last value and
                // Foundation's decoder its first, so the same profile would mean two things.
                if members.contains(where: { $0.key == key }) {
                    at = keyStart
                    throw error("the key \"\(key)\" appears twice in one object")
                }
                skipSpace()
                guard at < bytes.count, bytes[at] == UInt8(ascii: ":") else { throw error("expected ':' after the key \"\(key)\"") }
                at += 1
                skipSpace()
                members.append((key, try value(depth: depth + 1)))
                skipSpace()
                guard at < bytes.count else { throw error("unexpected end of the document (an object is not closed)") }
                if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                if bytes[at] == UInt8(ascii: "}") { at += 1; return .object(members) }
                throw error("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws(DgrunError) -> JSONValue {
            at += 1
            var elements: [JSONValue] = []
            skipSpace()
            if at < bytes.count, bytes[at] == UInt8(ascii: "]") { at += 1; return .array(elements) }
            while true {
                skipSpace()
                elements.append(try value(depth: depth + 1))
                skipSpace()
                guard at < bytes.count else { throw error("unexpected end of the document (an array is not closed)") }
                if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                if bytes[at] == UInt8(ascii: "]") { at += 1; return .array(elements) }
                throw error("expected ',' or ']'")
            }
        }

        mutating func hex4() throws(DgrunError) -> UInt32 {
            guard bytes.count - at >= 4 else { throw error("a \\u escape needs four hex digits") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[at]
                let digit: UInt8
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = b - UInt8(ascii: "A") + 10
                default: throw error("a \\u escape needs four hex digits")
                }
                v = v << 4 | UInt32(digit)
                at += 1
            }
            return v
        }

        mutating func string() throws(DgrunError) -> String {
            at += 1
            var out: [UInt8] = []
            while true {
                guard at < bytes.count else { throw error("unexpected end of the document (a string is not closed)") }
                let b = bytes[at]
                if b == UInt8(ascii: "\"") { at += 1; break }
                guard b >= 0x20 else { throw error("a control character in a string (escape it)") }
                guard b == UInt8(ascii: "\\") else { out.append(b); at += 1; continue }
                at += 1
                guard at < bytes.count else { throw error("unexpected end of the document (in an escape)") }
                let e = bytes[at]
                at += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard bytes.count - at >= 2, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") else {
                            throw error("a lone surrogate in a \\u escape")
                        }
                        at += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw error("a lone surrogate in a \\u escape") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw error("a lone surrogate in a \\u escape") }
                    out.append(contentsOf: String(Character(unicode)).utf8)
                default: throw error("an unknown escape \\\(Character(Unicode.Scalar(e)))")
                }
            }
            guard let text = String(validating: out, as: UTF8.self) else { throw error("a string that is not UTF-8") }
            return text
        }

        mutating func number() throws(DgrunError) -> JSONValue {
            let start = at
            func digits(_ p: inout Parser) -> Int {
                let s = p.at
                while p.at < p.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(p.bytes[p.at]) { p.at += 1 }
                return p.at - s
            }
            if bytes[at] == UInt8(ascii: "-") { at += 1 }
            guard digits(&self) > 0 else { throw error("not a number") }
            if at < bytes.count, bytes[at] == UInt8(ascii: ".") {
                at += 1
                guard digits(&self) > 0 else { throw error("not a number (digits after the point)") }
            }
            if at < bytes.count, bytes[at] == UInt8(ascii: "e") || bytes[at] == UInt8(ascii: "E") {
                at += 1
                if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") { at += 1 }
                guard digits(&self) > 0 else { throw error("not a number (digits in the exponent)") }
            }
            return .number(String(decoding: bytes[start..<at], as: UTF8.self))
        }
    }
}

/// One JSON object's members, read by key: the error names the key path and what was found.
public struct JSONObject {
    public let members: [(key: String, value: JSONValue)]
    /// Where this object is in the document ("" at the top, "syscalls[2]"), for errors.
    public let path: String

    public init(_ value: JSONValue, path: String = "") throws(DgrunError) {
        guard case .object(let members) = value else {
            throw DgrunError("expected an object\(path.isEmpty ? " at the top level" : " at \(path)"), got \(value.kindName)")
        }
        self.members = members
        self.path = path
    }

    func name(_ key: String) -> String { path.isEmpty ? key : path + "." + key }

    public subscript(_ key: String) -> JSONValue? {
        members.first(where: { $0.key == key }).flatMap { if case .null = $0.value { return nil } else { return $0.value } }
    }

    /// A member's key not among `known`: refused by callers, since a misspelt key would silently
    /// be ignored.
    public func unknownKey(known: [String]) -> String? { members.first(where: { !known.contains($0.key) })?.key }

    public func require(_ key: String) throws(DgrunError) -> JSONValue {
        guard let v = self[key] else { throw DgrunError("missing key \"\(key)\"\(path.isEmpty ? "" : " at \(path)")") }
        return v
    }

    public func string(_ key: String) throws(DgrunError) -> String? {
        guard let v = self[key] else { return nil }
        guard case .string(let s) = v else { throw DgrunError("expected a string at \(name(key)), got \(v.kindName)") }
        return s
    }

    public func bool(_ key: String) throws(DgrunError) -> Bool? {
        guard let v = self[key] else { return nil }
        guard case .bool(let b) = v else { throw DgrunError("expected true or false at \(name(key)), got \(v.kindName)") }
        return b
    }

    /// A whole number in 0...max (a seccomp argument, an errno).
    public func unsigned(_ key: String, max: UInt64 = .max) throws(DgrunError) -> UInt64? {
        guard let v = self[key] else { return nil }
        guard case .number(let text) = v else { throw DgrunError("expected a number at \(name(key)), got \(v.kindName)") }
        guard let n = UInt64(text), n <= max else { throw DgrunError("expected a whole number from 0 to \(max) at \(name(key)), got \(text)") }
        return n
    }

    public func array(_ key: String) throws(DgrunError) -> [JSONValue]? {
        guard let v = self[key] else { return nil }
        guard case .array(let a) = v else { throw DgrunError("expected an array at \(name(key)), got \(v.kindName)") }
        return a
    }

    public func strings(_ key: String) throws(DgrunError) -> [String]? {
        guard let elements = try array(key) else { return nil }
        var out: [String] = []
        for (i, e) in elements.enumerated() {
            guard case .string(let s) = e else { throw DgrunError("expected a string at \(name(key))[\(i)], got \(e.kindName)") }
            out.append(s)
        }
        return out
    }

    /// A string that must be one of an enumeration's raw values.
    public func choice<T: RawRepresentable & CaseIterable>(_ key: String, _ type: T.Type) throws(DgrunError) -> T? where T.RawValue == String {
        guard let s = try string(key) else { return nil }
        guard let v = T(rawValue: s) else {
            throw DgrunError("\(name(key)) must be one of \(T.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")) (got \"\(s)\")")
        }
        return v
    }
}
