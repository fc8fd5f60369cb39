import CDgrunSpawn
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Content versions remembered between runs by the file's stat identity (device, inode, size,
/// mtime, ctime), as git's index and ccache's direct mode do: a discover of a task that reads
/// thousands of system headers hashed 130 MB every time, for files that had not changed.
/// An entry is only kept for a file that did not change while it was read and whose last change
/// is at least `settleSeconds` old: a write within the file system's timestamp granularity could
/// otherwise leave every field the same (git's "racy clean").
public final class ContentHashCache: Sendable {
    struct Entry: Sendable {
        var device: UInt64, inode: UInt64, size: Int64, mtimeNs: Int64, ctimeNs: Int64
        var digest: (UInt64, UInt64, UInt64, UInt64)

        var key: (UInt64, UInt64) { (device, inode) }

        func matches(_ st: stat) -> Bool {
            device == UInt64(st.st_dev) && inode == UInt64(st.st_ino) && size == Self.size(st)
                && mtimeNs == Self.nanoseconds(st.st_mtim) && ctimeNs == Self.nanoseconds(st.st_ctim)
        }

        init(_ st: stat, digest: (UInt64, UInt64, UInt64, UInt64)) {
            self.init(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Self.size(st),
                      mtimeNs: Self.nanoseconds(st.st_mtim), ctimeNs: Self.nanoseconds(st.st_ctim), digest: digest)
        }

        init(device: UInt64, inode: UInt64, size: Int64, mtimeNs: Int64, ctimeNs: Int64, digest: (UInt64, UInt64, UInt64, UInt64)) {
            self.device = device
            self.inode = inode
            self.size = size
            self.mtimeNs = mtimeNs
            self.ctimeNs = ctimeNs
            self.digest = digest
        }

        /// A directory's entry keeps -1 - its size: it can never match a file's stat (nor, in
        /// an older dgrun sharing the file, be taken for one), and the format stays the same.
        static func size(_ st: stat) -> Int64 {
            (st.st_mode & S_IFMT) == S_IFDIR ? -1 - Int64(st.st_size) : Int64(st.st_size)
        }

