import Testing
@testable import DgrunSpec
import DgrunSystem

/// Nesting is bounded: each array or inline table level is a frame of recursion, and
/// `a = [[[[…` a few thousand deep overflowed the stack (found by FuzzTaskToml, 4 KB of input).
@Suite struct TOMLNestingTests {
    @Test func nestingUpToTheBoundParses() throws {
        let depth = TOMLSubset.Parser.maxDepth
        let table = try TOMLSubset.parse("a = " + String(repeating: "[", count: depth) + String(repeating: "]", count: depth))
        #expect(table["a"] != nil)
        _ = try TOMLSubset.parse("t = " + String(repeating: "{ b = ", count: depth) + "1" + String(repeating: " }", count: depth))
    }

    @Test(arguments: ["[", "{ b = "])
    func deeperNestingIsAnErrorNotACrash(_ open: String) {
        for depth in [TOMLSubset.Parser.maxDepth + 1, 100_000] {
            #expect(throws: DgrunError.self) { _ = try TOMLSubset.parse("a = " + String(repeating: open, count: depth)) }
        }
        do {
            _ = try TaskFile.parse("command = " + String(repeating: open, count: 5000), directory: "/w/t")
            Issue.record("expected an error")
        } catch {
            #expect(error.message.contains("nest more than"))
        }
    }
}
