import CDgrunSpawn
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The local content-addressed cache: DIR/cas/AB/ABCD… (blobs named by their sha256, read-only),
/// DIR/ac/KEY (manifests). Every file is written to a temporary name and renamed, so a reader or
/// a dgrun killed halfway never sees half a blob. A use sets the file's mtime: the last-used time
/// that `prune` evicts by (atime is often off, relatime or noatime).
public struct LocalCache: Sendable {
    public let directory: String
    /// The bound `store` keeps the cache under, after each store; nil: unbounded.
    public var maxBytes: Int64?

    public static let defaultMaxBytes: Int64 = 5 << 30

    public init(directory: String, maxBytes: Int64? = LocalCache.defaultMaxBytes) {
        self.directory = directory
        self.maxBytes = maxBytes
    }

    public func blobPath(_ digest: String) -> String { directory + "/cas/" + digest.prefix(2) + "/" + digest }
    public func actionPath(_ key: String) -> String { directory + "/ac/" + key }

    public func hasBlob(_ digest: String) -> Bool { FileIO.existsNoFollow(blobPath(digest)) }

    func makeDirectories(for path: String) throws(DgrunError) {
        let dir = String(path[..<path.lastIndex(of: "/")!])
        FileSystem.makeDirectories(dir)
        guard FileIO.isRealDirectory(dir) else {
            throw DgrunError("cannot create the cache directory \(dir): \(String(cString: strerror(errno))); pass --cache DIR or --cache off",
                             cause: SystemError("mkdir", path: dir, errno: errno))
        }
    }

    /// Copies an open file into the cache as a blob, hashing it on the way; returns its digest and
    /// size. With `expected`, a different digest is refused and nothing is kept.
    public func storeBlob(from fd: Int32, expected: String? = nil) throws(DgrunError) -> (digest: String, size: Int64) {
        let tmpDir = directory + "/tmp"
        try makeDirectories(for: tmpDir + "/x")
        let temporary = tmpDir + "/blob-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let out = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o444)
        guard out >= 0 else {
            let e = errno
            throw DgrunError("cannot write to the cache: create \(temporary): \(String(cString: strerror(e)))",
                             cause: SystemError("open", path: temporary, errno: e))
        }
        var digest = [UInt8](repeating: 0, count: 32)
        var size: UInt64 = 0
        let rc = dgrun_sha256_copy(fd, out, &digest, &size)
        close(out)
        guard rc == 0 else {
            unlink(temporary)
            throw DgrunError("cannot write to the cache: copy into \(temporary): \(String(cString: strerror(-rc)))",
                             cause: SystemError("write", path: temporary, errno: -rc))
        }
        let hex = String(ContentHash.version(digest: digest).dropFirst("sha256:".count))
        if let expected, expected != hex {
            unlink(temporary)
            throw DgrunError("the blob \(expected) has the content of \(hex) (\(size) bytes): poisoned or truncated; refused",
                             code: .invalidInput)
        }
        let target = blobPath(hex)
        do { try makeDirectories(for: target) } catch { unlink(temporary); throw error }
        if rename(temporary, target) != 0 {
            let e = errno
            unlink(temporary)
            throw DgrunError("cannot write to the cache: rename \(temporary) → \(target): \(String(cString: strerror(e)))",
                             cause: SystemError("rename", path: target, errno: e))
        }
        return (hex, Int64(size))
    }

    public func storeBlob(path: String) throws(DgrunError) -> (digest: String, size: Int64) {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else {
            let e = errno
            throw DgrunError("cannot read \(path) for the cache: \(String(cString: strerror(e)))", cause: SystemError("open", path: path, errno: e))
        }
        defer { close(fd) }
        return try storeBlob(from: fd)
    }

