import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Where a task's state lives, and the one way to open it: --state DIR, else $DGRUN_STATE_DIR,
/// else TASKDIR/.dgrun.
public enum StateLocation {
    public static func directory(for task: TaskFile, stateOption: String?) -> String {
        if let stateOption { return FileSystem.absolute(stateOption) }
        if let env = getenv("DGRUN_STATE_DIR"), env.pointee != 0 { return FileSystem.absolute(String(cString: env)) }
        return ownDirectory(of: task)
    }

    /// TASKDIR/.dgrun: the state that lives in, and moves with, the task directory.
    public static func ownDirectory(of task: TaskFile) -> String { task.directory + "/.dgrun" }

    /// The task's store, created when needed (a run records into it).
    public static func open(for task: TaskFile, stateOption: String?) throws(DgrunError) -> Store {
        let dir = directory(for: task, stateOption: stateOption)
        try checkNotLinked(dir, in: task)
        return try opened(dir, relocation: relocation(of: dir, for: task), toRead: false)
    }

    /// A task's own store (TASKDIR/.dgrun) moves with the directory: its paths are relative. A
    /// store elsewhere may be shared by tasks of several places: absolute.
    public static func relocation(of dir: String, for task: TaskFile) -> PathRelocation? {
        dir == ownDirectory(of: task) ? PathRelocation.of(task) : nil
    }

    /// TASKDIR/.dgrun is written by dgrun (often root) into a directory the task, or a checkout,
    /// controls: a link planted there would take the store, its lock and graph.json anywhere.
    /// Only a real directory, or none yet, is used; an explicit --state DIR is the caller's choice.
    public static func checkNotLinked(_ dir: String, in task: TaskFile) throws(DgrunError) {
        guard dir == ownDirectory(of: task), FileIO.existsNoFollow(dir), !FileIO.isRealDirectory(dir) else { return }
        throw DgrunError("\(dir) is not a directory (a symbolic link?): dgrun keeps a task's state only in a real directory; remove it, or pass --state DIR")
    }

    /// The task's store only when one exists: a query never creates state.
    public static func existing(for task: TaskFile, stateOption: String?) throws(DgrunError) -> Store? {
        let dir = directory(for: task, stateOption: stateOption)
        // Open already: checked when it was opened (a workspace asks for each store 3 times).
        if let store = stores.withLock({ $0.find(dir) }) { return store }
        guard FileIO.exists(dir + "/" + Store.fileName) else { return nil }
        try checkNotLinked(dir, in: task)
        return try opened(dir, relocation: relocation(of: dir, for: task), toRead: true)
    }

    /// One open store per directory while it is in use: a workspace run reads each task's store
    /// to link the tasks, to size the pool, to plan and record, and to mark readers stale.
    private static let stores = Locked(StoreCache(capacity: StoreCache.capacity(openFiles: OpenFileLimit.current)))

    /// Closes the task's own store once the command is done with it (its task finished): a
    /// workspace's every store open to the end was 200 MiB at 1,000 tasks. A shared store
    /// (--state DIR) stays open for the other tasks; a later use opens it again.
    public static func release(for task: TaskFile, stateOption: String?) {
        let dir = directory(for: task, stateOption: stateOption)
        guard dir == ownDirectory(of: task) else { return }
        stores.withLock { $0.release(dir) }
    }

    /// Opened outside the cache's lock, so that stores open on all CPUs at once (a workspace's
    /// load), but under one of 64 locks chosen by the directory, so that one directory is opened
    /// once: a second Store of a file opened read-only (`toRead`, `Store.openExisting`) would
    /// share that one's read-only WAL index in SQLite and fail to write.
    private static func opened(_ directory: String, relocation: PathRelocation?, toRead: Bool) throws(DgrunError) -> Store {
        if let store = stores.withLock({ $0.find(directory) }) { return store }
        var hasher = Hasher()
        hasher.combine(directory)
        return try opening[Int(UInt(bitPattern: hasher.finalize()) % UInt(opening.count))].withLock { _ throws(DgrunError) -> Store in
            if let store = stores.withLock({ $0.find(directory) }) { return store }
            let store = toRead ? try Store.openExisting(directory: directory, relocation: relocation)
                               : try Store(directory: directory, relocation: relocation)
            stores.withLock { $0.keep(directory, store) }
            return store
        }
    }

