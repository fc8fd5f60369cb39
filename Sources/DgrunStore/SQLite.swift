import CSQLite
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

// libsqlite3's C API, thinly: a connection with prepared statements kept for its lifetime,
// immediate write transactions, a busy timeout, and typed column reads that throw instead of
// trapping (a task can write its own .dgrun/state.db, so any column can hold any value).
//
// GRDB did this before, and the store was the only user of it. It cost, measured side by side:
// it brought Foundation and ICU into the binary (23 → 86 MB, 36,000 → 84,000 relative relocations,
// `dgrun --version` 2.2 → 3.7 ms), and its statement authorizer, run on every prepare, was 44% of a
// 1,000-task workspace's no-op instructions and 46% of the 5,000-dependency no-op (BENCHMARKS.md).

/// A value bound to a statement parameter.
public enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
}

/// What can be bound to a parameter.
public protocol SQLArgument {
    var sqlValue: SQLValue { get }
}
extension SQLValue: SQLArgument { public var sqlValue: SQLValue { self } }
extension Int64: SQLArgument { public var sqlValue: SQLValue { .integer(self) } }
extension Int: SQLArgument { public var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Int32: SQLArgument { public var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Bool: SQLArgument { public var sqlValue: SQLValue { .integer(self ? 1 : 0) } }
extension Double: SQLArgument { public var sqlValue: SQLValue { .real(self) } }
extension String: SQLArgument { public var sqlValue: SQLValue { .text(self) } }
extension Optional: SQLArgument where Wrapped: SQLArgument {
    public var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

/// SQLite copies a bound text or blob (SQLITE_TRANSIENT), so the Swift buffer need not outlive the bind.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One connection to one database file. Not thread-safe by itself: `Store` serialises its use.
public final class SQLiteConnection {
    public let path: String
    let handle: OpaquePointer
    let busyTimeoutSeconds: Int32
    /// Prepared statements by their SQL: a command prepares each once, however many times it runs it.
    private var statements: [String: OpaquePointer] = [:]

    /// Process-wide settings, made before the first open (SQLite refuses them after).
    private static let configured: Void = {
        _ = dgrun_sqlite3_no_initial_page_cache()
        _ = dgrun_sqlite3_no_memory_statistics()
        _ = dgrun_sqlite3_chown_only_to_change()
    }()

    /// `readOnly`: a reader that writes nothing, not even the WAL's shared-memory index (see
    /// `Store.openExisting`). SQLite reports a store it cannot read so at the first statement.
    public init(path: String, readOnly: Bool = false, busyTimeoutSeconds: Int32 = 30) throws(DgrunError) {
        _ = Self.configured
        self.path = path
        self.busyTimeoutSeconds = busyTimeoutSeconds
        self.readOnly = readOnly
        if !readOnly { Self.waitForReadersToClose(path) }
        var db: OpaquePointer?
        // NOMUTEX: the caller serialises; SQLite's own mutex per call would be paid for nothing.
        let rc = readOnly
            ? sqlite3_open_v2(Self.readOnlyURI(path), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, nil)
            : sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_close_v2(db)
            throw DgrunError.store("cannot open the state store \(path): \(message); is its directory writable? (pass --state DIR or set DGRUN_STATE_DIR)")
        }
        handle = db
        if readOnly { Self.readers.withLock { $0[path, default: 0] += 1 } }
        sqlite3_extended_result_codes(db, 1)
        _ = dgrun_sqlite3_no_checkpoint_on_close(db)
        // Another dgrun may be writing (a workspace runs tasks in parallel): wait, do not fail.
        sqlite3_busy_timeout(db, busyTimeoutSeconds * 1000)
    }

    deinit {
        for statement in statements.values { sqlite3_finalize(statement) }
        sqlite3_close_v2(handle)
        if readOnly {
            Self.readers.withLock { readers in
                readers[path, default: 1] -= 1
                if readers[path] == 0 { readers[path] = nil }
            }
        }
    }

    let readOnly: Bool
    /// The read-only connections of this process, by path, until each has closed.
    private static let readers = Locked([String: Int]())

    /// SQLite shares one WAL index among a process's connections to a file, with the access of the
    /// first: a read-write connection opened while a read-only one is still closing (a store
    /// dropped by one thread as another opens it) would be handed that read-only index and fail
    /// at its first write. `Store` never keeps both: such a reader is one that is closing, and is
    /// waited for (a reader held past 2 s is not waited for longer).
    static func waitForReadersToClose(_ path: String) {
        for _ in 0..<2_000 {
            guard readers.withLock({ $0[path] != nil }) else { return }
            usleep(1_000)
        }
    }

