import Foundation
import DgrunSystem
import Testing
import DgrunStore
#if canImport(Glibc)
import Glibc
#endif

/// The store on a real SQLite file in a temporary directory.
@Suite struct StoreTests {
    let scratch = Scratch()

    func temporaryDirectory() -> String { scratch.directory("dgrun-store") }

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

    /// Issue 13: a run that records the rows already there writes none of them; rows changed in
    /// between (a refreshed fingerprint) are written again; the order of the trace does not matter.
    @Test func unchangedDependencyRowsAreNotRewrittenAndChangedOnesAre() throws {
        let dir = temporaryDirectory()
        let store = try Store(directory: dir)
        let a = Dependency(nodeID: "file:/w/a", kind: "data", ref: "/w/a", relation: .reads, version: "sha256:a",
                           fingerprint: FileFingerprint(size: 1, mtimeNs: 2, ctimeNs: 3, inode: 4, device: 5))
        let b = Dependency(nodeID: "file:/w/b", kind: "data", ref: "/w/b", relation: .probes)
        let c = Dependency(nodeID: "service:tcp://127.0.0.1:5432", kind: "service", ref: "tcp://127.0.0.1:5432", relation: .connects)
        try recordFinishedRun(store, task: "/w/t", dependencies: [a, b, c])
        let digest = sqlite(dir + "/state.db", "SELECT dependencies_digest FROM task")
        #expect(digest.hasPrefix("sha256:"))
        let changes = sqlite(dir + "/state.db", "SELECT count(*) FROM dependency")
        #expect(changes == "3\n")
        // The same rows in another order: the same digest, nothing written.
        try recordFinishedRun(store, task: "/w/t", dependencies: [c, a, b])
        #expect(sqlite(dir + "/state.db", "SELECT dependencies_digest FROM task") == digest)
        #expect(Set(try store.dependencies(task: "/w/t").map(\.ref)) == ["/w/a", "/w/b", "tcp://127.0.0.1:5432"])
        // A fingerprint refreshed by a no-op check: the digest is forgotten, and the next run's rows
        // (the old fingerprint again) are written, not skipped.
        let moved = FileFingerprint(size: 1, mtimeNs: 20, ctimeNs: 30, inode: 4, device: 5)
        try store.refreshFingerprints(task: "/w/t", [(nodeID: a.nodeID, ref: a.ref, relation: a.relation, fingerprint: moved)])
        #expect(sqlite(dir + "/state.db", "SELECT dependencies_digest IS NULL FROM task") == "1\n")
        #expect(try store.dependencies(task: "/w/t").first { $0.ref == "/w/a" }?.fingerprint == moved)
        try recordFinishedRun(store, task: "/w/t", dependencies: [a, b])
        #expect(try store.dependencies(task: "/w/t").sorted { $0.ref < $1.ref } == [a, b])
        #expect(sqlite(dir + "/state.db", "SELECT dependencies_digest FROM task") != digest)
        #expect(try store.consistencyProblems().isEmpty)
    }

    /// Issue 13: a recorded graph lives in a file beside the store, named by its row; the run
    /// after replaces it and removes the old file; a file gone is a consistency problem.
    @Test func theRecordedGraphIsAFileBesideTheStoreAndOnlyTheNewestIsKept() throws {
        let dir = temporaryDirectory()
        let store = try Store(directory: dir)
        try recordFinishedRun(store, task: "/w/t", dependencies: [])
        let first = try #require(try store.task(id: "/w/t")?.graphVersion)
        #expect(FileIO.exists(dir + "/graph-\(first).json"))
        #expect(try store.graphJSON(version: first) == "{}")
        try recordFinishedRun(store, task: "/w/t", dependencies: [])
        let second = try #require(try store.task(id: "/w/t")?.graphVersion)
        #expect(second != first)
        #expect(!FileIO.exists(dir + "/graph-\(first).json"))
        #expect(try store.graphJSON(version: first) == nil)
        #expect(try store.graphJSON(version: second) == "{}")
        #expect(FileIO.listDirectory(dir).filter { $0.hasPrefix("graph-") } == ["graph-\(second).json"])
        #expect(try store.consistencyProblems().isEmpty)
        unlink(dir + "/graph-\(second).json")
        #expect(try store.graphJSON(version: second) == nil)
        #expect(try store.consistencyProblems().contains { $0.contains("without their file") })
    }