    private static let opening = (0..<64).map { _ in Locked(()) }
}

/// The stores a command keeps open, at most `capacity` of them: each holds 3 descriptors and
/// ~0.1 MiB, and a 1,000-task workspace with every store open failed at the usual limit of 1,024
/// descriptors ("cannot create a pipe"). One closed for room (the longest kept) is still found
/// while anyone holds it: a directory never has two Stores at once (see `opened`).
struct StoreCache {
    private final class Held: @unchecked Sendable {
        weak var store: Store?
        init(_ store: Store) { self.store = store }
    }
    let capacity: Int
    private var kept: [String: Store] = [:]
    private var held: [String: Held] = [:]
    private var order: [String] = []   // kept's directories, the longest kept first, from `head`
    private var head = 0

    init(capacity: Int) { self.capacity = capacity }

    /// A quarter of the descriptors left after 256 for the rest, at most 1,024 stores (~100 MiB).
    static func capacity(openFiles: Int) -> Int { max(16, min(1024, (openFiles - 256) / 4)) }

    mutating func find(_ directory: String) -> Store? {
        if let store = kept[directory] { return store }
        guard let store = held[directory]?.store else { return nil }
        keep(directory, store)
        return store
    }

    mutating func keep(_ directory: String, _ store: Store) {
        if kept.updateValue(store, forKey: directory) == nil { order.append(directory) }
        if held[directory]?.store !== store { held[directory] = Held(store) }
        while kept.count > capacity, head < order.count {
            let oldest = order[head]
            head += 1
            if oldest != directory { kept.removeValue(forKey: oldest) }
        }
        if head > 256, head * 2 > order.count { order.removeFirst(head); head = 0 }
        if held.count > 2 * capacity + 64 { held = held.filter { $0.value.store != nil } }
    }

    mutating func release(_ directory: String) { kept.removeValue(forKey: directory) }
}

/// An exclusive flock on a file, held until released: the one lock of dgrun's state (a task's
/// plan-run-record, a new store's creation).
public struct FileLock: Sendable {
    let fd: Int32

    /// `waiting` is called once if another process holds it; then this waits its turn.
    public static func acquire(_ path: String, waiting: () -> Void = {}) throws(DgrunError) -> FileLock {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else {
            throw DgrunError.store("cannot open the lock \(path): \(String(cString: strerror(errno))); is the state directory writable?")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            waiting()
            while flock(fd, LOCK_EX) != 0 {
                guard errno == EINTR else {
                    let e = errno
                    close(fd)
                    throw DgrunError.store("cannot lock \(path): \(String(cString: strerror(e)))")
                }
            }
        }
        return FileLock(fd: fd)
    }

    /// The lock only when nobody holds it (never waits): nil otherwise, or when it cannot be opened.
    public static func attempt(_ path: String) -> FileLock? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { return nil }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { close(fd); return nil }
        return FileLock(fd: fd)
    }

    /// `task`'s lock when free now (a check ahead never waits for another dgrun's run).
    public static func attemptTask(_ taskID: String, in store: Store) -> FileLock? {
        attempt(store.directory + "/task-" + ShortHash.hex(taskID) + ".lock")
    }

    /// The lock of one task's plan-run-record, so that two dgruns running the same task take turns
    /// (the second then finds it up to date) instead of racing on its outputs.
    public static func task(_ taskID: String, in store: Store, waiting: () -> Void) throws(DgrunError) -> FileLock {
        try acquire(store.directory + "/task-" + ShortHash.hex(taskID) + ".lock", waiting: waiting)
    }

    public func release() { close(fd) }
}
