import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The state store: one SQLite file (`state.db`) in a state directory, shared safely by every dgrun
/// process that uses it (WAL, a busy timeout, immediate write transactions).
public final class Store: Sendable {
    public let directory: String
    /// Set for a task's own store (TASKDIR/.dgrun): its paths inside the task and its workspace are
    /// stored relative (`PathRelocation`), so that a copy of the directory reads the same state.
    /// nil for a shared store (--state DIR, $DGRUN_STATE_DIR, ad-hoc history): absolute, as before.
    public let relocation: PathRelocation?
    /// The one connection, used by one thread at a time: read-only while nothing is written
    /// (`openExisting`), read-write from the first write on; nil only after a failed reopen.
    let connection: Locked<SQLiteConnection?>

    public static let fileName = "state.db"

    /// Opens (creating when needed) DIR/state.db and brings its schema up to date.
    public init(directory: String, relocation: PathRelocation? = nil) throws(DgrunError) {
        self.directory = directory
        self.relocation = relocation
        connection = Locked(try Self.openReadWrite(directory, relocation: relocation))
    }

    private init(directory: String, relocation: PathRelocation?, reader: SQLiteConnection) {
        self.directory = directory
        self.relocation = relocation
        connection = Locked(reader)
    }

    /// A store that exists, opened to read: its first write reopens it read-write. The first
    /// read-write connection of a dgrun truncates the WAL's index (-shm) and writes it anew. Once
    /// the kernel has written its blocks back, that truncation cost ext4 245 µs (12 µs before), 9
    /// syscalls and 32 KiB of dirty pages: for a no-op that writes nothing, a quarter of a trivial
    /// task's check, and 32 MB of writeback for a 1,000-task workspace. A store that cannot be
    /// read so (no -shm yet, a schema to migrate) is opened read-write.
    public static func openExisting(directory: String, relocation: PathRelocation? = nil) throws(DgrunError) -> Store {
        if let reader = try? readOnlyConnection(directory) {
            return Store(directory: directory, relocation: relocation, reader: reader)
        }
        return try Store(directory: directory, relocation: relocation)
    }

    static func readOnlyConnection(_ directory: String) throws(DgrunError) -> SQLiteConnection {
        let db = try SQLiteConnection(path: directory + "/" + fileName, readOnly: true)
        // No mmap: such a reader of a checkpointed (empty) WAL is told at every statement that the
        // file may have changed, and SQLite then unmaps and maps it again: 8 munmaps a store, each
        // a TLB shootdown on every CPU running one of dgrun's threads. A 1,000-task no-op so read
        // took 0.79 s against the read-write connection's 0.59; without the map, 0.46 against 0.66.
        try db.execute("PRAGMA foreign_keys = ON")
        guard try schemaVersion(db) == Schema.current else {
            throw DgrunError.store("the state store in \(directory) is to be migrated")
        }
        return db
    }

