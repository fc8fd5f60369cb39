import Foundation
import DgrunStore
import DgrunSystem
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A task can write its own .dgrun/state.db: a value of the wrong type or range in any column is
/// a store error from every reader, never a trap (found by FuzzStoreRows).
@Suite struct StoreCorruptRowTests {
    let scratch = Scratch()

    /// A store with one task and one run, and a second connection to corrupt it with.
    func corruptedStore(_ sql: String) throws -> Store {
        let dir = scratch.directory("dgrun-store-corrupt")
        let store = try Store(directory: dir)
        try store.registerTask(id: "/w/t", directory: "/w/t")
        let run = RunRecord(taskID: "/w/t", status: .running, startedAt: 10, pid: 1, argv: ["make"],
                            environmentDigest: "e", reasons: [])
        _ = try store.beginRun(run, pidStartTime: nil)
        try SQLiteConnection(path: dir + "/" + Store.fileName).execute(sql)
        return store
    }

    func expectStoreError(_ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected a store error")
        } catch {
            #expect((error as? DgrunError)?.code == .store)
        }
    }

    @Test func aTaskDirectoryThatIsNotTextIsAStoreError() throws {
        let store = try corruptedStore("UPDATE task SET dir = X'00FF'")
        expectStoreError { _ = try store.task(id: "/w/t") }
    }

    @Test func aPidOutOfRangeIsAStoreError() throws {
        // The crash FuzzStoreRows found first: every exec settles abandoned runs, so one bad row trapped each one.
        let store = try corruptedStore("UPDATE run SET pid = 1099511627776")
        expectStoreError { _ = try store.settleAbandonedRuns(task: "/w/t", isAlive: { _, _ in false }) }
        expectStoreError { _ = try store.runs(task: "/w/t") }
    }

    @Test func anExitCodeOutOfRangeIsAStoreError() throws {
        let store = try corruptedStore("UPDATE run SET status = 'finished', finished_at = 11, exit_code = 1099511627776")
        expectStoreError { _ = try store.usage(task: "/w/t", limit: 5) }
        expectStoreError { _ = try store.lastFinishedRun(task: "/w/t") }
    }

    @Test func aSampleOutOfRangeIsAStoreError() throws {
        let store = try corruptedStore("INSERT INTO sample(run_id, t_s, memory_bytes) VALUES (1, 1.0, 2.7e161)")
        expectStoreError { _ = try store.memorySeries(run: 1) }
    }

    @Test func wellFormedRowsStillReadBack() throws {
        let store = try corruptedStore("INSERT INTO sample(run_id, t_s, memory_bytes) VALUES (1, 1.0, 4096)")
        #expect(try store.memorySeries(run: 1).map(\.bytes) == [4096])
        #expect(try store.runs(task: "/w/t").first?.pid == 1)
        #expect(try store.task(id: "/w/t")?.directory == "/w/t")
    }
}