    /// A graph already saved as graph.json becomes the recorded graph by a second name, not a
    /// second copy; a saved file of another size, or a link planted there, is not used.
    @Test func aSavedGraphIsRecordedAsASecondNameOfTheSameFile() throws {
        let dir = temporaryDirectory()
        let store = try Store(directory: dir)
        try store.registerTask(id: "/w/t", directory: "/w/t")
        func record(_ json: String, savedAt: String?) throws -> String {
            var run = RunRecord(taskID: "/w/t", status: .running, startedAt: 10, pid: getpid(), argv: ["t"], environmentDigest: "e", reasons: [])
            let id = try store.beginRun(run, pidStartTime: nil)
            run.status = .finished
            run.finishedAt = 11
            run.exitCode = 0
            try store.finishRun(run, id: id, graphJSON: json, dependencies: [], graphSavedAt: savedAt)
            let version = try #require(try store.task(id: "/w/t")?.graphVersion)
            #expect(try store.graphJSON(version: version) == json)
            return dir + "/graph-\(version).json"
        }
        let saved = dir + "/graph.json"
        try FileIO.write(saved, "{\"nodes\":[]}", create: true)
        var a = stat(), b = stat()
        let linked = try record("{\"nodes\":[]}", savedAt: saved)
        #expect(stat(saved, &a) == 0 && stat(linked, &b) == 0 && a.st_ino == b.st_ino && a.st_nlink == 2)
        #expect(!FileIO.listDirectory(dir).contains { $0.contains(".tmp-") })
        let copied = try record("{\"nodes\":[1]}", savedAt: saved)  // not what graph.json holds
        #expect(stat(copied, &b) == 0 && a.st_ino != b.st_ino)
        unlink(saved)
        symlink(copied, saved)
        let throughLink = try record("{\"nodes\":[2]}", savedAt: saved)
        #expect(lstat(throughLink, &b) == 0 && (b.st_mode & S_IFMT) == S_IFREG && b.st_nlink == 1)
        #expect(try store.consistencyProblems().isEmpty)
    }

    /// A version's first word, by bytes where that is what a split by Characters gives.
    @Test func aVersionsFirstWordIsSplitAsByCharacters() {
        for (version, word) in [("sha256:ab", "sha256:ab"), ("sha256:ab deb:libc6=2.36", "sha256:ab"), ("", ""), ("a b c", "a"),
                                (" lead", ""), ("end ", "end"), ("a \u{301}b c", "a \u{301}b"), ("é x", "é")] {
            #expect(Dependency.firstWord(version) == word, "\(version)")
            #expect(Dependency.firstWord(version) == String(version.prefix { $0 != " " }), "\(version)")
        }
    }

    func sqlite(_ db: String, _ sql: String) -> String {
        let out = temporaryDirectory() + "/out"
        guard let pid = try? Subprocess.spawn(["/usr/bin/sqlite3", db, sql], stdin: "/dev/null", stdout: out, stderr: "/dev/null") else { return "" }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return (try? FileIO.read(out)) ?? ""
    }

    /// A store a GRDB-era dgrun made at the current schema opens as it is: nothing migrated twice.
    @Test(.enabled(if: FileIO.isExecutable("/usr/bin/sqlite3"), "needs the sqlite3 command to make a GRDB-era store"))
    func aStoreMadeThroughGRDBOpensWithoutMigratingAgain() throws {
        let state = temporaryDirectory() + "/state"
        do {
            let store = try Store(directory: state)
            try store.registerTask(id: "/w/t", directory: "/w/t")
        }
        _ = sqlite(state + "/state.db", """
            ALTER TABLE task DROP COLUMN file_checks; ALTER TABLE task DROP COLUMN dependencies_digest;
            ALTER TABLE graph_version DROP COLUMN in_file; PRAGMA user_version = 0;
            CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY); INSERT INTO grdb_migrations VALUES ('v1'), ('v2');
            """)
        let reopened = try Store(directory: state)
        #expect(try reopened.task(id: "/w/t")?.directory == "/w/t")
        #expect(sqlite(state + "/state.db", "PRAGMA user_version") == "4\n")
        #expect(try reopened.consistencyProblems().isEmpty)
    }

