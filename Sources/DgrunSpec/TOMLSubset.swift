import DgrunSystem

/// A strict parser for the part of TOML that task.toml uses: [tables], key = value, basic and
/// literal strings (and """multi-line""" ones), integers, floats, booleans, arrays and inline
/// tables, comments. No TOML library resolves from this project's offline package copies (TOMLKit
/// needs swift-checkit), so this is hand-written; anything outside the subset (dates, dotted keys,
/// arrays of tables) is an error with its line and column, never a guess.
public indirect enum TOMLValue: Sendable, Equatable {
    case string(String), integer(Int), float(Double), bool(Bool), array([TOMLValue]), table(TOMLTable)

    public var typeName: String {
        switch self {
        case .string: return "a string"
        case .integer: return "an integer"
        case .float: return "a number"
        case .bool: return "a boolean"
        case .array: return "an array"
        case .table: return "a table"
        }
    }
}

/// Keys in the order they appear, for messages.
public struct TOMLTable: Sendable, Equatable {
    public private(set) var keys: [String] = []
    private var values: [String: TOMLValue] = [:]
    /// Where each key was written (line, column), for messages about its value.
    private var positions: [String: (line: Int, column: Int)] = [:]
    public subscript(key: String) -> TOMLValue? { values[key] }
    mutating func set(_ key: String, _ value: TOMLValue, at position: (line: Int, column: Int)? = nil) -> Bool {
        guard values[key] == nil else { return false }
        keys.append(key)
        values[key] = value
        if let position { positions[key] = position }
        return true
    }
    /// "line L, column C" of a key, or nil when it is not known.
    public func place(of key: String) -> String? {
        positions[key].map { "line \($0.line), column \($0.column)" }
    }
    public static func == (a: TOMLTable, b: TOMLTable) -> Bool { a.keys == b.keys && a.values == b.values }
}

public enum TOMLSubset {
    public static func parse(_ text: String) throws(DgrunError) -> TOMLTable {
        var parser = Parser(bytes: Array(text.utf8))
        return try parser.document()
    }

    struct Parser {
        let bytes: [UInt8]
        var at = 0
        var line = 1
        var lineStart = 0
        /// Arrays and inline tables open now: bounded, since each level is a frame of recursion and a
        /// deep enough nesting overflowed the stack (found by FuzzTaskToml).
        var depth = 0
        static let maxDepth = 64

        func error(_ message: String) -> DgrunError {
            DgrunError("line \(line), column \(at - lineStart + 1): \(message)")
        }

        var current: UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func advance() {
            if current == UInt8(ascii: "\n") { line += 1; lineStart = at + 1 }
            at += 1
        }

        /// Spaces and tabs; with `newlines`, also newlines and comments.
        mutating func skip(newlines: Bool) {
            while let c = current {
                if c == 0x20 || c == 0x09 || c == 0x0d { advance() }
                else if c == UInt8(ascii: "#") { while let d = current, d != 0x0a { advance() } }
                else if newlines && c == 0x0a { advance() }
                else { break }
            }
        }

        mutating func document() throws(DgrunError) -> TOMLTable {
            var root = TOMLTable()
            var section: String?
            var sectionTable = TOMLTable()
            func close(_ root: inout TOMLTable, _ section: String?, _ table: TOMLTable) throws(DgrunError) {
                guard let section else { return }
                if !root.set(section, .table(table)) { throw DgrunError("table [\(section)] is defined twice") }
            }
            while true {
                skip(newlines: true)
                guard let c = current else { break }
                if c == UInt8(ascii: "[") {
                    advance()
                    if current == UInt8(ascii: "[") { throw error("arrays of tables ([[...]]) are not supported in task.toml") }
                    let name = try bareKey()
                    if current == UInt8(ascii: ".") { throw error("dotted table names are not supported in task.toml") }
                    guard current == UInt8(ascii: "]") else { throw error("expected ] after the table name") }
                    advance()
                    try close(&root, section, sectionTable)
                    section = name
                    sectionTable = TOMLTable()
                } else {
                    let position = (line: line, column: at - lineStart + 1)
                    let (key, value) = try keyValue()
                    if section != nil {
                        if !sectionTable.set(key, value, at: position) { throw error("key \"\(key)\" is defined twice") }
                    } else if !root.set(key, value, at: position) {
                        throw error("key \"\(key)\" is defined twice")
                    }
                }
                skip(newlines: false)
                if let c = current, c != 0x0a { throw error("unexpected text after the value; one key = value per line") }
            }
            try close(&root, section, sectionTable)
            return root
        }

        mutating func keyValue() throws(DgrunError) -> (String, TOMLValue) {
            let key: String
            if current == UInt8(ascii: "\"") { key = try basicString() } else { key = try bareKey() }
            skip(newlines: false)
            if current == UInt8(ascii: ".") { throw error("dotted keys are not supported in task.toml") }
            guard current == UInt8(ascii: "=") else { throw error("expected = after \"\(key)\"") }
            advance()
            skip(newlines: false)
            return (key, try value())
        }

