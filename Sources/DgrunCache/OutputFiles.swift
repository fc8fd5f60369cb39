import CDgrunSpawn
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// A task's outputs read into the cache and written back from it. Neither side ever follows a
/// symbolic link: an output that is a link is stored as a link (its target text), and a restore
/// writes only below the task directory, never through a linked parent directory.
public enum OutputFiles {
    /// The manifest entries of `paths` (absolute, inside `taskDirectory`, not its .dgrun), their
    /// content stored as blobs in `cache`. Directories and other kinds are left out (a file's
    /// directories are made when it is restored).
    public static func collect(_ paths: [String], taskDirectory: String, into cache: LocalCache) throws(DgrunError)
        -> [OutputsManifest.Entry] {
        var entries: [OutputsManifest.Entry] = []
        var seen: Set<String> = []
        for path in paths.sorted() {
            guard path.hasPrefix(taskDirectory + "/") else { continue }
            let relative = String(path.dropFirst(taskDirectory.count + 1))
            guard (try? OutputsManifest.checkPath(relative)) != nil, seen.insert(relative).inserted else { continue }
            // Not through a linked directory either: out -> /etc would make out/shadow the host's.
            let parent = String(path[..<path.lastIndex(of: "/")!])
            guard FileIO.realPath(parent) == parent else { continue }
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFLNK:
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlink(path, &buffer, buffer.count - 1)
                guard n > 0 else { continue }
                let target = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                entries.append(.init(path: relative, type: "link", target: target))
            case S_IFREG:
                let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
                guard fd >= 0 else {
                    let e = errno
                    throw DgrunError("cannot read the output \(path) for the cache: \(String(cString: strerror(e)))",
                                     cause: SystemError("open", path: path, errno: e))
                }
                defer { close(fd) }
                var now = stat()
                guard fstat(fd, &now) == 0, (now.st_mode & S_IFMT) == S_IFREG else { continue }
                let blob = try cache.storeBlob(from: fd)
                entries.append(.init(path: relative, type: "file", mode: UInt32(now.st_mode & 0o7777), digest: blob.digest, size: blob.size))
            default:
                continue
            }
        }
        return entries
    }

    public enum RestoreError: Error, Sendable {
        /// A blob's content is not its digest (poisoned or truncated): refused.
        case corrupt(digest: String, path: String)
        case failed(DgrunError)
    }

    /// Writes the manifest's entries below `taskDirectory` from the local cache's blobs, each to a
    /// temporary name in its directory (O_EXCL|O_NOFOLLOW) and renamed over the output: no output
    /// is ever half written, even after kill -9. Every blob's digest is checked while it is copied.
    public static func restore(_ unchecked: OutputsManifest, into taskDirectory: String, from cache: LocalCache) throws(RestoreError)
        -> (files: Int, bytes: Int64) {
        let manifest: OutputsManifest
        do throws(DgrunError) { manifest = try unchecked.validated() } catch { throw .failed(error) }
        let root = open(taskDirectory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard root >= 0 else { throw .failed(failure("open", taskDirectory)) }
        defer { close(root) }
        var files = 0
        var bytes: Int64 = 0
        for entry in manifest.entries {
            // An output already there as the manifest says is left alone (its inode and times
            // too, so the tasks that read it need not hash it again).
            if matches(entry, in: taskDirectory) {
                cache.touch(cache.blobPath(entry.digest ?? ""))
                files += 1
                continue
            }
            var parts = entry.path.split(separator: "/").map(String.init)
            let name = parts.removeLast()
            let dir = try openParents(parts, under: root, taskDirectory: taskDirectory)
            defer { if dir != root { close(dir) } }
            let where_ = taskDirectory + "/" + entry.path
            let temporary = ".\(name).dgrun-restore-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            if entry.type == "link" {
                guard symlinkat(entry.target!, dir, temporary) == 0 else { throw .failed(failure("symlink", where_)) }
            } else {
                let digest = entry.digest!
                let blob = open(cache.blobPath(digest), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                guard blob >= 0 else { throw .failed(failure("open", cache.blobPath(digest))) }
                defer { close(blob) }
                let out = openat(dir, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard out >= 0 else { throw .failed(failure("create", where_)) }
                var sum = [UInt8](repeating: 0, count: 32)
                var copied: UInt64 = 0
                let rc = dgrun_sha256_copy(blob, out, &sum, &copied)
                let hex = String(ContentHash.version(digest: sum).dropFirst("sha256:".count))
                if rc != 0 || hex != digest || Int64(copied) != entry.size! {
                    close(out)
                    unlinkat(dir, temporary, 0)
                    if rc != 0 { throw .failed(DgrunError("restoring \(where_): copy: \(String(cString: strerror(-rc)))")) }
                    throw .corrupt(digest: digest, path: entry.path)
                }
                // Permission bits only: a manifest never makes a set-user-id or set-group-id file.
                let modeRC = fchmod(out, mode_t(entry.mode! & 0o777))
                close(out)
                guard modeRC == 0 else { unlinkat(dir, temporary, 0); throw .failed(failure("chmod", where_)) }
                bytes += Int64(copied)
            }
            guard renameat(dir, temporary, dir, name) == 0 else {
                let error = failure("rename", where_)
                unlinkat(dir, temporary, 0)
                throw .failed(error)
            }
            cache.touch(cache.blobPath(entry.digest ?? ""))
            files += 1
        }
        return (files, bytes)
    }

    /// The directory of an entry, made when missing, each component opened with O_NOFOLLOW: a
    /// component that is a link (or not a directory) stops the restore.
    static func openParents(_ parts: [String], under root: Int32, taskDirectory: String) throws(RestoreError) -> Int32 {
        var fd = root
        var walked = taskDirectory
        for part in parts {
            walked += "/" + part
            var next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0 && errno == ENOENT {
                if mkdirat(fd, part, 0o755) != 0 && errno != EEXIST {
                    let error = failure("mkdir", walked)
                    if fd != root { close(fd) }
                    throw .failed(error)
                }
                next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            if next < 0 {
                let e = errno
                if fd != root { close(fd) }
                let why = e == ELOOP || e == ENOTDIR ? "it is a symbolic link or not a directory; dgrun restores only into real directories"
                                                     : String(cString: strerror(e))
                throw .failed(DgrunError("cannot restore into \(walked): \(why)", cause: SystemError("open", path: walked, errno: e)))
            }
            if fd != root { close(fd) }
            fd = next
        }
        return fd
    }

    static func failure(_ operation: String, _ path: String) -> DgrunError {
        let e = errno
        return DgrunError("restoring from the cache: \(operation) \(path): \(String(cString: strerror(e)))",
                          cause: SystemError(operation, path: path, errno: e))
    }

    /// Whether an entry is already there as the manifest says: the same link target, or a regular
    /// file of the same mode, size and content. Read without following a link (the last component
    /// by lstat and O_NOFOLLOW; a parent that is a link makes it not match, and the restore refuses it).
    static func matches(_ entry: OutputsManifest.Entry, in taskDirectory: String) -> Bool {
        let path = taskDirectory + "/" + entry.path
        guard let real = FileIO.realPath(String(path[..<path.lastIndex(of: "/")!])),
              real == taskDirectory || real.hasPrefix(taskDirectory + "/") else { return false }
        var st = stat()
        guard lstat(path, &st) == 0 else { return false }
        if entry.type == "link" {
            guard (st.st_mode & S_IFMT) == S_IFLNK else { return false }
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(path, &buffer, buffer.count - 1)
            return n > 0 && String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) == entry.target
        }
        guard (st.st_mode & S_IFMT) == S_IFREG, UInt32(st.st_mode & 0o7777) == (entry.mode ?? 0) & 0o777,
              Int64(st.st_size) == entry.size else { return false }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var sum = [UInt8](repeating: 0, count: 32)
        return dgrun_sha256_fd(fd, &sum, nil, nil) == 0 && ContentHash.version(digest: sum) == "sha256:" + (entry.digest ?? "")
    }
}