    /// A store from a newer dgrun is refused with a message, not misread.
    @Test func aStoreFromANewerDgrunIsAStoreError() throws {
        let state = temporaryDirectory() + "/state"
        _ = try Store(directory: state)
        try SQLiteConnection(path: state + "/state.db").execute("PRAGMA user_version = 99")
        do {
            _ = try Store(directory: state)
            Issue.record("a newer schema was opened")
        } catch {
            #expect(error.code == .store)
            #expect(error.message.contains("newer than this dgrun"))
        }
    }

    /// Issue 12: a v1 store (absolute paths) is migrated to relative ones when opened as a task's
    /// own store, and a copy of it at another path reads the same dependencies there.
    @Test(.enabled(if: FileIO.isExecutable("/usr/bin/sqlite3"), "needs the sqlite3 command to make a v1 store"))
    func aV1StoreIsMigratedToRelativePathsAndMovesWithItsTask() throws {
        let ws = temporaryDirectory()
        let task = ws + "/apply"
        mkdir(task, 0o755)
        let state = task + "/.dgrun"
        do {
            let v1 = try Store(directory: state)
            try recordFinishedRun(v1, task: task, outputs: [task + "/out/s.txt": "sha256:1"], dependencies: [
                Dependency(nodeID: "file:\(ws)/gen/out/data.txt", kind: "file", ref: ws + "/gen/out/data.txt", relation: .reads, version: "sha256:2"),
                Dependency(nodeID: "file:/usr/lib/libc.so.6", kind: "library", ref: "/usr/lib/libc.so.6", relation: .loads, version: "sha256:3"),
                Dependency(nodeID: "file:\(task)/out/s.txt", kind: "file", ref: task + "/out/s.txt", relation: .writes, version: "sha256:1"),
            ])
        }
        // Back to v1 as an older dgrun left it: no v2 columns, and its migrations recorded the way
        // GRDB did (grdb_migrations, user_version 0) before the store used libsqlite3 directly.
        _ = sqlite(state + "/state.db", """
            ALTER TABLE run DROP COLUMN action_key; ALTER TABLE run DROP COLUMN restored_from; ALTER TABLE task DROP COLUMN file_checks;
            ALTER TABLE task DROP COLUMN dependencies_digest; ALTER TABLE graph_version DROP COLUMN in_file; PRAGMA user_version = 0;
            CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY); INSERT INTO grdb_migrations VALUES ('v1');
            """)
        #expect(sqlite(state + "/state.db", "PRAGMA user_version") == "0\n")
        let relocation = PathRelocation(taskDirectory: task, workspaceRoot: ws)
        let migrated = try Store(directory: state, relocation: relocation)
        #expect(try migrated.dependencies(task: task).map(\.ref).sorted() == ["/usr/lib/libc.so.6", task + "/out/s.txt", ws + "/gen/out/data.txt"].sorted())
        #expect(sqlite(state + "/state.db", "SELECT ref FROM dependency ORDER BY ref").split(separator: "\n") == ["../gen/out/data.txt", "./out/s.txt", "/usr/lib/libc.so.6"])
        #expect(sqlite(state + "/state.db", "SELECT id, dir FROM task") == ".|.\n")
        #expect(try migrated.lastFinishedRun(task: task)?.outputs == [task + "/out/s.txt": "sha256:1"])
        let problems = try migrated.consistencyProblems()
        #expect(problems.isEmpty, "\(problems)")
        #expect(sqlite(state + "/state.db", "PRAGMA user_version") == "4\n")

        // The same file at another path: the same state, there.
        let other = temporaryDirectory()
        mkdir(other + "/apply", 0o755)
        mkdir(other + "/apply/.dgrun", 0o755)
        for name in FileIO.listDirectory(state) where name.hasPrefix("state.db") {
            try FileSystem.copy(state + "/" + name, to: other + "/apply/.dgrun/" + name)
        }
        let moved = try Store(directory: other + "/apply/.dgrun",
                              relocation: PathRelocation(taskDirectory: other + "/apply", workspaceRoot: other))
        #expect(try moved.dependencies(task: other + "/apply").map(\.ref).sorted()
                == ["/usr/lib/libc.so.6", other + "/apply/out/s.txt", other + "/gen/out/data.txt"].sorted())
        #expect(try moved.task(id: other + "/apply")?.directory == other + "/apply")
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

