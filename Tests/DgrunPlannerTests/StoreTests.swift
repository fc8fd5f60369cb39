import DgrunSystem
import Testing
import DgrunStore
#if canImport(Glibc)
import Glibc
#endif

/// The store on a real SQLite file in a temporary directory.
@Suite struct StoreTests {
    func temporaryDirectory() -> String {
        var template = Array("/tmp/dgrun-store-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    @Test func recordsRunsAndReplacesDependenciesAtomically() throws {
        let dir = temporaryDirectory()
        let store = try Store(directory: dir)
        try store.registerTask(id: "/w/t", directory: "/w/t")
        var run = RunRecord(taskID: "/w/t", status: .running, startedAt: 10, pid: getpid(), argv: ["make"],
                            environmentDigest: "e", reasons: ["no previous run"])
        let id = try store.beginRun(run, pidStartTime: nil)
        #expect(try store.lastFinishedRun(task: "/w/t") == nil)
        run.status = .finished
        run.finishedAt = 11
        run.exitCode = 0
        run.outputs = ["/w/t/out": "sha256:1"]
        let deps = [Dependency(nodeID: "file:/w/in", kind: "data", ref: "/w/in", relation: .reads, version: "sha256:2",
                               fingerprint: FileFingerprint(size: 1, mtimeNs: 2, ctimeNs: 3, inode: UInt64.max, device: 5))]
        try store.finishRun(run, id: id, graphJSON: "{}", dependencies: deps)
        #expect(try store.dependencies(task: "/w/t") == deps)
        let last = try #require(try store.lastFinishedRun(task: "/w/t"))
        #expect(last.outputs == run.outputs)
        #expect(last.exitCode == 0)
        #expect(try store.task(id: "/w/t")?.graphVersion != nil)
        #expect(try store.consistencyProblems().isEmpty)
        // A second store object on the same file sees it all (another dgrun process would too).
        #expect(try Store(directory: dir).runs(task: "/w/t").count == 1)
    }

    @Test func runsOfADeadDgrunAreSettledAsAbandoned() throws {
        let store = try Store(directory: temporaryDirectory())
        try store.registerTask(id: "t", directory: "/t")
        let run = RunRecord(taskID: "t", status: .running, startedAt: 1, pid: 999_999, argv: [], environmentDigest: "", reasons: [])
        _ = try store.beginRun(run, pidStartTime: 1)
        #expect(try store.settleAbandonedRuns(task: "t") { _, _ in true } == 0)
        #expect(try store.settleAbandonedRuns(task: "t") { _, _ in false } == 1)
        #expect(try store.runs(task: "t").first?.status == .abandoned)
    }

    @Test func staleMarksKeepTheFirstReasonUntilTheNextRecordedRun() throws {
        let store = try Store(directory: temporaryDirectory())
        try store.registerTask(id: "t", directory: "/t")
        try store.markStale(task: "t", reason: "first")
        try store.markStale(task: "t", reason: "second")
        #expect(try store.task(id: "t")?.staleReason == "first")
        var run = RunRecord(taskID: "t", status: .running, startedAt: 1, pid: 1, argv: [], environmentDigest: "", reasons: [])
        let id = try store.beginRun(run, pidStartTime: nil)
        run.status = .finished
        try store.finishRun(run, id: id, graphJSON: nil, dependencies: [])
        #expect(try store.task(id: "t")?.staleReason == nil)
    }

    @Test func unwritableDirectoryIsAClearError() throws {
        #expect(throws: DgrunError.self) { try Store(directory: "/proc/dgrun-state") }
    }
}