        static func nanoseconds(_ t: timespec) -> Int64 { Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec) }
    }

    static let magic = Array("dgrun-content-hashes 1\n".utf8)
    static let recordSize = MemoryLayout<Entry>.stride
    /// 256 Ki entries, 18 MiB: past that, at a compaction, entries of earlier runs are dropped.
    static let capacity = 1 << 18
    /// New entries are appended to `PATH.new` until it holds this many; then both files are
    /// merged into PATH. Reading and rewriting the whole 12 MiB file on every run was ~28 ms of
    /// a trivial task's 45 ms first run once a 100,000-file task had filled it.
    static let journalCapacity = 4096
    public static let settleSeconds = 1.0

    let path: String
    /// PATH, mapped: records sorted by (device, inode), searched in place (nothing read up front).
    let mapped: Mapping
    /// PATH.new: unsorted records appended by earlier runs, by key.
    let journal: [Key: Entry]
    /// Computed in this run, to append.
    let fresh = Mutex<[Entry]>([])

    struct Key: Hashable, Sendable { var device: UInt64, inode: UInt64 }

    /// Entries known at open (the sorted file and the journal).
    var count: Int { mapped.count + journal.count }

    /// A read-only mapping of the sorted file, unmapped with the cache.
    final class Mapping: @unchecked Sendable {
        /// Held for `base`, which points into it: a lookup loads a record without a closure.
        private let file: ReadOnlyBytes?
        let base: UnsafeRawPointer?
        let count: Int

        init(_ path: String) {
            let mapped = ReadOnlyBytes(mapping: path)
            let body = (mapped?.count ?? 0) - ContentHashCache.magic.count
            let valid = body > 0 && body % ContentHashCache.recordSize == 0
                && mapped!.withUnsafeBytes { memcmp($0.baseAddress!, ContentHashCache.magic, ContentHashCache.magic.count) == 0 }
            file = valid ? mapped : nil
            base = valid ? mapped!.withUnsafeBytes { $0.baseAddress } : nil
            count = valid ? body / ContentHashCache.recordSize : 0
        }

        subscript(_ i: Int) -> Entry {
            base!.loadUnaligned(fromByteOffset: ContentHashCache.magic.count + i * ContentHashCache.recordSize, as: Entry.self)
        }
    }

    /// `path`: the cache file; a missing or unreadable one is an empty cache.
    public init(path: String) {
        self.path = path
        mapped = Mapping(path)
        var journal: [Key: Entry] = [:]
        for entry in Self.records(path + ".new") { journal[Key(device: entry.device, inode: entry.inode)] = entry }
        self.journal = journal
    }

    /// $XDG_CACHE_HOME/dgrun/content-hashes, else ~/.cache/dgrun/content-hashes.
    public static func defaultPath() -> String {
        FileSystem.cacheDirectory("content-hashes") ?? "/root/.cache/dgrun/content-hashes"
    }

    /// `sha256:<hex>` of a regular file: remembered when its stat identity is unchanged, hashed
    /// otherwise. Anything else (directories included) goes to `ContentHash.version(of:)`.
    /// Safe to call from several threads.
    public func version(of path: String, now: Double) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return ContentHash.version(of: path) }
        return version(of: path, stat: st, now: now)
    }

    /// The same for a path the caller has just stat'ed (`st`, following links): a discover
    /// stats each file once, for its size, and asks with that stat.
    public func version(of path: String, stat st: stat, now: Double) -> String? {
        switch st.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: return directoryVersion(of: path, stat: st, now: now)
        default: return ContentHash.version(of: path)
        }
        if let hit = find(st) { return Self.version(hit.digest) }
        var digest = [UInt8](repeating: 0, count: 32)
        var before = stat(), after = stat()
        guard dgrun_sha256_file_stat(path, &digest, &before, &after) == 0 else { return ContentHash.version(of: path) }
        remember(Entry(before, digest: Self.words(digest)), unchangedAt: after, now: now)
        return ContentHash.version(digest: digest)
    }

    /// A directory's version (its sorted names, what a task that lists it sees), remembered like
    /// a file's: creating, removing or renaming an entry changes the directory's mtime and ctime.
    /// Not on pseudo file systems (/proc, /sys, cgroups), whose listings change without them.
    func directoryVersion(of path: String, stat st: stat, now: Double) -> String? {
        if let hit = find(st) { return Self.version(hit.digest) }
        guard let digest = ContentHash.directoryDigest(of: path) else { return nil }
        var after = stat()
        if stat(path, &after) == 0, let magic = FileSystem.magic(path), Self.directoryMtimeFileSystems.contains(magic) {
            remember(Entry(st, digest: Self.words(digest)), unchangedAt: after, now: now)
        }
        return ContentHash.version(digest: digest)
    }

    /// statfs magics of the file systems that keep a directory's mtime: ext2/3/4, xfs, btrfs,
    /// tmpfs, overlayfs, f2fs.
    static let directoryMtimeFileSystems: Set<UInt> = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630, 0xF2F5_2010]

    /// Keeps `entry` for later runs when the file did not change while it was read (`after`) and
    /// its last change is old enough that a change within the timestamps' granularity would show.
    private func remember(_ entry: Entry, unchangedAt after: stat, now: Double) {
        let changed = Double(max(entry.mtimeNs, entry.ctimeNs)) / 1e9
        if entry.matches(after), now - changed >= Self.settleSeconds {
            fresh.withLock { $0.append(entry) }
        }
    }

    static func words(_ digest: [UInt8]) -> (UInt64, UInt64, UInt64, UInt64) {
        digest.withUnsafeBytes { raw in
            (raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
             raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        }
    }

    func find(_ st: stat) -> Entry? {
        let key = (UInt64(st.st_dev), UInt64(st.st_ino))
        if let recent = journal[Key(device: key.0, inode: key.1)], recent.matches(st) { return recent }
        var low = 0, high = mapped.count
        while low < high {
            let mid = (low + high) / 2
            if mapped[mid].key < key { low = mid + 1 } else { high = mid }
        }
        guard low < mapped.count else { return nil }
        let found = mapped[low]
        return found.key == key && found.matches(st) ? found : nil
    }

    static func version(_ d: (UInt64, UInt64, UInt64, UInt64)) -> String {
        withUnsafeBytes(of: d) { ContentHash.version(digest: $0) }
    }

    /// Appends what this run hashed to the journal; past `journalCapacity` entries the journal
    /// and the sorted file are merged into a new sorted file (newest first up to the capacity).
    /// A concurrent dgrun's compaction may win, which only costs hashing again.
    public func save() {
        let entries = fresh.withLock { $0 }
        guard !entries.isEmpty else { return }
        let journalPath = path + ".new"
        if journal.count + entries.count < Self.journalCapacity {
            FileSystem.makeDirectories(String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)]), mode: 0o755)
            // O_APPEND: concurrent runs add whole records; a torn tail is ignored when read.
            let fd = open(journalPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard fd >= 0 else { return }
            defer { close(fd) }
            entries.withUnsafeBytes { _ = write(fd, $0.baseAddress, $0.count) }
            return
        }
        var merged: [Entry] = []
        var seen = Set<Key>()
        func add(_ entry: Entry) {
            guard merged.count < Self.capacity, seen.insert(Key(device: entry.device, inode: entry.inode)).inserted else { return }
            merged.append(entry)
        }
        for entry in entries { add(entry) }
        for entry in journal.values { add(entry) }
        for i in 0..<mapped.count { add(mapped[i]) }
        merged.sort { $0.key < $1.key }
        var bytes = Self.magic
        bytes.reserveCapacity(bytes.count + merged.count * Self.recordSize)
        merged.withUnsafeBytes { bytes.append(contentsOf: $0) }
        if FileSystem.replaceCache(path, with: bytes) { unlink(journalPath) }
    }

    /// The whole records of a journal file (a torn last one, from a crash, is left out).
    static func records(_ path: String) -> [Entry] {
        guard let bytes = try? FileIO.readBytes(path, limit: journalCapacity * 2 * recordSize) else { return [] }
        let count = bytes.count / recordSize
        return [Entry](unsafeUninitializedCapacity: count) { buffer, initialized in
            bytes.withUnsafeBytes { raw in
                for i in 0..<count { buffer[i] = raw.loadUnaligned(fromByteOffset: i * recordSize, as: Entry.self) }
            }
            initialized = count
        }
    }
}
