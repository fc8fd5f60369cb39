#if canImport(Glibc)
import Glibc
#endif

/// Small, allocation-light file helpers for /proc and cgroupfs: whole-file reads and single writes.
public enum FileIO {
    public static func read(_ path: String, limit: Int = 1 << 20) throws(SystemError) -> String {
        String(decoding: try readBytes(path, limit: limit), as: UTF8.self)
    }

    /// The raw bytes of a file, up to `limit`.
    public static func readBytes(_ path: String, limit: Int = 64 << 20) throws(SystemError) -> [UInt8] {
        let fd = try valueOrErrno("open", path: path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        // Into a buffer sized by fstat (procfs and cgroupfs say 0: start at a page), grown by
        // doubling: a zeroed 64 KiB chunk per call was most of the memset and fresh pages of an
        // exec's start-up, which reads a dozen small files.
        var st = stat()
        let sizeHint = fstat(fd, &st) == 0 && st.st_size > 0 ? Int(st.st_size) + 1 : 4096
        var capacity = max(1, min(sizeHint, limit))
        var buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 1)
        defer { buffer.deallocate() }
        var count = 0
        while count < limit {
            if count == capacity {
                let grown = min(capacity * 2, limit)
                let next = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 1)
                next.copyMemory(from: buffer, byteCount: count)
                buffer.deallocate()
                buffer = next
                capacity = grown
            }
            let n = try valueOrErrno("read", path: path) { Glibc.read(fd, buffer + count, capacity - count) }
            if n == 0 { break }
            count += n
        }
        return Array(UnsafeRawBufferPointer(start: buffer, count: count))
    }

    /// A small cgroupfs or /proc file in one read(2): such files are produced whole by the kernel
    /// when the buffer is large enough. nil when it cannot be read.
    public static func readSmall(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var n: Int
        repeat { n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } } while n < 0 && errno == EINTR
        guard n >= 0, n < buffer.count else { return n < 0 ? nil : (try? read(path)) }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }

    /// Writes `value` with one write(2), as cgroupfs and /proc/PID/*_map require.
    public static func write(_ path: String, _ value: String, create: Bool = false,
                             hint: String? = nil) throws(SystemError) {
        let flags = O_WRONLY | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0)
        let fd = try valueOrErrno("open", path: path, hint: hint) { open(path, flags, 0o644) }
        defer { close(fd) }
        var value = value
        // A short value (a cgroup knob's) is worth naming in the error; a file's content is not.
        let operation = value.utf8.count <= 64 ? "write \"\(value)\" to" : "write \(value.utf8.count) bytes to"
        let count = value.utf8.count
        let n = try valueOrErrno(operation, path: path, hint: hint) {
            value.withUTF8 { Glibc.write(fd, $0.baseAddress, $0.count) }
        }
        if n != count {
            throw SystemError("short write to", path: path, errno: EIO, hint: hint)
        }
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// The path itself exists: a dangling symlink counts.
    public static func existsNoFollow(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    public static func isSymbolicLink(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
    }

    /// A directory itself, not a link to one.
    public static func isRealDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func isWritable(_ path: String) -> Bool { access(path, W_OK) == 0 }

    public static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 && !isDirectory(path) }

    public static func listDirectory(_ path: String) -> [String] {
        listDirectoryOrNil(path) ?? []
    }

    /// The names in a directory, nil when it cannot be opened.
    public static func listDirectoryOrNil(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        while let entry = readdir(dir) {
            // The name read in place: copying `entry.pointee.d_name` copies all 256 bytes, and a
            // record is only d_reclen long, so the copy of the last entry of a getdents buffer could
            // read past its end (a crash listing a large /tmp).
            let name = String(cString: (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self))
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The canonical absolute path (symlinks resolved), or nil when it does not exist.
    public static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    public static func currentDirectory() -> String {
        guard let cwd = getcwd(nil, 0) else { return "/" }
        defer { free(cwd) }
        return String(cString: cwd)
    }
}

/// A file's bytes, read-only: mapped (a cache searched in place, never copied: reading the 1.5
/// MB dpkg index into an array was ~3 ms of every discover) or held (one built in memory).
public final class ReadOnlyBytes: @unchecked Sendable {
    private let base: UnsafeRawPointer?
    public let count: Int
    private let owned: [UInt8]?

    public init(_ bytes: [UInt8]) {
        owned = bytes
        base = nil
        count = bytes.count
    }

    /// nil when the file cannot be opened or mapped (an empty file is empty bytes).
    public init?(mapping path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        owned = nil
        count = Int(st.st_size)
        if count == 0 { base = nil; return }
        guard let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else { return nil }
        base = UnsafeRawPointer(p)
    }

    deinit { if let base { munmap(UnsafeMutableRawPointer(mutating: base), count) } }

    public func withUnsafeBytes<T>(_ body: (UnsafeRawBufferPointer) -> T) -> T {
        if let owned { return owned.withUnsafeBytes(body) }
        return body(UnsafeRawBufferPointer(start: base, count: count))
    }
}
