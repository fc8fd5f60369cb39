import DgrunStore
import FuzzSupport
#if canImport(Glibc)
import Glibc
#endif

// The store's rows read back. A task's state.db lives in its own directory (.dgrun/), which the
// task can write: every column can hold any SQLite value. The input is a list of values (a tag
// byte, then the value), written into one task, run, dependency, sample and graph row with a
// second connection; then every reader of the store runs over them, as is and relocated.
enum Rows {
    /// The store under test and a writer beside it, made once per process.
    nonisolated(unsafe) static var opened: (store: Store, relocated: Store, writer: SQLiteConnection)?
    nonisolated(unsafe) static var directory: String?

    /// The store's files, at exit (libFuzzer exits through exit(3) when it is done or finds a crash).
    static func remove() {
        guard let directory else { return }
        for name in [Store.fileName, Store.fileName + "-wal", Store.fileName + "-shm", Store.fileName + ".lock"] {
            unlink(directory + "/" + name)
        }
        rmdir(directory)
    }

    static func open() -> (store: Store, relocated: Store, writer: SQLiteConnection) {
        if let opened { return opened }
        let tmp = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array((tmp + "/dgrun-fuzz-store-XXXXXX").utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
            fatalError("mkdtemp failed")
        }
        directory = dir
        atexit { Rows.remove() }
        do {
            let store = try Store(directory: dir)
            // The same file as a task's store reads it: its paths stored relative (`.`, `./x`, `../y`).
            let relocated = try Store(directory: dir, relocation: PathRelocation(taskDirectory: "/fuzz/ws/task", workspaceRoot: "/fuzz/ws"))
            // No fsync per input: the file is thrown away, and the readers see the rows either way.
            let writer = try SQLiteConnection(path: dir + "/" + Store.fileName)
            try writer.execute("PRAGMA synchronous = OFF")
            opened = (store, relocated, writer)
            return (store, relocated, writer)
        } catch {
            fatalError("cannot create the fuzz store in \(dir): \(error)")
        }
    }
}

/// Values from the input: tag % 6 picks NULL, an integer, a real, text, a blob, or a small integer.
struct Values {
    var bytes: ArraySlice<UInt8>

    mutating func take(_ n: Int) -> [UInt8] {
        let part = Array(bytes.prefix(n))
        bytes = bytes.dropFirst(n)
        return part
    }

    mutating func next() -> SQLValue {
        guard let tag = bytes.first else { return .null }
        bytes = bytes.dropFirst()
        switch tag % 6 {
        case 0: return .null
        case 1: return .integer(Int64(bitPattern: take(8).reduce(0) { $0 << 8 | UInt64($1) }))
        case 2: return .real(Double(bitPattern: take(8).reduce(0) { $0 << 8 | UInt64($1) }))
        case 3: return .text(String(decoding: take(Int(take(1).first ?? 0)), as: UTF8.self))
        case 4: return .blob(take(Int(take(1).first ?? 0)))
        default: return .integer(Int64(tag / 6))
        }
    }

    mutating func next(_ n: Int) -> [any SQLArgument] { (0..<n).map { _ in next() } }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let (store, relocated, writer) = Rows.open()
    var values = Values(bytes: FuzzInput(data, size).bytes[...])
    // Stored relative, as a task's own store holds it: the relocated store reads it as /fuzz/ws/task.
    let taskID = "."
    do {
        try writer.transaction { () throws(DgrunError) in
            let db = writer
            try db.execute("DELETE FROM sample; DELETE FROM dependency; DELETE FROM run; DELETE FROM graph_version; DELETE FROM task")
            try db.execute("INSERT INTO task(id, dir, stale_reason, graph_version, file_checks) VALUES (?, ?, ?, ?, ?)",
                           [taskID, values.next(), values.next(), 1, values.next()])
            // A row that breaks a NOT NULL or type rule is refused by SQLite itself: skip that one.
            try? db.execute("INSERT INTO graph_version(id, task_id, created_at, json) VALUES (1, ?, ?, ?)",
                            [taskID] + values.next(2))
            try? db.execute("""
                INSERT INTO run(id, task_id, status, started_at, finished_at, pid, pid_start_time, argv, env_digest, reasons,
                    limits, exit_code, signal, oom_killed, timed_out, wall_s, cpu_user_s, cpu_sys_s, memory_peak_bytes,
                    pids_peak, outputs, adjustments, graph_version)
                VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [taskID] + values.next(21))
            try? db.execute("""
                INSERT INTO dependency(task_id, node_id, kind, ref, relation, version, size, mtime_ns, ctime_ns, inode, device,
                    priority, cost_bytes, traced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [taskID] + values.next(13))
            try? db.execute("INSERT INTO sample(run_id, t_s, memory_bytes, cpu_s, psi_memory, psi_cpu, psi_io, pids) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                            values.next(7))
        }
    } catch {
        return 0  // the task row itself refused (an id or dir SQLite would not take): nothing to read
    }
    // Every reader a command uses on a task's store; a thrown DgrunError is a fine answer.
    fuzzParse { () throws(DgrunError) in
        _ = try store.task(id: taskID)
        _ = try store.dependencies(task: taskID)
        _ = try store.runs(task: taskID)
        _ = try store.runs(task: nil, limit: 5)
        _ = try store.usage(task: taskID, limit: 10)
        _ = try store.lastFinishedRun(task: taskID)
        _ = try store.memorySeries(run: 1)
        _ = try store.graphJSON(version: 1)
        _ = try store.consistencyProblems()
        _ = try store.settleAbandonedRuns(task: taskID, isAlive: { _, _ in true })
        _ = try store.nonPathDependencies(task: taskID)
        // The packed file checks: every entry walked and its path decoded, as the no-op check does.
        for reader in [store, relocated] {
            _ = try reader.withFileChecks(task: reader === store ? taskID : "/fuzz/ws/task") { checks -> Bool in
                var path: [UInt8] = []
                return checks?.allSatisfy { entry in _ = checks?.absolutePath(entry.storedPath, into: &path); return true } ?? false
            }
        }
    }
    fuzzParse { () throws(DgrunError) in
        let task = "/fuzz/ws/task"
        _ = try relocated.task(id: task)
        _ = try relocated.dependencies(task: task)
        _ = try relocated.runs(task: task)
        _ = try relocated.lastFinishedRun(task: task)
        _ = try relocated.usage(task: task, limit: 10)
    }
    return 0
}

runFuzzer(fuzz)