    /// `file:PATH?mode=ro&readonly_shm=1`, every byte of the path but the unreserved ones and '/'
    /// percent-encoded (a '?', '#' or '%' in a path would otherwise end it or escape).
    /// readonly_shm: when no writer has the WAL's index open, SQLite builds it in this process's
    /// memory instead of truncating and rewriting the -shm file as a first connection does.
    static func readOnlyURI(_ path: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var uri = Array("file:".utf8)
        for byte in path.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "/"), UInt8(ascii: "."),
                 UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "~"):
                uri.append(byte)
            default:
                uri += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            }
        }
        uri += Array("?mode=ro&readonly_shm=1".utf8)
        return String(decoding: uri, as: UTF8.self)
    }

    func failure(_ rc: Int32, _ sql: String) -> DgrunError {
        let message = String(cString: sqlite3_errmsg(handle))
        return DgrunError.store("state store \(path): SQLite error \(rc) (\(String(cString: sqlite3_errstr(rc)))): \(message), while executing `\(sql)`")
    }

    /// A script of statements without parameters (the schema, pragmas).
    public func execute(_ sql: String) throws(DgrunError) {
        var error: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &error)
        sqlite3_free(error)
        guard rc == SQLITE_OK else { throw failure(rc, sql) }
    }

    /// One statement with parameters, run to its end.
    public func execute(_ sql: String, _ arguments: [any SQLArgument]) throws(DgrunError) {
        let statement = try prepare(sql)
        try statement.bind(arguments)
        try statement.run()
    }

    /// The statement for `sql`, prepared on first use and reset for this one.
    public func prepare(_ sql: String) throws(DgrunError) -> SQLiteStatement {
        if let known = statements[sql] {
            sqlite3_reset(known)
            sqlite3_clear_bindings(known)
            return SQLiteStatement(handle: known, connection: self, sql: sql)
        }
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw failure(rc, sql) }
        statements[sql] = statement
        return SQLiteStatement(handle: statement, connection: self, sql: sql)
    }

    public var lastInsertedRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// Copies the WAL into the database and empties it, if no reader is in the way (never waits).
    /// Until the next write, readers would otherwise read every page the last write touched from
    /// the WAL with a pread each (1,206 of them in a 5,000-dependency no-op) instead of the map.
    public func checkpoint() {
        sqlite3_busy_timeout(handle, 0)
        _ = sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_TRUNCATE, nil, nil)
        sqlite3_busy_timeout(handle, busyTimeoutSeconds * 1000)
    }

    /// Every row of a query, each turned into a value by `row`.
    public func rows<T>(_ sql: String, _ arguments: [any SQLArgument] = [],
                        _ row: (SQLiteRow) throws(DgrunError) -> T) throws(DgrunError) -> [T] {
        let statement = try prepare(sql)
        try statement.bind(arguments)
        defer { statement.reset() }
        var result: [T] = []
        while try statement.step() { result.append(try row(statement.row)) }
        return result
    }

    /// The first row of a query, or nil when it has none.
    public func first<T>(_ sql: String, _ arguments: [any SQLArgument] = [],
                         _ row: (SQLiteRow) throws(DgrunError) -> T) throws(DgrunError) -> T? {
        let statement = try prepare(sql)
        try statement.bind(arguments)
        defer { statement.reset() }
        return try statement.step() ? try row(statement.row) : nil
    }

    /// An immediate write transaction: concurrent writers queue on the busy timeout at BEGIN
    /// instead of failing halfway through a deferred upgrade. Rolled back when `body` throws.
    public func transaction<T>(_ body: () throws(DgrunError) -> T) throws(DgrunError) -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            sqlite3_exec(handle, "ROLLBACK", nil, nil, nil)
            throw error
        }
    }
}

/// A prepared statement of a connection (owned by it).
public struct SQLiteStatement {
    let handle: OpaquePointer
    let connection: SQLiteConnection
    let sql: String

    public func bind(_ arguments: [any SQLArgument]) throws(DgrunError) {
        for (index, argument) in arguments.enumerated() {
            let i = Int32(index + 1)
            let rc: Int32
            switch argument.sqlValue {
            case .null: try bindNull(i); continue
            case .integer(let v): try bind(i, v); continue
            case .text(let v): try bind(i, v); continue
            case .real(let v): rc = sqlite3_bind_double(handle, i, v)
            case .blob(let v): rc = v.withUnsafeBytes { sqlite3_bind_blob(handle, i, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32($0.count), transient) }
            }
            guard rc == SQLITE_OK else { throw connection.failure(rc, sql) }
        }
    }

    // Typed binds, for statements run once a row (8,000 dependency rows): the array of
    // existentials above cost an allocation and a box per value.
    public func bind(_ i: Int32, _ value: String) throws(DgrunError) {
        var value = value
        let rc = value.withUTF8 { sqlite3_bind_text(handle, i, UnsafeRawPointer($0.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self), Int32($0.count), transient) }
        guard rc == SQLITE_OK else { throw connection.failure(rc, sql) }
    }
    public func bind(_ i: Int32, _ value: String?) throws(DgrunError) {
        if let value { try bind(i, value) } else { try bindNull(i) }
    }
    public func bind(_ i: Int32, _ value: Int64) throws(DgrunError) {
        let rc = sqlite3_bind_int64(handle, i, value)
        guard rc == SQLITE_OK else { throw connection.failure(rc, sql) }
    }
    public func bind(_ i: Int32, _ value: Int64?) throws(DgrunError) {
        if let value { try bind(i, value) } else { try bindNull(i) }
    }
    public func bindNull(_ i: Int32) throws(DgrunError) {
        let rc = sqlite3_bind_null(handle, i)
        guard rc == SQLITE_OK else { throw connection.failure(rc, sql) }
    }