        mutating func bareKey() throws(DgrunError) -> String {
            let start = at
            while let c = current, (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f || c == 0x2d {
                advance()
            }
            guard at > start else { throw error("expected a key") }
            return String(decoding: bytes[start..<at], as: UTF8.self)
        }

        mutating func value() throws(DgrunError) -> TOMLValue {
            guard let c = current else { throw error("expected a value") }
            switch c {
            case UInt8(ascii: "\""): return .string(try basicString())
            case UInt8(ascii: "'"): return .string(try literalString())
            case UInt8(ascii: "["): return try array()
            case UInt8(ascii: "{"): return try inlineTable()
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
                let word = try bareKey()
                if word == "true" { return .bool(true) }
                if word == "false" { return .bool(false) }
                throw error("unknown value \"\(word)\" (strings need quotes)")
            default: return try number()
            }
        }

        mutating func number() throws(DgrunError) -> TOMLValue {
            let start = at
            while let c = current, (c >= 0x30 && c <= 0x39) || c == 0x2b || c == 0x2d || c == 0x2e || c == 0x5f || c == 0x65 || c == 0x45 {
                advance()
            }
            let text = String(decoding: bytes[start..<at], as: UTF8.self).filter { $0 != "_" }
            if let int = Int(text) { return .integer(int) }
            if let double = Double(text), text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }) { return .float(double) }
            at = start
            throw error(text.isEmpty ? "expected a value" : "\"\(text)\" is not a number (dates and times are not supported in task.toml)")
        }

        mutating func basicString() throws(DgrunError) -> String {
            let multiline = bytes.count >= at + 3 && bytes[at..<at + 3].elementsEqual("\"\"\"".utf8)
            if multiline {
                at += 3
                if current == 0x0a { advance() }  // a newline right after """ is not part of the string
            } else {
                advance()
            }
            var out: [UInt8] = []
            while true {
                guard let c = current else { throw error("unterminated string") }
                if multiline, bytes.count >= at + 3, bytes[at..<at + 3].elementsEqual("\"\"\"".utf8) { at += 3; break }
                if !multiline && c == UInt8(ascii: "\"") { advance(); break }
                if !multiline && c == 0x0a { throw error("unterminated string (use \"\"\" for several lines)") }
                if c == UInt8(ascii: "\\") {
                    advance()
                    guard let e = current else { throw error("unterminated escape") }
                    switch e {
                    case UInt8(ascii: "n"): out.append(0x0a)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "r"): out.append(0x0d)
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(e)
                    case UInt8(ascii: "u"):
                        guard bytes.count >= at + 5, let v = UInt32(String(decoding: bytes[(at + 1)...(at + 4)], as: UTF8.self), radix: 16),
                              let scalar = Unicode.Scalar(v) else { throw error("bad \\u escape") }
                        out.append(contentsOf: Array(String(Character(scalar)).utf8))
                        at += 4
                    default: throw error("unknown escape \\\(Character(Unicode.Scalar(e)))")
                    }
                    advance()
                    continue
                }
                out.append(c)
                advance()
            }
            return String(decoding: out, as: UTF8.self)
        }

        mutating func literalString() throws(DgrunError) -> String {
            advance()
            let start = at
            while let c = current, c != UInt8(ascii: "'") {
                if c == 0x0a { throw error("unterminated string") }
                advance()
            }
            guard current != nil else { throw error("unterminated string") }
            let text = String(decoding: bytes[start..<at], as: UTF8.self)
            advance()
            return text
        }

        mutating func nest() throws(DgrunError) {
            depth += 1
            if depth > Self.maxDepth { throw error("arrays and inline tables nest more than \(Self.maxDepth) deep") }
        }

        mutating func array() throws(DgrunError) -> TOMLValue {
            try nest()
            defer { depth -= 1 }
            advance()
            var items: [TOMLValue] = []
            while true {
                skip(newlines: true)
                if current == UInt8(ascii: "]") { advance(); return .array(items) }
                items.append(try value())
                skip(newlines: true)
                if current == UInt8(ascii: ",") { advance(); continue }
                guard current == UInt8(ascii: "]") else { throw error("expected , or ] in the array") }
            }
        }

        mutating func inlineTable() throws(DgrunError) -> TOMLValue {
            try nest()
            defer { depth -= 1 }
            advance()
            var table = TOMLTable()
            skip(newlines: false)
            if current == UInt8(ascii: "}") { advance(); return .table(table) }
            while true {
                skip(newlines: false)
                let position = (line: line, column: at - lineStart + 1)
                let (key, value) = try keyValue()
                if !table.set(key, value, at: position) { throw error("key \"\(key)\" is defined twice") }
                skip(newlines: false)
                if current == UInt8(ascii: ",") { advance(); continue }
                guard current == UInt8(ascii: "}") else { throw error("expected , or } in the inline table") }
                advance()
                return .table(table)
            }
        }
    }
}
