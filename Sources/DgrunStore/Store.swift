import DgrunSpec
import DgrunSystem
import GRDB
import GRDBSQLite
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
    let queue: DatabaseQueue

    public static let fileName = "state.db"

    /// Opens (creating when needed) DIR/state.db and brings its schema up to date.
    public init(directory: String, relocation: PathRelocation? = nil) throws(DgrunError) {
        self.directory = directory
        self.relocation = relocation
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw DgrunError.store("cannot create the state directory \(directory): \(String(cString: strerror(errno))); pass --state DIR or set DGRUN_STATE_DIR to a writable place")
        }
        var config = Configuration()
        // Another dgrun may be writing (a workspace runs tasks in parallel): wait, do not fail.
        config.busyMode = .timeout(30)
        config.prepareDatabase { db in
            // mmap: a large task's dependency rows are read without a pread per page.
            try db.execute(sql: "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA mmap_size = 268435456")
        }
        let path = directory + "/" + Self.fileName
        do {
            // A new store is created and migrated under a lock, and so is one whose migrations are
            // not all there: two dgruns opening a new store at once must not both create it (a
            // reader could see a file with no tables yet).
            let migrator = Self.migrator(relocation: relocation)
            let lockPath = directory + "/state.db.lock"
            if !FileIO.exists(path) {
                queue = try Self.withFileLock(lockPath) {
                    let queue = try DatabaseQueue(path: path, configuration: config)
                    try migrator.migrate(queue)
                    return queue
                }
            } else {
                queue = try DatabaseQueue(path: path, configuration: config)
                if (try? queue.read(migrator.hasCompletedMigrations)) != true {
                    try Self.withFileLock(lockPath) { try migrator.migrate(queue) }
                }
            }
        } catch let error as DgrunError {
            throw error
        } catch {
            throw DgrunError.store("cannot open the state store \(path): \(error)")
        }
    }

    static func migrator(relocation: PathRelocation?) -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
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
                """)
        }
        // v2 (issue 12): the action key of each run, where a restored run came from, and the
        // task's paths made relative to it (see PathRelocation), so that a copy plans the same.
        migrator.registerMigration("v2") { db in
            try db.execute(sql: """
                ALTER TABLE run ADD COLUMN action_key TEXT;
                ALTER TABLE run ADD COLUMN restored_from TEXT;
                """)
            if let relocation { try Self.relocate(db, to: relocation) }
        }
        return migrator
    }

    /// Rewrites a v1 store's absolute paths into the relative form. The old location is the row
    /// of this task, or the only task of the store (a store copied before it was migrated).
    static func relocate(_ db: Database, to relocation: PathRelocation) throws {
        let tasks = try String.fetchAll(db, sql: "SELECT id FROM task")
        guard let old = tasks.first(where: { $0 == relocation.taskDirectory }) ?? (tasks.count == 1 ? tasks[0] : nil),
              old.hasPrefix("/") else { return }
        let oldParent = String(old[..<(old.lastIndex(of: "/") ?? old.startIndex)])
        let from = PathRelocation(taskDirectory: old, workspaceRoot: relocation.workspaceRoot == nil ? nil : oldParent)
        try db.execute(sql: "UPDATE task SET id = '.', dir = '.' WHERE id = ?", arguments: [old])
        try db.execute(sql: "UPDATE graph_version SET task_id = '.' WHERE task_id = ?", arguments: [old])
        for row in try Row.fetchAll(db, sql: "SELECT id, outputs FROM run WHERE task_id = ?", arguments: [old]) {
            let outputs = JSONText.decodeStringMap(try row.decode(forColumn: "outputs"))
            let encoded = Dictionary(outputs.map { (from.encode($0.key), $0.value) }, uniquingKeysWith: { a, _ in a })
            try db.execute(sql: "UPDATE run SET task_id = '.', outputs = ? WHERE id = ?",
                           arguments: [JSONText.encode(encoded), try row.decode(Int64.self, forColumn: "id")])
        }
        let rows = try Row.fetchAll(db, sql: "SELECT * FROM dependency WHERE task_id = ?", arguments: [old])
        try db.execute(sql: "DELETE FROM dependency WHERE task_id = ?", arguments: [old])
        for row in rows {
            let ref: String = try row.decode(forColumn: "ref")
            let nodeID: String = try row.decode(forColumn: "node_id")
            try db.execute(sql: """
                INSERT OR REPLACE INTO dependency(task_id, node_id, kind, ref, relation, version, size, mtime_ns, ctime_ns,
                    inode, device, priority, cost_bytes, traced) VALUES ('.', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [nodeID.isEmpty ? "" : from.encodeNodeID(nodeID), try row.decode(String.self, forColumn: "kind"),
                                 from.encode(ref), try row.decode(String.self, forColumn: "relation"),
                                 try row.decode(String?.self, forColumn: "version"), try row.decode(Int64?.self, forColumn: "size"),
                                 try row.decode(Int64?.self, forColumn: "mtime_ns"), try row.decode(Int64?.self, forColumn: "ctime_ns"),
                                 try row.decode(Int64?.self, forColumn: "inode"), try row.decode(Int64?.self, forColumn: "device"),
                                 try row.decode(Int64.self, forColumn: "priority"), try row.decode(Int64.self, forColumn: "cost_bytes"),
                                 try row.decode(Int64.self, forColumn: "traced")])
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

    /// One immediate write transaction: concurrent writers queue on the busy timeout instead of
    /// failing halfway through a deferred upgrade.
    func write<T>(_ body: (Database) throws -> T) throws(DgrunError) -> T {
        do {
            return try queue.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        } catch let error as DgrunError {
            throw error
        } catch {
            throw DgrunError.store("state store \(directory): \(error)")
        }
    }

    func read<T>(_ body: (Database) throws -> T) throws(DgrunError) -> T {
        do { return try queue.read(body) } catch {
            throw DgrunError.store("state store \(directory): \(error)")
        }
    }

    public func registerTask(id: String, directory: String) throws(DgrunError) {
        let id = enc(id), directory = enc(directory)
        // Read first: the no-op path of `exec` then writes nothing at all.
        if try read({ db in try String.fetchOne(db, sql: "SELECT dir FROM task WHERE id = ?", arguments: [id]) }) == directory { return }
        try write { db in
            try db.execute(sql: "INSERT INTO task(id, dir) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET dir = excluded.dir",
                           arguments: [id, directory])
        }
    }

    /// Records a run as started; returns its id. The row stays `running` until `finishRun`.
    public func beginRun(_ record: RunRecord, pidStartTime: UInt64?) throws(DgrunError) -> Int64 {
        try write { db in
            try db.execute(sql: """
                INSERT INTO run(task_id, status, started_at, pid, pid_start_time, argv, env_digest, reasons, limits)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [enc(record.taskID), record.status.rawValue, record.startedAt, record.pid,
                                 pidStartTime.map { Int64(bitPattern: $0) }, JSONText.encode(record.argv),
                                 record.environmentDigest, JSONText.encode(record.reasons), record.limitsJSON])
            return db.lastInsertedRowID
        }
    }

    /// Completes a run and, in the same transaction, replaces the task's dependencies with what this
    /// run used (when it recorded a graph) and clears its stale mark: a reader sees all or nothing.
    public func finishRun(_ record: RunRecord, id: Int64, graphJSON: String?, dependencies: [Dependency]?) throws(DgrunError) {
        try write { db in
            var graphVersion: Int64? = nil
            if let graphJSON {
                try db.execute(sql: "INSERT INTO graph_version(task_id, created_at, json) VALUES (?, ?, ?)",
                               arguments: [enc(record.taskID), record.finishedAt ?? record.startedAt, graphJSON])
                graphVersion = db.lastInsertedRowID
            }
            try db.execute(sql: """
                UPDATE run SET status = ?, finished_at = ?, exit_code = ?, signal = ?, oom_killed = ?, timed_out = ?,
                    wall_s = ?, cpu_user_s = ?, cpu_sys_s = ?, memory_peak_bytes = ?, pids_peak = ?, outputs = ?,
                    adjustments = ?, graph_version = ?, reasons = ?, limits = ?, action_key = ?, restored_from = ?
                WHERE id = ?
                """, arguments: [record.status.rawValue, record.finishedAt, record.exitCode, record.signal,
                                 record.oomKilled, record.timedOut, record.wallSeconds, record.cpuUserSeconds,
                                 record.cpuSystemSeconds, record.memoryPeakBytes, record.pidsPeak,
                                 encOutputs(record.outputs), record.adjustmentsJSON, graphVersion,
                                 JSONText.encode(record.reasons), record.limitsJSON, record.actionKey, record.restoredFrom, id])
            if let dependencies {
                try replace(dependencies, of: record.taskID, in: db)
                try db.execute(sql: "UPDATE task SET stale_reason = NULL, graph_version = COALESCE(?, graph_version) WHERE id = ?",
                               arguments: [graphVersion, enc(record.taskID)])
            }
        }
    }

    /// A run the planner refused: kept in the history with its reasons.
    public func recordBlocked(_ record: RunRecord) throws(DgrunError) {
        var record = record
        record.status = .blocked
        let id = try beginRun(record, pidStartTime: nil)
        try finishRun(record, id: id, graphJSON: nil, dependencies: nil)
    }

    func replace(_ dependencies: [Dependency], of taskID: String, in db: Database) throws {
        let taskID = enc(taskID)
        try db.execute(sql: "DELETE FROM dependency WHERE task_id = ?", arguments: [taskID])
        let statement = try db.makeStatement(sql: """
            INSERT OR REPLACE INTO dependency(task_id, node_id, kind, ref, relation, version, size, mtime_ns, ctime_ns,
                inode, device, priority, cost_bytes, traced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        for d in dependencies {
            let f = d.fingerprint
            // The usual id, "file:" + ref, is implied (NULL): a fifth less to read on every check.
            let nodeID: String? = d.nodeID == "file:" + d.ref ? nil : relocation?.encodeNodeID(d.nodeID) ?? d.nodeID
            try statement.execute(arguments: [taskID, nodeID ?? "", d.kind, enc(d.ref), d.relation.rawValue, d.version,
                                              f?.size, f?.mtimeNs, f?.ctimeNs, f.map { Int64(bitPattern: $0.inode) },
                                              f.map { Int64(bitPattern: $0.device) }, d.priority, d.costBytes, d.traced])
        }
    }

    /// A file whose stat moved but whose content hashed the same: remember the new stat so the
    /// next check is fast again.
    public func refreshFingerprints(task taskID: String, _ updates: [(nodeID: String, ref: String, relation: Dependency.Relation, fingerprint: FileFingerprint)]) throws(DgrunError) {
        guard !updates.isEmpty else { return }
        let taskID = enc(taskID)
        try write { db in
            let statement = try db.makeStatement(sql: """
                UPDATE dependency SET size = ?, mtime_ns = ?, ctime_ns = ?, inode = ?, device = ?
                WHERE task_id = ? AND ref = ? AND relation = ? AND node_id = ?
                """)
            for u in updates {
                let f = u.fingerprint
                let nodeID = u.nodeID == "file:" + u.ref ? "" : relocation?.encodeNodeID(u.nodeID) ?? u.nodeID
                try statement.execute(arguments: [f.size, f.mtimeNs, f.ctimeNs, Int64(bitPattern: f.inode),
                                                  Int64(bitPattern: f.device), taskID, enc(u.ref), u.relation.rawValue, nodeID])
            }
        }
    }

    public func markStale(task taskID: String, reason: String) throws(DgrunError) {
        let taskID = enc(taskID)
        try write { db in
            try db.execute(sql: "UPDATE task SET stale_reason = ? WHERE id = ? AND stale_reason IS NULL", arguments: [reason, taskID])
        }
    }

    /// Runs left `running` by a dgrun that no longer exists (kill -9): marked abandoned, so history
    /// tells the truth and the task's dependencies stay those of its last finished run.
    @discardableResult
    public func settleAbandonedRuns(task taskID: String, isAlive: (Int32, UInt64?) -> Bool) throws(DgrunError) -> Int {
        let taskID = enc(taskID)
        let running = try read { db in
            try Row.fetchAll(db, sql: "SELECT id, pid, pid_start_time FROM run WHERE task_id = ? AND status = 'running'",
                             arguments: [taskID])
                .map { (id: try $0.decode(Int64.self, forColumn: "id"), pid: try $0.decode(Int32.self, forColumn: "pid"),
                        start: try $0.decode(Int64?.self, forColumn: "pid_start_time").map { UInt64(bitPattern: $0) }) }
        }
        let dead = running.filter { !isAlive($0.pid, $0.start) }
        guard !dead.isEmpty else { return 0 }
        try write { db in
            for run in dead {
                try db.execute(sql: "UPDATE run SET status = 'abandoned' WHERE id = ? AND status = 'running'", arguments: [run.id])
            }
        }
        return dead.count
    }

    public func addSamples(_ samples: [UsageSample], run runID: Int64) throws(DgrunError) {
        guard !samples.isEmpty else { return }
        try write { db in try Self.insert(samples, run: runID, in: db) }
    }

    static func insert(_ samples: [UsageSample], run runID: Int64, in db: Database) throws {
        guard !samples.isEmpty else { return }
        let statement = try db.makeStatement(sql: """
            INSERT INTO sample(run_id, t_s, memory_bytes, cpu_s, psi_memory, psi_cpu, psi_io, pids) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """)
        for s in samples {
            try statement.execute(arguments: [runID, s.seconds, s.memoryBytes.map { Int64($0) }, s.cpuSeconds, s.memoryStall,
                                              s.cpuStall, s.ioStall, s.pids.map { Int64($0) }])
        }
    }

    /// The memory series of a run (time, bytes), for the tuner's usage schedule.
    public func memorySeries(run runID: Int64) throws(DgrunError) -> [(t: Double, bytes: UInt64)] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT t_s, memory_bytes FROM sample WHERE run_id = ? AND memory_bytes IS NOT NULL ORDER BY t_s",
                             arguments: [runID]).map { (t: try $0.decode(Double.self, atIndex: 0),
                                                        bytes: UInt64(max(0, try $0.decode(Int64.self, atIndex: 1)))) }
        }
    }

    // MARK: - reading

    public func task(id: String) throws(DgrunError) -> TaskState? {
        let id = enc(id)
        return try read { db in
            try Row.fetchOne(db, sql: "SELECT id, dir, stale_reason, graph_version FROM task WHERE id = ?", arguments: [id])
                .map { TaskState(id: dec(try $0.decode(forColumn: "id")), directory: dec(try $0.decode(forColumn: "dir")),
                                 staleReason: try $0.decode(forColumn: "stale_reason"), graphVersion: try $0.decode(forColumn: "graph_version")) }
        }
    }

    /// The task's dependencies as its last finished run recorded them (the planner's input).
    /// Read column by column from SQLite: the no-op check of a large task is mostly this read,
    /// and GRDB's generic Row decoding cost ~5 µs a row against ~1 µs here.
    public func dependencies(task taskID: String) throws(DgrunError) -> [Dependency] {
        let storedID = enc(taskID)
        let relocation = self.relocation
        return try read { db in
            let statement = try db.makeStatement(sql: """
                SELECT node_id, kind, ref, relation, version, size, mtime_ns, ctime_ns, inode, device, priority, cost_bytes, traced
                FROM dependency WHERE task_id = ?
                """)
            statement.arguments = [storedID]
            let s = statement.sqliteStatement
            func text(_ i: Int32) -> String? {
                guard let p = sqlite3_column_text(s, i) else { return nil }
                return String(decoding: UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(s, i))), as: UTF8.self)
            }
            var result: [Dependency] = []
            result.reserveCapacity(Int(try Int.fetchOne(db, sql: "SELECT count(*) FROM dependency WHERE task_id = ?", arguments: [storedID]) ?? 0))
            while true {
                let rc = sqlite3_step(s)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else { throw DgrunError.store("reading the dependencies of \(taskID): \(String(cString: sqlite3_errstr(rc)))") }
                var fingerprint: FileFingerprint? = nil
                if sqlite3_column_type(s, 5) != SQLITE_NULL {
                    fingerprint = FileFingerprint(size: sqlite3_column_int64(s, 5), mtimeNs: sqlite3_column_int64(s, 6),
                                                  ctimeNs: sqlite3_column_int64(s, 7),
                                                  inode: UInt64(bitPattern: sqlite3_column_int64(s, 8)),
                                                  device: UInt64(bitPattern: sqlite3_column_int64(s, 9)))
                }
                let stored = text(2) ?? ""
                let ref = relocation?.decode(stored) ?? stored
                let nodeID = sqlite3_column_bytes(s, 0) == 0 ? "file:" + ref
                    : relocation.map { r in text(0).map(r.decodeNodeID) ?? "" } ?? text(0) ?? ""
                result.append(Dependency(nodeID: nodeID, kind: text(1) ?? "", ref: ref,
                                         relation: Dependency.Relation(rawValue: text(3) ?? "") ?? .reads, version: text(4),
                                         fingerprint: fingerprint, priority: Int(sqlite3_column_int64(s, 10)),
                                         costBytes: sqlite3_column_int64(s, 11), traced: sqlite3_column_int64(s, 12) != 0))
            }
            sqlite3_reset(s)
            return result
        }
    }

    /// The newest runs first.
    public func runs(task taskID: String?, limit: Int = 50) throws(DgrunError) -> [RunRecord] {
        try read { db in
            let filter = taskID == nil ? "" : "WHERE task_id = ?"
            let arguments: StatementArguments = taskID.map { [enc($0), limit] } ?? [limit]
            return try Row.fetchAll(db, sql: "SELECT * FROM run \(filter) ORDER BY id DESC LIMIT ?", arguments: arguments)
                .map { decoded(try Self.runRecord($0)) }
        }
    }

    /// What the tuner needs of past runs, newest first: only numeric columns (no JSON to decode),
    /// because every tuned `exec -- CMD` reads it before it starts.
    public func usage(task taskID: String, limit: Int) throws(DgrunError) -> [RunUsage] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT id, status, exit_code, oom_killed, memory_peak_bytes, wall_s, cpu_user_s, cpu_sys_s
                FROM run WHERE task_id = ? ORDER BY id DESC LIMIT ?
                """, arguments: [enc(taskID), limit]).map { row in
                let cpu = try row.decode(Double?.self, atIndex: 6).map { $0 + ((try row.decode(Double?.self, atIndex: 7)) ?? 0) }
                let succeeded = try row.decode(String.self, atIndex: 1) == "finished" && row.decode(Int32?.self, atIndex: 2) == 0
                    && !(try row.decode(Bool.self, atIndex: 3))
                return RunUsage(id: try row.decode(atIndex: 0), succeeded: succeeded, memoryPeakBytes: try row.decode(atIndex: 4),
                                wallSeconds: try row.decode(atIndex: 5), cpuSeconds: cpu)
            }
        }
    }

    /// A finished run and its samples in one transaction (ad-hoc runs are recorded after the fact).
    public func recordFinished(_ record: RunRecord, samples: [UsageSample]) throws(DgrunError) {
        try write { db in
            try db.execute(sql: """
                INSERT INTO run(task_id, status, started_at, finished_at, pid, argv, env_digest, reasons, limits, exit_code,
                    signal, oom_killed, timed_out, wall_s, cpu_user_s, cpu_sys_s, memory_peak_bytes, pids_peak, outputs, adjustments,
                    action_key, restored_from)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [enc(record.taskID), record.status.rawValue, record.startedAt, record.finishedAt, record.pid,
                                 JSONText.encode(record.argv), record.environmentDigest, JSONText.encode(record.reasons),
                                 record.limitsJSON, record.exitCode, record.signal, record.oomKilled, record.timedOut,
                                 record.wallSeconds, record.cpuUserSeconds, record.cpuSystemSeconds, record.memoryPeakBytes,
                                 record.pidsPeak, encOutputs(record.outputs), record.adjustmentsJSON,
                                 record.actionKey, record.restoredFrom])
            try Self.insert(samples, run: db.lastInsertedRowID, in: db)
        }
    }

    /// The last run that finished (any exit status), the source of history-based decisions.
    public func lastFinishedRun(task taskID: String) throws(DgrunError) -> RunRecord? {
        try read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM run WHERE task_id = ? AND status = 'finished' ORDER BY id DESC LIMIT 1",
                             arguments: [enc(taskID)]).map { decoded(try Self.runRecord($0)) }
        }
    }

    public func graphJSON(version: Int64) throws(DgrunError) -> String? {
        try read { db in try String.fetchOne(db, sql: "SELECT json FROM graph_version WHERE id = ?", arguments: [version]) }
    }

    /// `PRAGMA integrity_check` plus the invariants dgrun relies on; empty when all hold.
    public func consistencyProblems() throws(DgrunError) -> [String] {
        try read { db in
            var problems = try String.fetchAll(db, sql: "PRAGMA integrity_check").filter { $0 != "ok" }
            problems += try String.fetchAll(db, sql: "PRAGMA foreign_key_check")
            let orphans = try Int.fetchOne(db, sql: "SELECT count(*) FROM run WHERE task_id NOT IN (SELECT id FROM task)") ?? 0
            if orphans > 0 { problems.append("\(orphans) runs of unknown tasks") }
            let unfinished = try Int.fetchOne(db, sql: "SELECT count(*) FROM run WHERE status = 'finished' AND finished_at IS NULL") ?? 0
            if unfinished > 0 { problems.append("\(unfinished) finished runs without an end time") }
            return problems
        }
    }

    /// A run row. The throwing decodes, not Row's subscripts (which trap): a task can write its own
    /// .dgrun/state.db, so a value of the wrong type or range is a store error (found by FuzzStoreRows).
    static func runRecord(_ row: Row) throws -> RunRecord {
        var record = RunRecord(taskID: try row.decode(forColumn: "task_id"),
                               status: RunRecord.Status(rawValue: try row.decode(forColumn: "status")) ?? .abandoned,
                               startedAt: try row.decode(forColumn: "started_at"), pid: try row.decode(forColumn: "pid"),
                               argv: JSONText.decodeStrings(try row.decode(forColumn: "argv")),
                               environmentDigest: try row.decode(forColumn: "env_digest"),
                               reasons: JSONText.decodeStrings(try row.decode(forColumn: "reasons")),
                               limitsJSON: try row.decode(forColumn: "limits"))
        record.id = try row.decode(forColumn: "id")
        record.finishedAt = try row.decode(forColumn: "finished_at")
        record.exitCode = try row.decode(forColumn: "exit_code")
        record.signal = try row.decode(forColumn: "signal")
        record.oomKilled = try row.decode(forColumn: "oom_killed")
        record.timedOut = try row.decode(forColumn: "timed_out")
        record.wallSeconds = try row.decode(forColumn: "wall_s")
        record.cpuUserSeconds = try row.decode(forColumn: "cpu_user_s")
        record.cpuSystemSeconds = try row.decode(forColumn: "cpu_sys_s")
        record.memoryPeakBytes = try row.decode(forColumn: "memory_peak_bytes")
        record.pidsPeak = try row.decode(forColumn: "pids_peak")
        record.outputs = JSONText.decodeStringMap(try row.decode(forColumn: "outputs"))
        record.adjustmentsJSON = try row.decode(forColumn: "adjustments")
        record.graphVersion = try row.decode(forColumn: "graph_version")
        record.actionKey = try row.decode(forColumn: "action_key")
        record.restoredFrom = try row.decode(forColumn: "restored_from")
        return record
    }

    // MARK: - locks

    /// Runs `body` holding an exclusive flock on `path` (created when missing).
    static func withFileLock<T>(_ path: String, _ body: () throws -> T) throws -> T {
        let lock = try FileLock.acquire(path)
        defer { lock.release() }
        return try body()
    }
}
