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
            device == UInt64(st.st_dev) && inode == UInt64(st.st_ino) && size == Int64(st.st_size)
                && mtimeNs == Self.nanoseconds(st.st_mtim) && ctimeNs == Self.nanoseconds(st.st_ctim)
        }

        static func nanoseconds(_ t: timespec) -> Int64 { Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec) }
    }

    static let magic = Array("dgrun-content-hashes 1\n".utf8)
    static let recordSize = MemoryLayout<Entry>.stride
    /// 256 Ki entries, 18 MiB: past that the entries not used in a run are dropped.
    static let capacity = 1 << 18
    public static let settleSeconds = 1.0

    let path: String
    /// Sorted by (device, inode).
    let loaded: [Entry]
    /// Found or computed in this run.
    let fresh = Mutex<(entries: [Entry], computed: Int)>(([], 0))

    /// `path`: the cache file; a missing or unreadable one is an empty cache.
    public init(path: String) {
        self.path = path
        loaded = Self.load(path)
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
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return ContentHash.version(of: path) }
        if let hit = find(st) {
            fresh.withLock { $0.entries.append(hit) }
            return Self.version(hit.digest)
        }
        var digest = [UInt8](repeating: 0, count: 32)
        var before = stat(), after = stat()
        guard dgrun_sha256_file_stat(path, &digest, &before, &after) == 0 else { return ContentHash.version(of: path) }
        let words = digest.withUnsafeBytes { raw in
            (raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
             raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        }
        let entry = Entry(device: UInt64(before.st_dev), inode: UInt64(before.st_ino), size: Int64(before.st_size),
                          mtimeNs: Entry.nanoseconds(before.st_mtim), ctimeNs: Entry.nanoseconds(before.st_ctim), digest: words)
        let changed = Double(max(entry.mtimeNs, entry.ctimeNs)) / 1e9
        if entry.matches(after), now - changed >= Self.settleSeconds {
            fresh.withLock { $0.entries.append(entry); $0.computed += 1 }
        }
        return ContentHash.version(digest: digest)
    }

    func find(_ st: stat) -> Entry? {
        let key = (UInt64(st.st_dev), UInt64(st.st_ino))
        var low = 0, high = loaded.count
        while low < high {
            let mid = (low + high) / 2
            if loaded[mid].key < key { low = mid + 1 } else { high = mid }
        }
        return low < loaded.count && loaded[low].key == key && loaded[low].matches(st) ? loaded[low] : nil
    }

    static func version(_ d: (UInt64, UInt64, UInt64, UInt64)) -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: d.0, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: d.1, toByteOffset: 8, as: UInt64.self)
            raw.storeBytes(of: d.2, toByteOffset: 16, as: UInt64.self)
            raw.storeBytes(of: d.3, toByteOffset: 24, as: UInt64.self)
        }
        return ContentHash.version(digest: bytes)
    }

    /// Writes the cache back when this run hashed something new: the entries of this run, then
    /// the older ones up to the capacity. A concurrent dgrun's write may win, which only costs
    /// hashing again.
    public func save() {
        let (entries, computed) = fresh.withLock { ($0.entries, $0.computed) }
        guard computed > 0 else { return }
        struct Key: Hashable { var device: UInt64, inode: UInt64 }
        var merged: [Entry] = []
        var seen = Set<Key>()
        for entry in entries + loaded where merged.count < Self.capacity {
            if seen.insert(Key(device: entry.device, inode: entry.inode)).inserted { merged.append(entry) }
        }
        merged.sort { $0.key < $1.key }
        var bytes = Self.magic
        bytes.reserveCapacity(bytes.count + merged.count * Self.recordSize)
        merged.withUnsafeBytes { bytes.append(contentsOf: $0) }
        FileSystem.replaceCache(path, with: bytes)
    }

    static func load(_ path: String) -> [Entry] {
        guard let bytes = try? FileIO.readBytes(path, limit: magic.count + capacity * recordSize),
              bytes.count >= magic.count, Array(bytes[..<magic.count]) == magic,
              (bytes.count - magic.count) % recordSize == 0 else { return [] }
        let count = (bytes.count - magic.count) / recordSize
        return [Entry](unsafeUninitializedCapacity: count) { buffer, initialized in
            bytes.withUnsafeBytes { raw in
                for i in 0..<count {
                    buffer[i] = raw.loadUnaligned(fromByteOffset: magic.count + i * recordSize, as: Entry.self)
                }
            }
            initialized = count
        }
    }
}