    public func storeBlob(bytes: [UInt8], expected: String? = nil) throws(DgrunError) -> (digest: String, size: Int64) {
        // Through a memfd: the one copying path (hash while writing) serves memory too.
        let fd = dgrun_memfd("dgrun-blob")
        guard fd >= 0 else { throw DgrunError("memfd_create: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw DgrunError("write to a memfd: \(String(cString: strerror(errno)))") }
            offset += n
        }
        lseek(fd, 0, SEEK_SET)
        return try storeBlob(from: fd, expected: expected)
    }

    public func removeBlob(_ digest: String) { unlink(blobPath(digest)) }

    public func readAction(_ key: String) -> [UInt8]? {
        let path = actionPath(key)
        guard let bytes = try? FileIO.readBytes(path, limit: 64 << 20) else { return nil }
        touch(path)
        return bytes
    }

    public func writeAction(_ key: String, _ bytes: [UInt8]) throws(DgrunError) {
        let path = actionPath(key)
        try makeDirectories(for: path)
        do { try FileSystem.writeAtomically(path, bytes, mode: 0o644) } catch {
            throw DgrunError("cannot write to the cache: \(error)", cause: error)
        }
    }

    /// Marks a file used now (its mtime), for the least-recently-used eviction.
    public func touch(_ path: String) {
        _ = dgrun_touch(path)
    }

    // MARK: - size

    public struct Stats: Sendable, Equatable {
        public var directory: String
        public var actions = 0
        public var blobs = 0
        public var bytes: Int64 = 0
        public var maxBytes: Int64?
    }

    struct Item { var path: String; var bytes: Int64; var used: Int64 }

    func items() -> [Item] {
        var result: [Item] = []
        func add(_ path: String) {
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return }
            result.append(Item(path: path, bytes: Int64(st.st_blocks) * 512,
                               used: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)))
        }
        for name in FileIO.listDirectory(directory + "/ac") { add(directory + "/ac/" + name) }
        for sub in FileIO.listDirectory(directory + "/cas") {
            for name in FileIO.listDirectory(directory + "/cas/" + sub) { add(directory + "/cas/" + sub + "/" + name) }
        }
        return result
    }

    public func stats() -> Stats {
        var stats = Stats(directory: directory, maxBytes: maxBytes)
        for item in items() {
            if item.path.hasPrefix(directory + "/ac/") { stats.actions += 1 } else { stats.blobs += 1 }
            stats.bytes += item.bytes
        }
        return stats
    }

    /// `prune` after a store, at most once a minute per cache (the mtime of its `pruned` stamp):
    /// the scan stats every file of the cache, and after every run it was most of a trivial
    /// task's first run (6,184 stats in a cache that tests had filled). The cache may then pass
    /// `maxBytes` by what is stored within a minute, until the next scan.
    public func pruneIfDue(maxBytes: Int64, interval: Int = 60) {
        let stamp = directory + "/pruned"
        var st = stat()
        if stat(stamp, &st) == 0, time(nil) - st.st_mtim.tv_sec < interval { return }
        let fd = open(stamp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
        if fd >= 0 { close(fd) }
        prune(maxBytes: maxBytes)
    }

    /// Removes the least recently used files until the cache is within `maxBytes`; returns how
    /// many files and bytes went. A manifest whose blobs went is a miss later, never a wrong restore.
    @discardableResult
    public func prune(maxBytes: Int64) -> (files: Int, bytes: Int64) {
        var all = items()
        var total = all.reduce(0) { $0 + $1.bytes }
        guard total > maxBytes else { return (0, 0) }
        all.sort { $0.used < $1.used }
        var removed = (files: 0, bytes: Int64(0))
        for item in all where total > maxBytes {
            if unlink(item.path) == 0 {
                total -= item.bytes
                removed.files += 1
                removed.bytes += item.bytes
            }
        }
        // Temporaries of a dgrun killed while writing (an hour old: not one being written now).
        for name in FileIO.listDirectory(directory + "/tmp") {
            var st = stat()
            if lstat(directory + "/tmp/" + name, &st) == 0, time(nil) - st.st_mtim.tv_sec > 3600 { unlink(directory + "/tmp/" + name) }
        }
        return removed
    }
}