    /// The next row: true while there is one.
    public func step() throws(DgrunError) -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw connection.failure(rc, sql)
    }

    /// Ends the statement's read, so that it holds no snapshot of the file while it waits in the cache.
    public func reset() { sqlite3_reset(handle) }

    /// Runs a statement that returns no rows (or whose rows are not wanted).
    public func run() throws(DgrunError) {
        defer { reset() }
        while try step() {}
    }

    public var row: SQLiteRow { SQLiteRow(handle: handle, sql: sql) }
}

/// The current row of a statement. The typed reads throw a store error for a value of the wrong
/// type or range, as GRDB's decodes did (FuzzStoreRows found the traps of reading without checks).
public struct SQLiteRow {
    let handle: OpaquePointer
    let sql: String

    func wrongType(_ i: Int32, _ expected: String) -> DgrunError {
        let name = sqlite3_column_name(handle, i).map { String(cString: $0) } ?? "\(i)"
        return DgrunError.store("the state store holds a value that is not \(expected) in column \(name) (of `\(sql)`): was it written by something else than dgrun? Remove the task's .dgrun directory to start its history again")
    }

    public func isNull(_ i: Int32) -> Bool { sqlite3_column_type(handle, i) == SQLITE_NULL }

    public func optionalInt64(_ i: Int32) throws(DgrunError) -> Int64? {
        switch sqlite3_column_type(handle, i) {
        case SQLITE_NULL: return nil
        case SQLITE_INTEGER: return sqlite3_column_int64(handle, i)
        case SQLITE_FLOAT:
            guard let exact = Int64(exactly: sqlite3_column_double(handle, i)) else { throw wrongType(i, "an integer") }
            return exact
        default: throw wrongType(i, "an integer")
        }
    }
    public func int64(_ i: Int32) throws(DgrunError) -> Int64 {
        guard let v = try optionalInt64(i) else { throw wrongType(i, "an integer") }
        return v
    }
    public func optionalInt32(_ i: Int32) throws(DgrunError) -> Int32? {
        guard let v = try optionalInt64(i) else { return nil }
        guard let narrow = Int32(exactly: v) else { throw wrongType(i, "a 32-bit integer") }
        return narrow
    }
    public func int32(_ i: Int32) throws(DgrunError) -> Int32 {
        guard let v = try optionalInt32(i) else { throw wrongType(i, "an integer") }
        return v
    }
    public func bool(_ i: Int32) throws(DgrunError) -> Bool { try int64(i) != 0 }

    public func optionalDouble(_ i: Int32) throws(DgrunError) -> Double? {
        switch sqlite3_column_type(handle, i) {
        case SQLITE_NULL: return nil
        case SQLITE_INTEGER, SQLITE_FLOAT: return sqlite3_column_double(handle, i)
        default: throw wrongType(i, "a number")
        }
    }
    public func double(_ i: Int32) throws(DgrunError) -> Double {
        guard let v = try optionalDouble(i) else { throw wrongType(i, "a number") }
        return v
    }

    public func optionalText(_ i: Int32) throws(DgrunError) -> String? {
        switch sqlite3_column_type(handle, i) {
        case SQLITE_NULL: return nil
        case SQLITE_TEXT: return uncheckedText(i)
        default: throw wrongType(i, "text")
        }
    }
    public func text(_ i: Int32) throws(DgrunError) -> String {
        guard let v = try optionalText(i) else { throw wrongType(i, "text") }
        return v
    }

    /// The column as text whatever its type (SQLite converts), for the hot loop of the no-op check:
    /// a wrong value there only makes a dependency that never matches, which reruns the task.
    public func uncheckedText(_ i: Int32) -> String {
        guard let p = sqlite3_column_text(handle, i) else { return "" }
        return String(decoding: UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(handle, i))), as: UTF8.self)
    }
    public func uncheckedInt64(_ i: Int32) -> Int64 { sqlite3_column_int64(handle, i) }
    /// A blob column's bytes, valid only inside `body` (SQLite owns them until the next step);
    /// nil when the value is NULL or not a blob.
    public func withBlob<T>(_ i: Int32, _ body: (UnsafeRawBufferPointer?) throws(DgrunError) -> T) throws(DgrunError) -> T {
        guard sqlite3_column_type(handle, i) == SQLITE_BLOB else { return try body(nil) }
        let count = Int(sqlite3_column_bytes(handle, i))
        guard let base = sqlite3_column_blob(handle, i) else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try body(UnsafeRawBufferPointer(start: base, count: count))
    }
    public func byteCount(_ i: Int32) -> Int { Int(sqlite3_column_bytes(handle, i)) }
}
