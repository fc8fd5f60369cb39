import DgrunProvision
import Testing

@Suite struct SubordinateIDsTests {
    @Test func theFirstEntryOfTheFirstOwnerWinsAndTheBlockIsCapped() {
        let text = """
            # comment
            alice:100000:65536
            root:200000:1000000
            dgrun:300000:65536
            root:400000:65536
            """
        #expect(SubordinateIDs.parse(text, owners: ["dgrun", "root"])! == (300000, 65536))
        #expect(SubordinateIDs.parse(text, owners: ["nobody", "root"])! == (200000, 65536), "capped at one block")
        #expect(SubordinateIDs.parse(text, owners: ["0"]) == nil)
    }

    @Test func malformedLinesAreSkipped() {
        let text = "root:x:65536\nroot:100000\nroot:0:65536\nroot:4294967295:2\nroot:5:0\n::\nroot:700000:10\n"
        #expect(SubordinateIDs.parse(text, owners: ["root"])! == (700000, 10))
        #expect(SubordinateIDs.parse("", owners: ["root"]) == nil)
    }
}
