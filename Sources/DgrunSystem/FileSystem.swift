import CDgrunSpawn
#if canImport(Glibc)
import Glibc
#endif

public enum FileSystem {
    /// statfs(2) f_type of the filesystem holding `path`, nil when it cannot be read.
    public static func magic(_ path: String) -> UInt? {
        var value: UInt = 0
        return dgrun_fs_magic(path, &value) == 0 ? value : nil
    }

    /// mkdir -p; errors show up when the directory is used.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) {
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += "/" + part
            mkdir(prefix, mode)
        }
    }

    /// dgrun's cache directory, or NAME in it: $XDG_CACHE_HOME/dgrun[/NAME], else
    /// $HOME/.cache/dgrun[/NAME]; nil when neither variable is set.
    public static func cacheDirectory(_ name: String = "") -> String? {
        let suffix = name.isEmpty ? "" : "/" + name
        if let xdg = getenv("XDG_CACHE_HOME"), xdg.pointee != 0 { return String(cString: xdg) + "/dgrun" + suffix }
        return getenv("HOME").map { String(cString: $0) + "/.cache/dgrun" + suffix }
    }

    /// Replaces a cache file: its directories made, then written atomically. Best effort: false
    /// when it could not be written, and a cache that is not written only costs time.
    @discardableResult
    public static func replaceCache(_ path: String, with bytes: [UInt8], mode: mode_t = 0o644,
                                    directoryMode: mode_t = 0o755) -> Bool {
        makeDirectories(String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)]), mode: directoryMode)
        return (try? writeAtomically(path, bytes, mode: mode)) != nil
    }

    /// Write-then-rename, the one copy of it: the bytes go to a new file beside `path` (O_EXCL and
    /// O_NOFOLLOW: never through a link someone planted there), then replace it in one rename, so
    /// a reader sees the old file or the new one, never half of one.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(SystemError) {
        try withRawBytes(bytes) { raw throws(SystemError) in try writeAtomically(path, raw, mode: mode) }
    }

    /// `body` over the array's storage; withUnsafeBytes rethrows untyped, so the error is carried out.
    static func withRawBytes(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(SystemError) -> Void) throws(SystemError) {
        let failure = bytes.withUnsafeBytes { raw -> SystemError? in
            do throws(SystemError) { try body(raw) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    /// The same over a string's own UTF-8 (a recorded graph is megabytes: no copy into an array).
    static func withRawBytes(_ text: String, _ body: (UnsafeRawBufferPointer) throws(SystemError) -> Void) throws(SystemError) {
        var text = text
        let failure = text.withUTF8 { utf8 -> SystemError? in
            do throws(SystemError) { try body(UnsafeRawBufferPointer(utf8)) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    /// The same from a buffer (a megabyte graph written without copying it into an array).
    public static func writeAtomically(_ path: String, _ bytes: UnsafeRawBufferPointer, mode: mode_t = 0o644) throws(SystemError) {
        // A device or a pipe (-o /dev/null, --junit /dev/stdout, a FIFO) is written to, never
        // replaced: a rename over /dev/null as root made it a regular file for the whole host.
        if isStream(path) {
            let fd = try valueOrErrno("open", path: path) { open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY) }
            defer { close(fd) }
            try writeAll(fd, bytes, path: path)
            return
        }
        let temporary = temporaryName(for: path)
        let fd = try valueOrErrno("create", path: temporary) {
            open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        }
        do throws(SystemError) { try writeAll(fd, bytes, path: temporary) } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        do throws(SystemError) {
            _ = try valueOrErrno("rename over", path: path) { rename(temporary, path) }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// A name beside `path` for what is renamed onto it: unique to this process and attempt.
    static func temporaryName(for path: String) -> String {
        path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// `path` made, atomically, a second name of the regular file `existing` when that file is
    /// `size` bytes; false (nothing changed) otherwise, or where no link can be made (another
    /// file system): the caller then writes it. A link planted at `existing` is never followed.
    public static func linkAtomically(_ existing: String, to path: String, size: Int) -> Bool {
        let fd = open(existing, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size == off_t(size) else { return false }
        // The open file itself, through its /proc name: the path may have changed since the open.
        let temporary = temporaryName(for: path)
        guard linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, temporary, AT_SYMLINK_FOLLOW) == 0 else { return false }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            return false
        }
        return true
    }

    /// A path written to in place rather than replaced: a character device or a FIFO named
    /// directly, or dgrun's own standard streams and fds by their names (links into /proc, which
    /// no task can plant on the host). Any other link is replaced, never written through: one to a
    /// disk's device would otherwise be written by root.
    public static func isStream(_ path: String) -> Bool {
        var st = stat()
        guard lstat(path, &st) == 0 else { return false }
        let type = st.st_mode & S_IFMT
        if type == S_IFCHR || type == S_IFIFO { return true }
        let streams = ["/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/"]
        return type == S_IFLNK && streams.contains(where: { $0.hasSuffix("/") ? path.hasPrefix($0) : path == $0 })
    }

    /// All of `bytes` to `fd`, through short writes and EINTR.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { throw SystemError("write", path: path, errno: n < 0 ? errno : EIO) }
            offset += n
        }
    }

    public static func writeAtomically(_ path: String, _ text: String, mode: mode_t = 0o644) throws(SystemError) {
        try withRawBytes(text) { raw throws(SystemError) in try writeAtomically(path, raw, mode: mode) }
    }

    /// A path made absolute against the current directory (lexically; nothing is resolved).
    public static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileIO.currentDirectory() + "/" + path
    }

    /// Copies a regular file's bytes.
    public static func copy(_ source: String, to target: String) throws(SystemError) {
        let input = try valueOrErrno("open", path: source) { open(source, O_RDONLY | O_CLOEXEC) }
        defer { close(input) }
        let output = try valueOrErrno("open", path: target) { open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        defer { close(output) }
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = try valueOrErrno("read", path: source) { read(input, buffer, size) }
            if n == 0 { return }
            var written = 0
            while written < n {
                written += try valueOrErrno("write", path: target) { write(output, buffer + written, n - written) }
            }
        }
    }
}

/// A file dgrun writes after a run (--report, discover -o), its directory resolved before the run:
/// a link that the task put on the way meanwhile, in a directory it could write, is refused
/// instead of followed (dgrun is often root; the task's processes are all gone when it writes).
public struct PinnedOutput: Sendable, Equatable {
    public let path: String
    /// The parent directory as given, and its real path when the run started (nil: it did not exist).
    let parent: String
    let directory: String?
    let name: String

    public init(_ path: String) {
        self.path = path
        let slash = path.lastIndex(of: "/")
        parent = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        directory = FileIO.realPath(parent)
    }

    public func write(_ text: String) throws(SystemError) {
        try FileSystem.withRawBytes(text) { raw throws(SystemError) in try write(raw) }
    }

    public func write(_ bytes: [UInt8]) throws(SystemError) {
        try FileSystem.withRawBytes(bytes) { raw throws(SystemError) in try write(raw) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        // A device, a FIFO or dgrun's own stream (`-o /dev/null`, `--report /dev/stdout`) is
        // written in place by writeAtomically; by the name given, since /dev/stdout's target is
        // this process's and its directory is no task's to swap.
        if FileSystem.isStream(path) { return try FileSystem.writeAtomically(path, bytes) }
        guard let directory, !name.isEmpty, FileIO.realPath(parent) == directory else {
            throw SystemError("write", path: path, errno: directory == nil ? ENOENT : ELOOP,
                              hint: directory == nil ? "its directory does not exist"
                                  : "its directory was replaced (by a symbolic link?) during the run; nothing was written")
        }
        try FileSystem.writeAtomically(directory + "/" + name, bytes)
    }
}