    /// When each of a store's files last changed (its WAL's index included): ctime moves with any
    /// write, truncation or chmod.
    func changeTimes(_ dir: String) -> [String: [Int]] {
        var times: [String: [Int]] = [:]
        for name in ["state.db", "state.db-wal", "state.db-shm"] {
            var st = stat()
            if stat(dir + "/" + name, &st) == 0 {
                times[name] = [st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec, Int(st.st_size)]
            }
        }
        return times
    }

    /// Issue 13: a store that exists is opened to read. Its reads change none of its files, not
    /// even the WAL's index (a first read-write connection truncates and rewrites it); the first
    /// write reopens it read-write, and every reader, this one too, sees that write.
    @Test func anExistingStoreIsReadWithoutWritingAndItsFirstWriteReopensIt() throws {
        let dir = temporaryDirectory()
        let dep = Dependency(nodeID: "file:/w/a", kind: "data", ref: "/w/a", relation: .reads, version: "sha256:a",
                             fingerprint: FileFingerprint(size: 1, mtimeNs: 2, ctimeNs: 3, inode: 4, device: 5))
        do { try recordFinishedRun(try Store(directory: dir), task: "/w/t", dependencies: [dep]) }
        let before = changeTimes(dir)
        #expect(before.count == 3)
        usleep(20_000)   // past the file system's timestamp granularity
        let store = try Store.openExisting(directory: dir)
        #expect(try store.lastFinishedRun(task: "/w/t") != nil)
        #expect(try store.dependencies(task: "/w/t") == [dep])
        #expect(try store.task(id: "/w/t")?.graphVersion != nil)
        #expect(changeTimes(dir) == before)
        try store.registerTask(id: "/w/u", directory: "/w/u")
        #expect(try store.task(id: "/w/u")?.directory == "/w/u")
        #expect(try Store.openExisting(directory: dir).task(id: "/w/u") != nil)
        #expect(try store.lastFinishedRun(task: "/w/t") != nil)
    }

    /// Without its WAL's index (-shm), which a read-only connection cannot create, a store is
    /// opened read-write, as before, and reads the same.
    @Test func anExistingStoreWithoutItsWALIndexIsOpenedReadWrite() throws {
        let dir = temporaryDirectory()
        do { try recordFinishedRun(try Store(directory: dir), task: "/w/t", dependencies: []) }
        #expect(unlink(dir + "/state.db-shm") == 0)   // safe with no connection open: an index only
        let store = try Store.openExisting(directory: dir)
        #expect(try store.lastFinishedRun(task: "/w/t") != nil)
        try store.registerTask(id: "/w/u", directory: "/w/u")
        #expect(try store.task(id: "/w/u") != nil)
    }

    /// A read-write store opened while a read-only one of the same file is still closing (on
    /// another thread) waits for it: SQLite would hand the writer the reader's read-only WAL index.
    @Test func aWriterOpenedWhileAReaderClosesWaitsAndCanWrite() throws {
        let dir = temporaryDirectory()
        do { try recordFinishedRun(try Store(directory: dir), task: "/w/t", dependencies: []) }
        let reader = Locked<Store?>(try Store.openExisting(directory: dir))
        #expect(try reader.withLock { try $0?.lastFinishedRun(task: "/w/t") } != nil)
        try Threads.detach {
            usleep(100_000)
            reader.withLock { $0 = nil }   // closed here, while the writer below is opening
        }
        let writer = try Store(directory: dir)
        try writer.registerTask(id: "/w/u", directory: "/w/u")
        #expect(try writer.task(id: "/w/u") != nil)
    }

    /// A read-only connection's URI: every byte of the path that could end or escape it is encoded.
    @Test func aStorePathWithURICharactersOpensToRead() throws {
        let dir = temporaryDirectory() + "/a?b#c%41 d"
        do { try recordFinishedRun(try Store(directory: dir), task: "/w/t", dependencies: []) }
        #expect(try Store.openExisting(directory: dir).lastFinishedRun(task: "/w/t") != nil)
        #expect(changeTimes(dir).count == 3)
    }

    @Test func unwritableDirectoryIsAClearError() throws {
        #expect(throws: DgrunError.self) { try Store(directory: "/proc/dgrun-state") }
    }
}
