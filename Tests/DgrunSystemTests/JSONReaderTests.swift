import DgrunSystem
import Testing

@Suite struct JSONReaderTests {
    func parse(_ text: String) throws(DgrunError) -> JSONValue { try JSONReader.parse(Array(text.utf8)) }

    @Test func valuesEscapesAndNumbersReadBack() throws {
        let v = try parse(#" { "a": [1, -2.5e3, true, false, null], "s": "q\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", "big": 18446744073709551615 } "#)
        let o = try JSONObject(v)
        #expect(try o.string("s") == "q\"\\/\u{8}\u{c}\n\r\té😀")
        #expect(try o.unsigned("big") == UInt64.max, "a full 64-bit value, not rounded through a Double")
        guard case .array(let a)? = o["a"] else { Issue.record("no array"); return }
        #expect(a.count == 5)
        #expect(o["missing"] == nil)
    }

    @Test func malformedDocumentsSayWhere() {
        let cases: [(String, String)] = [
            ("", "line 1, column 1: unexpected end"),
            ("{\n  \"a\": 1,\n  \"a\": 2\n}", "line 3, column 3: the key \"a\" appears twice"),
            ("[1, 2", "an array is not closed"),
            ("{\"a\" 1}", "expected ':'"),
            ("\"tab\there\"", "control character"),
            ("\"\\ud800\"", "lone surrogate"),
            ("01x", "unexpected text after"),
            ("-", "not a number"),
            ("1.", "digits after the point"),
            ("[] []", "unexpected text after"),
            ("\"\\x\"", "unknown escape"),
            ("nul", "expected null"),
            (String(repeating: "[", count: 100), "nested more than 64 deep"),
        ]
        for (text, expected) in cases {
            do {
                _ = try parse(text)
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.message.contains(expected), "\(text): \(error.message)")
            }
        }
    }

    @Test func typedReadsNameTheKeyPath() throws {
        let o = try JSONObject(try parse(#"{"n": "x", "list": ["a", 1], "u": -1}"#), path: "rules[2]")
        #expect(throws: DgrunError.self) { try o.unsigned("n") }
        do { _ = try o.strings("list"); Issue.record("accepted") } catch {
            #expect(error.message == "expected a string at rules[2].list[1], got a number")
        }
        do { _ = try o.unsigned("u"); Issue.record("accepted") } catch { #expect(error.message.contains("whole number")) }
        #expect(o.unknownKey(known: ["n", "list"]) == "u")
    }
}