    static func openReadWrite(_ directory: String, relocation: PathRelocation?) throws(DgrunError) -> SQLiteConnection {
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw DgrunError.store("cannot create the state directory \(directory): \(String(cString: strerror(errno))); pass --state DIR or set DGRUN_STATE_DIR to a writable place")
        }
        let db = try SQLiteConnection(path: directory + "/" + fileName)
        // mmap: a large task's dependency rows are read without a pread per page.
        try db.execute("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA mmap_size = 268435456")
        // A current schema is one pragma away. A new store, or one whose migrations are not all
        // there, is migrated under a lock: two dgruns opening a new store at once must not both
        // create it (a reader could see a file with no tables yet).
        if try schemaVersion(db) != Schema.current {
            try withFileLock(directory + "/state.db.lock") { () throws(DgrunError) in
                try Schema.migrate(db, relocation: relocation)
            }
        }
        return db
    }

    static func fileSize(_ path: String) -> Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : 0
    }

    static func schemaVersion(_ db: SQLiteConnection) throws(DgrunError) -> Int64 {
        try db.first("PRAGMA user_version") { row throws(DgrunError) in try row.int64(0) } ?? 0
    }

    /// The schema's migrations, numbered by `PRAGMA user_version` (one read at open). Stores made
    /// through GRDB (before this layer) recorded them in grdb_migrations instead: read once, then
    /// carried over.
    enum Schema {
        static let current: Int64 = 4

        static func migrate(_ db: SQLiteConnection, relocation: PathRelocation?) throws(DgrunError) {
            var version = try schemaVersion(db)
            var fresh = false
            defer { if fresh { try? db.execute("PRAGMA synchronous = NORMAL") } }
            if version == 0 {
                let grdb = try db.first("SELECT count(*) FROM sqlite_master WHERE name = 'grdb_migrations'") { row throws(DgrunError) in try row.int64(0) } ?? 0
                if grdb > 0 {
                    version = try db.first("SELECT count(*) FROM grdb_migrations WHERE identifier IN ('v1', 'v2')") { row throws(DgrunError) in try row.int64(0) } ?? 0
                    // Carried over: recorded where it is read now.
                    try db.execute("PRAGMA user_version = \(version)")
                } else {
                    // WAL is a property of the file: set once, at creation. A new store is made
                    // without fsyncs (it holds nothing yet, and a creation a crash cut short is
                    // made again: user_version is still 0); they were 3 of a trivial task's 7,
                    // 1-4 ms each on this machine's disk.
                    try db.execute("PRAGMA synchronous = OFF; PRAGMA journal_mode = WAL")
                    fresh = true
                }
            }
            guard version <= current else {
                throw DgrunError.store("the state store \(db.path) has schema version \(version), newer than this dgrun's (\(current)): use the dgrun that wrote it, or pass --state DIR")
            }
            guard version < current else { return }
            // Every step in one transaction: a new store is one commit, and a reader sees the
            // schema before or after, never between.
            try db.transaction { () throws(DgrunError) in
                // Relocation renames a task's key before its rows: checked at commit, not per statement.
                try db.execute("PRAGMA defer_foreign_keys = ON")
                while version < current {
                    version += 1
                    switch version {
                    case 1: try db.execute(v1)
                    case 2:
                        try db.execute(v2)
                        if let relocation { try relocate(db, to: relocation) }
                    case 3:
                        // Filled by the next recorded run, or by the next no-op check that finds it empty.
                        try db.execute(v3)
                    default:
                        try db.execute(v4)
                    }
                }
                try db.execute("PRAGMA user_version = \(current)")
            }
        }

        static let v1 = """
            CREATE TABLE task (
                id TEXT PRIMARY KEY,
                dir TEXT NOT NULL,
                stale_reason TEXT,
                graph_version INTEGER
            );
            CREATE TABLE graph_version (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                task_id TEXT NOT NULL REFERENCES task(id) ON DELETE CASCADE,
                created_at REAL NOT NULL,
                json TEXT NOT NULL
            );
            CREATE TABLE dependency (
                task_id TEXT NOT NULL REFERENCES task(id) ON DELETE CASCADE,
                node_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                ref TEXT NOT NULL,
                relation TEXT NOT NULL,
                version TEXT,
                size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, device INTEGER,
                priority INTEGER NOT NULL DEFAULT 0,
                cost_bytes INTEGER NOT NULL DEFAULT 0,
                traced INTEGER NOT NULL DEFAULT 1,
                PRIMARY KEY (task_id, ref, relation, node_id)
            ) WITHOUT ROWID;
            CREATE TABLE run (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                task_id TEXT NOT NULL REFERENCES task(id) ON DELETE CASCADE,
                status TEXT NOT NULL,
                started_at REAL NOT NULL,
                finished_at REAL,
                pid INTEGER NOT NULL,
                pid_start_time INTEGER,
                argv TEXT NOT NULL,
                env_digest TEXT NOT NULL,
                reasons TEXT NOT NULL,
                limits TEXT NOT NULL,
                exit_code INTEGER, signal INTEGER,
                oom_killed INTEGER NOT NULL DEFAULT 0, timed_out INTEGER NOT NULL DEFAULT 0,
                wall_s REAL, cpu_user_s REAL, cpu_sys_s REAL,
                memory_peak_bytes INTEGER, pids_peak INTEGER,
                outputs TEXT NOT NULL DEFAULT '{}',
                adjustments TEXT NOT NULL DEFAULT '[]',
                graph_version INTEGER
            );
            CREATE INDEX run_task ON run(task_id, id);
            CREATE TABLE sample (
                run_id INTEGER NOT NULL REFERENCES run(id) ON DELETE CASCADE,
                t_s REAL NOT NULL,
                memory_bytes INTEGER, cpu_s REAL,
                psi_memory REAL, psi_cpu REAL, psi_io REAL,
                pids INTEGER
            );
            CREATE INDEX sample_run ON sample(run_id);
            """

        // v2 (issue 12): the action key of each run, where a restored run came from, and the
        // task's paths made relative to it (see PathRelocation), so that a copy plans the same.
        static let v2 = """
            ALTER TABLE run ADD COLUMN action_key TEXT;
            ALTER TABLE run ADD COLUMN restored_from TEXT;
            """

        // v3 (issue 13): the file dependencies packed in one blob for the no-op check (FileChecks).
        static let v3 = "ALTER TABLE task ADD COLUMN file_checks BLOB"

        // v4 (issue 13): the digest of the task's dependency rows as last written (DependencyRows),
        // so that a run that recorded the same rows writes none; NULL whenever rows change otherwise.
        // The graph in a file of its own beside the store (`graphFile`), its row marked in_file: 5 MB of
        // JSON written into the WAL, and out of it again by the checkpoint that follows, were ~50 ms
        // of recording a pipeline's run (BENCHMARKS.md). Rows from before keep their JSON inline.
        static let v4 = """
            ALTER TABLE task ADD COLUMN dependencies_digest TEXT;
            ALTER TABLE graph_version ADD COLUMN in_file INTEGER NOT NULL DEFAULT 0;
            """
    }

    /// Rewrites a v1 store's absolute paths into the relative form. The old location is the row
    /// of this task, or the only task of the store (a store copied before it was migrated).
    static func relocate(_ db: SQLiteConnection, to relocation: PathRelocation) throws(DgrunError) {
        let tasks = try db.rows("SELECT id FROM task") { row throws(DgrunError) in try row.text(0) }
        guard let old = tasks.first(where: { $0 == relocation.taskDirectory }) ?? (tasks.count == 1 ? tasks[0] : nil),
              old.hasPrefix("/") else { return }
        let oldParent = String(old[..<(old.lastIndex(of: "/") ?? old.startIndex)])
        let from = PathRelocation(taskDirectory: old, workspaceRoot: relocation.workspaceRoot == nil ? nil : oldParent)
        try db.execute("UPDATE task SET id = '.', dir = '.' WHERE id = ?", [old])
        try db.execute("UPDATE graph_version SET task_id = '.' WHERE task_id = ?", [old])
        let runs = try db.rows("SELECT id, outputs FROM run WHERE task_id = ?", [old]) { row throws(DgrunError) in
            (id: try row.int64(0), outputs: JSONText.decodeStringMap(try row.optionalText(1)))
        }
        for run in runs {
            let encoded = Dictionary(run.outputs.map { (from.encode($0.key), $0.value) }, uniquingKeysWith: { a, _ in a })
            try db.execute("UPDATE run SET task_id = '.', outputs = ? WHERE id = ?", [JSONText.encode(encoded), run.id])
        }
        let rows = try db.rows("""
            SELECT node_id, kind, ref, relation, version, size, mtime_ns, ctime_ns, inode, device, priority, cost_bytes, traced
            FROM dependency WHERE task_id = ?
            """, [old]) { row throws(DgrunError) -> [any SQLArgument] in
            let nodeID = try row.text(0)
            return [nodeID.isEmpty ? "" : from.encodeNodeID(nodeID), try row.text(1), from.encode(try row.text(2)), try row.text(3),
                    try row.optionalText(4), try row.optionalInt64(5), try row.optionalInt64(6), try row.optionalInt64(7),
                    try row.optionalInt64(8), try row.optionalInt64(9), try row.int64(10), try row.int64(11), try row.int64(12)]
        }
        try db.execute("DELETE FROM dependency WHERE task_id = ?", [old])
        for row in rows {
            try db.execute("""
                INSERT OR REPLACE INTO dependency(task_id, node_id, kind, ref, relation, version, size, mtime_ns, ctime_ns,
                    inode, device, priority, cost_bytes, traced) VALUES ('.', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, row)
        }
    }

    // MARK: - relocation at the boundary: callers see absolute paths, the file holds relative ones

    func enc(_ path: String) -> String { relocation?.encode(path) ?? path }
    func dec(_ ref: String) -> String { relocation?.decode(ref) ?? ref }
    func encOutputs(_ outputs: [String: String]) -> String {
        guard let relocation else { return JSONText.encode(outputs) }
        return JSONText.encode(Dictionary(outputs.map { (relocation.encode($0.key), $0.value) }, uniquingKeysWith: { a, _ in a }))
    }
    func decoded(_ record: RunRecord) -> RunRecord {
        guard let relocation else { return record }
        var record = record
        record.taskID = relocation.decode(record.taskID)
        record.outputs = Dictionary(record.outputs.map { (relocation.decode($0.key), $0.value) }, uniquingKeysWith: { a, _ in a })
        return record
    }

    // MARK: - writing

    /// One immediate write transaction (see `SQLiteConnection.transaction`).
    func write<T>(_ body: (SQLiteConnection) throws(DgrunError) -> T) throws(DgrunError) -> T {
        try connection.withLock { (current: inout SQLiteConnection?) throws(DgrunError) -> T in
            let db = try writable(&current)
            return try db.transaction { () throws(DgrunError) -> T in try body(db) }
        }
    }

    /// The read-write connection, in place of the read-only one from the first write on. That
    /// one is closed first: SQLite shares one WAL index among a process's connections to a file,
    /// and a writer handed a reader's read-only index could not write.
    private func writable(_ current: inout SQLiteConnection?) throws(DgrunError) -> SQLiteConnection {
        if let db = current, !db.readOnly { return db }
        current = nil
        do {
            let db = try Self.openReadWrite(directory, relocation: relocation)
            current = db
            return db
        } catch {
            current = try? Self.readOnlyConnection(directory)   // reads go on as they did
            throw error
        }
    }

    /// Reads outside a transaction: each statement sees one committed state (WAL), and no reader
    /// here needs two statements to agree.
    func read<T>(_ body: (SQLiteConnection) throws(DgrunError) -> T) throws(DgrunError) -> T {
        try connection.withLock { (current: inout SQLiteConnection?) throws(DgrunError) -> T in
            guard let db = current else { throw DgrunError.store("the state store in \(directory) could not be opened again after a failed write") }
            return try body(db)
        }
    }

    public func registerTask(id: String, directory: String) throws(DgrunError) {
        let id = enc(id), directory = enc(directory)
        // Read first: the no-op path of `exec` then writes nothing at all.
        let known = try read { db throws(DgrunError) in
            try db.first("SELECT dir FROM task WHERE id = ?", [id]) { row throws(DgrunError) in try row.optionalText(0) }
        }
        if known == directory { return }
        try write { db throws(DgrunError) in
            try db.execute("INSERT INTO task(id, dir) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET dir = excluded.dir", [id, directory])
        }
    }

    /// Records a run as started; returns its id. The row stays `running` until `finishRun`.
    public func beginRun(_ record: RunRecord, pidStartTime: UInt64?) throws(DgrunError) -> Int64 {
        try write { db throws(DgrunError) in
            try db.execute("""
                INSERT INTO run(task_id, status, started_at, pid, pid_start_time, argv, env_digest, reasons, limits)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [enc(record.taskID), record.status.rawValue, record.startedAt, record.pid,
                      pidStartTime.map { Int64(bitPattern: $0) }, JSONText.encode(record.argv),
                      record.environmentDigest, JSONText.encode(record.reasons), record.limitsJSON])
            return db.lastInsertedRowID
        }
    }

    /// Completes a run and, in the same transaction, replaces the task's dependencies with what this
    /// run used (when it recorded a graph) and clears its stale mark: a reader sees all or nothing.
    /// `graphSavedAt`: a file that holds `graphJSON` already (TASKDIR/.dgrun/graph.json): the
    /// recorded graph is then a second name of it, not a second copy of its megabytes.
    /// `rows`: `prepareRows(dependencies)`, when the caller made them ahead.
    public func finishRun(_ record: RunRecord, id: Int64, graphJSON: String?, dependencies: [Dependency]?,
                          graphSavedAt: String? = nil, rows: PreparedRows? = nil) throws(DgrunError) {
        var written: String? = nil
        var replaced: [Int64] = []
        do throws(DgrunError) {
            try write { db throws(DgrunError) in
                var graphVersion: Int64? = nil
                if let graphJSON {
                    try db.execute("INSERT INTO graph_version(task_id, created_at, json, in_file) VALUES (?, ?, '', 1)",
                                   [enc(record.taskID), record.finishedAt ?? record.startedAt])
                    graphVersion = db.lastInsertedRowID
                    // Written (and renamed into place) before the commit that names it: a reader
                    // never finds a row without its file, only, after a crash, a file without a row.
                    let file = graphFile(db.lastInsertedRowID)
                    if let saved = graphSavedAt, FileSystem.linkAtomically(saved, to: file, size: graphJSON.utf8.count) {
                        // the same bytes, under the store's name
                    } else {
                        do throws(SystemError) { try FileSystem.writeAtomically(file, graphJSON) } catch {
                            throw DgrunError.store("cannot write the run's graph \(file): \(error)")
                        }
                    }
                    written = file
                    // Only the newest graph is read (`dgrun graph`, a cache restore), and every run
                    // kept one: a 100,000-file task's graph is 64 MB of JSON.
                    replaced = try db.rows("SELECT id FROM graph_version WHERE task_id = ? AND id <> ? AND in_file = 1",
                                           [enc(record.taskID), graphVersion]) { row throws(DgrunError) in try row.int64(0) }
                    try db.execute("DELETE FROM graph_version WHERE task_id = ? AND id <> ?", [enc(record.taskID), graphVersion])
                }
                try db.execute("""
                    UPDATE run SET status = ?, finished_at = ?, exit_code = ?, signal = ?, oom_killed = ?, timed_out = ?,
                        wall_s = ?, cpu_user_s = ?, cpu_sys_s = ?, memory_peak_bytes = ?, pids_peak = ?, outputs = ?,
                        adjustments = ?, graph_version = ?, reasons = ?, limits = ?, action_key = ?, restored_from = ?
                    WHERE id = ?
                    """, [record.status.rawValue, record.finishedAt, record.exitCode, record.signal,
                          record.oomKilled, record.timedOut, record.wallSeconds, record.cpuUserSeconds,
                          record.cpuSystemSeconds, record.memoryPeakBytes, record.pidsPeak,
                          encOutputs(record.outputs), record.adjustmentsJSON, graphVersion,
                          JSONText.encode(record.reasons), record.limitsJSON, record.actionKey, record.restoredFrom, id])
                if let dependencies {
                    try replace(dependencies, of: record.taskID, in: db, prepared: rows)
                    try db.execute("UPDATE task SET stale_reason = NULL, graph_version = COALESCE(?, graph_version) WHERE id = ?",
                                   [graphVersion, enc(record.taskID)])
                }
            }
        } catch {
            if let written { unlink(written) }  // rolled back: the file of a row that is not there
            throw error
        }
        for old in replaced { unlink(graphFile(old)) }
        if dependencies != nil { checkpointIfLarge() }
    }

    /// Every later dgrun is the store's first connection, and rebuilds the WAL's index by
    /// checksumming the whole WAL (1.3 instructions a byte: a 642 KB WAL was 0.84 M of a
    /// 5,000-dependency no-op's 7.7 M), then reads its pages with a pread each. Past 128 KB the
    /// checkpoint's two fsyncs, paid once, cost less than that on every check after.
    func checkpointIfLarge() {
        if Self.fileSize(directory + "/" + Self.fileName + "-wal") > 128 << 10 {
            connection.withLock { current in if let db = current, !db.readOnly { db.checkpoint() } }
        }
    }

    /// A run the planner refused: kept in the history with its reasons.
    public func recordBlocked(_ record: RunRecord) throws(DgrunError) {
        var record = record
        record.status = .blocked
        let id = try beginRun(record, pidStartTime: nil)
        try finishRun(record, id: id, graphJSON: nil, dependencies: nil)
    }

    /// A run's dependency rows in their stored form, sorted and digested: what `finishRun` writes.
    /// Made ahead by a caller with a CPU to spare, they are not made inside the write (a
    /// pipeline's 8,000 rows were ~11 ms of its transaction, with the store locked).
    public struct PreparedRows: Sendable {
        fileprivate let rows: DependencyRows
        fileprivate let count: Int
    }

    public func prepareRows(_ dependencies: [Dependency]) -> PreparedRows {
        PreparedRows(rows: rows(of: dependencies), count: dependencies.count)
    }

    func rows(of dependencies: [Dependency]) -> DependencyRows {
        let relocation = self.relocation
        // The usual id, "file:" + ref, is implied (empty): a fifth less to read on every check.
        return DependencyRows(dependencies, storedRef: { relocation?.encode($0) ?? $0 }, storedNodeID: { d in
            Self.isFileID(d.nodeID, of: d.ref) ? "" : relocation?.encodeNodeID(d.nodeID) ?? d.nodeID
        })
    }

    func replace(_ dependencies: [Dependency], of taskID: String, in db: SQLiteConnection,
                 prepared: PreparedRows? = nil) throws(DgrunError) {
        let storedID = enc(taskID)
        let rows = prepared.flatMap { $0.count == dependencies.count ? $0.rows : nil } ?? rows(of: dependencies)
        if let digest = rows.digest,
           try db.first("SELECT dependencies_digest FROM task WHERE id = ?", [storedID], { row throws(DgrunError) in try row.optionalText(0) }) == digest {
            return  // the rows and their packed checks are these already
        }
        try db.execute("DELETE FROM dependency WHERE task_id = ?", [storedID])
        let insert = try db.prepare("""
            INSERT OR REPLACE INTO dependency(task_id, node_id, kind, ref, relation, version, size, mtime_ns, ctime_ns,
                inode, device, priority, cost_bytes, traced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        // In the key's order: each row goes at the end of the table's B-tree, not at a random page.
        for row in rows.rows {
            let d = dependencies[row.dependency], f = d.fingerprint
            try insert.bind(1, storedID)
            try insert.bind(2, row.storedNodeID)
            try insert.bind(3, d.kind)
            try insert.bind(4, row.storedRef)
            try insert.bind(5, d.relation.rawValue)
            try insert.bind(6, d.version)
            try insert.bind(7, f?.size)
            try insert.bind(8, f?.mtimeNs)
            try insert.bind(9, f?.ctimeNs)
            try insert.bind(10, f.map { Int64(bitPattern: $0.inode) })
            try insert.bind(11, f.map { Int64(bitPattern: $0.device) })
            try insert.bind(12, Int64(d.priority))
            try insert.bind(13, d.costBytes)
            try insert.bind(14, Int64(d.traced ? 1 : 0))
            try insert.run()
        }
        let packed = FileChecks.pack(rows.rows.map { (dependency: dependencies[$0.dependency], storedRef: $0.storedRef) })
        try db.execute("UPDATE task SET file_checks = ?, dependencies_digest = ? WHERE id = ?", [SQLValue.blob(packed), rows.digest, storedID])
    }

    /// `id == "file:" + ref`, without building the string for the usual case (equal bytes).
    static func isFileID(_ id: String, of ref: String) -> Bool {
        var id = id, ref = ref
        let sameBytes = id.withUTF8 { i in
            ref.withUTF8 { r in
                i.count == r.count + 5 && memcmp(i.baseAddress!, "file:", 5) == 0
                    && (r.isEmpty || memcmp(i.baseAddress! + 5, r.baseAddress!, r.count) == 0)
            }
        }
        if sameBytes { return true }
        return id == "file:" + ref  // unequal bytes can still be equal Strings (é as one scalar or two)
    }

    func packFileChecks(_ dependencies: [Dependency], refs: [String]? = nil, storedID: String, in db: SQLiteConnection) throws(DgrunError) {
        let packed = FileChecks.pack(zip(dependencies, refs ?? dependencies.map { enc($0.ref) }).map { (dependency: $0, storedRef: $1) })
        // Rows changed by something else than `replace`: their digest is no longer known.
        try db.execute("UPDATE task SET file_checks = ?, dependencies_digest = NULL WHERE id = ?", [SQLValue.blob(packed), storedID])
    }

    /// Packs the file checks again from the dependency rows (a store from before v3, or after a
    /// refresh of fingerprints).
    public func rebuildFileChecks(task taskID: String) throws(DgrunError) {
        let storedID = enc(taskID)
        try write { db throws(DgrunError) in
            try packFileChecks(try readDependencies(storedID, taskID: taskID, in: db), storedID: storedID, in: db)
        }
        checkpointIfLarge()
    }

    /// Every recorded path with its relation, from the packed file checks; nil when there are none
    /// (or they do not read back whole), and the caller reads the rows.
    public func recordedPaths(task taskID: String) throws(DgrunError) -> [RecordedPath]? {
        try withFileChecks(task: taskID) { checks -> [RecordedPath]? in
            guard let checks else { return nil }
            var paths: [RecordedPath] = []
            var buffer: [UInt8] = []
            let whole = checks.allSatisfy { entry in
                guard checks.absolutePath(entry.storedPath, into: &buffer) else { return false }
                paths.append(RecordedPath(relation: entry.relation, path: String(decoding: buffer.dropLast(), as: UTF8.self)))
                return true
            }
            return whole ? paths : nil
        }
    }

    /// The task's packed file checks, inside `body` only; nil when none were recorded.
    public func withFileChecks<T>(task taskID: String, _ body: (FileChecks?) -> T) throws(DgrunError) -> T {
        let storedID = enc(taskID)
        let relocation = self.relocation
        return try read { db throws(DgrunError) in
            let found = try db.first("SELECT file_checks FROM task WHERE id = ?", [storedID]) { row throws(DgrunError) in
                try row.withBlob(0) { bytes throws(DgrunError) in body(bytes.map { FileChecks(bytes: $0, relocation: relocation) }) }
            }
            return found ?? body(nil)
        }
    }

    /// A file whose stat moved but whose content hashed the same: remember the new stat so the
    /// next check is fast again.
    public func refreshFingerprints(task taskID: String, _ updates: [(nodeID: String, ref: String, relation: Dependency.Relation, fingerprint: FileFingerprint)]) throws(DgrunError) {
        guard !updates.isEmpty else { return }
        let taskID = enc(taskID)
        try write { db throws(DgrunError) in
            for u in updates {
                let f = u.fingerprint
                let nodeID = u.nodeID == "file:" + u.ref ? "" : relocation?.encodeNodeID(u.nodeID) ?? u.nodeID
                try db.execute("""
                    UPDATE dependency SET size = ?, mtime_ns = ?, ctime_ns = ?, inode = ?, device = ?
                    WHERE task_id = ? AND ref = ? AND relation = ? AND node_id = ?
                    """, [f.size, f.mtimeNs, f.ctimeNs, Int64(bitPattern: f.inode), Int64(bitPattern: f.device),
                          taskID, enc(u.ref), u.relation.rawValue, nodeID])
            }
            try packFileChecks(try readDependencies(taskID, taskID: dec(taskID), in: db), storedID: taskID, in: db)
        }
        checkpointIfLarge()  // the checks packed again: as large as a run's
    }

    public func markStale(task taskID: String, reason: String) throws(DgrunError) {
        let taskID = enc(taskID)
        try write { db throws(DgrunError) in
            try db.execute("UPDATE task SET stale_reason = ? WHERE id = ? AND stale_reason IS NULL", [reason, taskID])
        }
    }

    /// Runs left `running` by a dgrun that no longer exists (kill -9): marked abandoned, so history
    /// tells the truth and the task's dependencies stay those of its last finished run.
    @discardableResult
    public func settleAbandonedRuns(task taskID: String, isAlive: (Int32, UInt64?) -> Bool) throws(DgrunError) -> Int {
        let taskID = enc(taskID)
        let running = try read { db throws(DgrunError) in
            try db.rows("SELECT id, pid, pid_start_time FROM run WHERE task_id = ? AND status = 'running'", [taskID]) { row throws(DgrunError) in
                (id: try row.int64(0), pid: try row.int32(1), start: try row.optionalInt64(2).map { UInt64(bitPattern: $0) })
            }
        }
        let dead = running.filter { !isAlive($0.pid, $0.start) }
        guard !dead.isEmpty else { return 0 }
        try write { db throws(DgrunError) in
            for run in dead {
                try db.execute("UPDATE run SET status = 'abandoned' WHERE id = ? AND status = 'running'", [run.id])
            }
        }
        return dead.count
    }

    /// Whether runs are left `running` (`settleAbandonedRuns` has something to look at).
    public func hasRunningRuns(task taskID: String) throws(DgrunError) -> Bool {
        let taskID = enc(taskID)
        return try read { db throws(DgrunError) in
            try db.first("SELECT 1 FROM run WHERE task_id = ? AND status = 'running' LIMIT 1", [taskID]) { _ throws(DgrunError) in true } ?? false
        }
    }

    public func addSamples(_ samples: [UsageSample], run runID: Int64) throws(DgrunError) {
        guard !samples.isEmpty else { return }
        try write { db throws(DgrunError) in try Self.insert(samples, run: runID, in: db) }
    }

    static func insert(_ samples: [UsageSample], run runID: Int64, in db: SQLiteConnection) throws(DgrunError) {
        for s in samples {
            try db.execute("""
                INSERT INTO sample(run_id, t_s, memory_bytes, cpu_s, psi_memory, psi_cpu, psi_io, pids) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, [runID, s.seconds, s.memoryBytes.map { Int64(clamping: $0) }, s.cpuSeconds, s.memoryStall,
                      s.cpuStall, s.ioStall, s.pids.map { Int64(clamping: $0) }])
        }
    }

    /// The memory series of a run (time, bytes), for the tuner's usage schedule.
    public func memorySeries(run runID: Int64) throws(DgrunError) -> [(t: Double, bytes: UInt64)] {
        try read { db throws(DgrunError) in
            try db.rows("SELECT t_s, memory_bytes FROM sample WHERE run_id = ? AND memory_bytes IS NOT NULL ORDER BY t_s", [runID]) { row throws(DgrunError) in
                (t: try row.double(0), bytes: UInt64(max(0, try row.int64(1))))
            }
        }
    }

    // MARK: - reading

    public func task(id: String) throws(DgrunError) -> TaskState? {
        let id = enc(id)
        return try read { db throws(DgrunError) in
            try db.first("SELECT id, dir, stale_reason, graph_version FROM task WHERE id = ?", [id]) { row throws(DgrunError) in
                TaskState(id: dec(try row.text(0)), directory: dec(try row.text(1)),
                          staleReason: try row.optionalText(2), graphVersion: try row.optionalInt64(3))
            }
        }
    }

    /// The task's dependencies as its last finished run recorded them (the planner's input).
    public func dependencies(task taskID: String) throws(DgrunError) -> [Dependency] {
        let storedID = enc(taskID)
        return try read { db throws(DgrunError) in try readDependencies(storedID, taskID: taskID, in: db) }
    }

    /// Only the dependencies that are not paths (services, names, the network the run used): what
    /// the planner still checks one by one when `FileChecks` found every file unchanged. Refs sort
    /// with paths (`/…`, `./…`, `../…`) between '.' and '0', so this reads two ranges of the key.
    public func nonPathDependencies(task taskID: String) throws(DgrunError) -> [Dependency] {
        let storedID = enc(taskID)
        // One statement for both ranges (each side still a range of the key): a second prepared
        // 13-column statement cost 0.13 M instructions a store, the union 0.07 M more than one.
        return try read { db throws(DgrunError) in
            try readDependencies(storedID, taskID: taskID, in: db, filter: "AND ref < '.'", union: "AND ref >= '0'")
        }
    }

    /// Read column by column without type checks: the no-op check of a large task was mostly this
    /// read, and a wrong value only makes a dependency that does not match (the task reruns).
    func readDependencies(_ storedID: String, taskID: String, in db: SQLiteConnection, filter: String = "",
                          union: String? = nil) throws(DgrunError) -> [Dependency] {
        let relocation = self.relocation
        var result: [Dependency] = []
        if filter.isEmpty {
            let count = try db.first("SELECT count(*) FROM dependency WHERE task_id = ?", [storedID]) { row throws(DgrunError) in try row.int64(0) } ?? 0
            result.reserveCapacity(Int(clamping: max(0, count)))
        }
        let columns = "node_id, kind, ref, relation, version, size, mtime_ns, ctime_ns, inode, device, priority, cost_bytes, traced"
        let statement = try db.prepare("SELECT \(columns) FROM dependency WHERE task_id = ?1 \(filter)"
            + (union.map { " UNION ALL SELECT \(columns) FROM dependency WHERE task_id = ?1 \($0)" } ?? ""))
        try statement.bind([storedID])
        defer { statement.reset() }
        let row = statement.row
        while try statement.step() {
            var fingerprint: FileFingerprint? = nil
            if !row.isNull(5) {
                fingerprint = FileFingerprint(size: row.uncheckedInt64(5), mtimeNs: row.uncheckedInt64(6),
                                              ctimeNs: row.uncheckedInt64(7),
                                              inode: UInt64(bitPattern: row.uncheckedInt64(8)),
                                              device: UInt64(bitPattern: row.uncheckedInt64(9)))
            }
            let stored = row.uncheckedText(2)
            let ref = relocation?.decode(stored) ?? stored
            let nodeID = row.byteCount(0) == 0 ? "file:" + ref
                : relocation.map { $0.decodeNodeID(row.uncheckedText(0)) } ?? row.uncheckedText(0)
            result.append(Dependency(nodeID: nodeID, kind: row.uncheckedText(1), ref: ref,
                                     relation: Dependency.Relation(rawValue: row.uncheckedText(3)) ?? .reads,
                                     version: row.isNull(4) ? nil : row.uncheckedText(4),
                                     fingerprint: fingerprint, priority: Int(truncatingIfNeeded: row.uncheckedInt64(10)),
                                     costBytes: row.uncheckedInt64(11), traced: row.uncheckedInt64(12) != 0))
        }
        return result
    }

    /// The newest runs first.
    public func runs(task taskID: String?, limit: Int = 50) throws(DgrunError) -> [RunRecord] {
        try read { db throws(DgrunError) in
            let filter = taskID == nil ? "" : "WHERE task_id = ?"
            let arguments: [any SQLArgument] = taskID.map { [enc($0), limit] } ?? [limit]
            return try db.rows("SELECT \(Self.runColumns) FROM run \(filter) ORDER BY id DESC LIMIT ?", arguments) { row throws(DgrunError) in
                decoded(try Self.runRecord(row))
            }
        }
    }

    /// What the tuner needs of past runs, newest first: only numeric columns (no JSON to decode),
    /// because every tuned `exec -- CMD` reads it before it starts.
    public func usage(task taskID: String, limit: Int) throws(DgrunError) -> [RunUsage] {
        try read { db throws(DgrunError) in
            try db.rows("""
                SELECT id, status, exit_code, oom_killed, memory_peak_bytes, wall_s, cpu_user_s, cpu_sys_s
                FROM run WHERE task_id = ? ORDER BY id DESC LIMIT ?
                """, [enc(taskID), limit]) { row throws(DgrunError) in
                let user = try row.optionalDouble(6), system = try row.optionalDouble(7)
                let cpu = user.map { $0 + (system ?? 0) }
                let status = try row.text(1), exitCode = try row.optionalInt32(2), oomKilled = try row.bool(3)
                let succeeded = status == "finished" && exitCode == 0 && !oomKilled
                return RunUsage(id: try row.int64(0), succeeded: succeeded, memoryPeakBytes: try row.optionalInt64(4),
                                wallSeconds: try row.optionalDouble(5), cpuSeconds: cpu)
            }
        }
    }

    /// A finished run and its samples in one transaction (ad-hoc runs are recorded after the fact).
    public func recordFinished(_ record: RunRecord, samples: [UsageSample]) throws(DgrunError) {
        try write { db throws(DgrunError) in
            try db.execute("""
                INSERT INTO run(task_id, status, started_at, finished_at, pid, argv, env_digest, reasons, limits, exit_code,
                    signal, oom_killed, timed_out, wall_s, cpu_user_s, cpu_sys_s, memory_peak_bytes, pids_peak, outputs, adjustments,
                    action_key, restored_from)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [enc(record.taskID), record.status.rawValue, record.startedAt, record.finishedAt, record.pid,
                      JSONText.encode(record.argv), record.environmentDigest, JSONText.encode(record.reasons),
                      record.limitsJSON, record.exitCode, record.signal, record.oomKilled, record.timedOut,
                      record.wallSeconds, record.cpuUserSeconds, record.cpuSystemSeconds, record.memoryPeakBytes,
                      record.pidsPeak, encOutputs(record.outputs), record.adjustmentsJSON,
                      record.actionKey, record.restoredFrom])
            try Self.insert(samples, run: db.lastInsertedRowID, in: db)
        }
        // The ad-hoc history: opened by every start of a command that has some, never by a run
        // shorter than 0.1 s, so its WAL would otherwise grow until SQLite's own 4 MB checkpoint.
        checkpointIfLarge()
    }

    /// The last run that finished (any exit status), the source of history-based decisions.
    public func lastFinishedRun(task taskID: String) throws(DgrunError) -> RunRecord? {
        try read { db throws(DgrunError) in
            try db.first("SELECT \(Self.runColumns) FROM run WHERE task_id = ? AND status = 'finished' ORDER BY id DESC LIMIT 1",
                         [enc(taskID)]) { row throws(DgrunError) in decoded(try Self.runRecord(row)) }
        }
    }

    /// The last finished run with only what the no-op check and the pool read of it: its exit
    /// status, argv, environment digest, peak memory, times and action key. Preparing the whole
    /// row's statement (24 columns) cost 0.23 M instructions in each task's store, a tenth of a
    /// workspace's no-op; this one 10. The rest (reasons, limits, outputs, adjustments, pid and
    /// start) keeps RunRecord's defaults: what follows a decision to run reads `lastFinishedRun`.
    public func lastFinishedRunSummary(task taskID: String) throws(DgrunError) -> RunRecord? {
        try read { db throws(DgrunError) in
            try db.first("""
                SELECT id, argv, env_digest, exit_code, signal, wall_s, cpu_user_s, cpu_sys_s, memory_peak_bytes, action_key
                FROM run WHERE task_id = ? AND status = 'finished' ORDER BY id DESC LIMIT 1
                """, [enc(taskID)]) { row throws(DgrunError) in
                var record = RunRecord(taskID: taskID, status: .finished, startedAt: 0, pid: 0,
                                       argv: JSONText.decodeStrings(try row.optionalText(1)),
                                       environmentDigest: try row.text(2), reasons: [])
                record.id = try row.int64(0)
                record.exitCode = try row.optionalInt32(3)
                record.signal = try row.optionalInt32(4)
                record.wallSeconds = try row.optionalDouble(5)
                record.cpuUserSeconds = try row.optionalDouble(6)
                record.cpuSystemSeconds = try row.optionalDouble(7)
                record.memoryPeakBytes = try row.optionalInt64(8)
                record.actionKey = try row.optionalText(9)
                return record
            }
        }
    }

    public func graphJSON(version: Int64) throws(DgrunError) -> String? {
        let found = try read { db throws(DgrunError) in
            try db.first("SELECT json, in_file FROM graph_version WHERE id = ?", [version]) { row throws(DgrunError) in
                (json: try row.text(0), inFile: try row.bool(1))
            }
        }
        guard let found else { return nil }
        guard found.inFile else { return found.json }
        let file = graphFile(version)
        guard FileIO.exists(file) else { return nil }  // replaced by a newer run since the row was read
        do throws(SystemError) { return try FileIO.read(file, limit: Int.max) } catch {
            throw DgrunError.store("cannot read the recorded graph \(file): \(error)")
        }
    }

    /// The file of a recorded graph (a row marked in_file): named by its id alone, never by
    /// anything read from the store, which the task may have written.
    func graphFile(_ version: Int64) -> String { directory + "/graph-\(version).json" }

    /// `PRAGMA integrity_check` plus the invariants dgrun relies on; empty when all hold.
    public func consistencyProblems() throws(DgrunError) -> [String] {
        try read { db throws(DgrunError) in
            var problems = try db.rows("PRAGMA integrity_check") { row throws(DgrunError) in row.uncheckedText(0) }.filter { $0 != "ok" }
            problems += try db.rows("PRAGMA foreign_key_check") { row throws(DgrunError) in
                "\(row.uncheckedText(0)) row \(row.uncheckedInt64(1)) refers to a missing \(row.uncheckedText(2))"
            }
            let orphans = try db.first("SELECT count(*) FROM run WHERE task_id NOT IN (SELECT id FROM task)") { row throws(DgrunError) in try row.int64(0) } ?? 0
            if orphans > 0 { problems.append("\(orphans) runs of unknown tasks") }
            let unfinished = try db.first("SELECT count(*) FROM run WHERE status = 'finished' AND finished_at IS NULL") { row throws(DgrunError) in try row.int64(0) } ?? 0
            if unfinished > 0 { problems.append("\(unfinished) finished runs without an end time") }
            let graphs = try db.rows("SELECT id FROM graph_version WHERE in_file = 1") { row throws(DgrunError) in try row.int64(0) }
            let missing = graphs.filter { !FileIO.exists(graphFile($0)) }
            if !missing.isEmpty { problems.append("\(missing.count) recorded graphs without their file (\(missing.map { graphFile($0) }.joined(separator: ", ")))") }
            return problems
        }
    }

    /// The columns `runRecord` reads, in its order.
    static let runColumns = """
        id, task_id, status, started_at, finished_at, pid, argv, env_digest, reasons, limits, exit_code, signal, oom_killed,
        timed_out, wall_s, cpu_user_s, cpu_sys_s, memory_peak_bytes, pids_peak, outputs, adjustments, graph_version,
        action_key, restored_from
        """

    /// A run row (`runColumns`). The throwing reads: a task can write its own .dgrun/state.db, so a
    /// value of the wrong type or range is a store error (found by FuzzStoreRows).
    static func runRecord(_ row: SQLiteRow) throws(DgrunError) -> RunRecord {
        var record = RunRecord(taskID: try row.text(1),
                               status: RunRecord.Status(rawValue: try row.text(2)) ?? .abandoned,
                               startedAt: try row.double(3), pid: try row.int32(5),
                               argv: JSONText.decodeStrings(try row.optionalText(6)),
                               environmentDigest: try row.text(7),
                               reasons: JSONText.decodeStrings(try row.optionalText(8)),
                               limitsJSON: try row.text(9))
        record.id = try row.int64(0)
        record.finishedAt = try row.optionalDouble(4)
        record.exitCode = try row.optionalInt32(10)
        record.signal = try row.optionalInt32(11)
        record.oomKilled = try row.bool(12)
        record.timedOut = try row.bool(13)
        record.wallSeconds = try row.optionalDouble(14)
        record.cpuUserSeconds = try row.optionalDouble(15)
        record.cpuSystemSeconds = try row.optionalDouble(16)
        record.memoryPeakBytes = try row.optionalInt64(17)
        record.pidsPeak = try row.optionalInt64(18)
        record.outputs = JSONText.decodeStringMap(try row.optionalText(19))
        record.adjustmentsJSON = try row.text(20)
        record.graphVersion = try row.optionalInt64(21)
        record.actionKey = try row.optionalText(22)
        record.restoredFrom = try row.optionalText(23)
        return record
    }

    // MARK: - locks

    /// Runs `body` holding an exclusive flock on `path` (created when missing).
    static func withFileLock<T>(_ path: String, _ body: () throws(DgrunError) -> T) throws(DgrunError) -> T {
        let lock = try FileLock.acquire(path)
        defer { lock.release() }
        return try body()
    }
}
