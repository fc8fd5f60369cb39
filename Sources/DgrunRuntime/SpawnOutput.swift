import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// A sandbox's stdout and stderr in a file of its own (dgrun ci's per-task logs) without a change
/// to the child side: the sandbox init inherits fds 0-2 at clone, so for that one clone dgrun's own
/// 1 and 2 point at the file, and are put back right after. Every clone takes this lock, so no
/// other sandbox starting at the same time inherits the file; a face that writes while tasks start
/// (dgrun ci) writes to its own duplicates of 1 and 2, never to 1 and 2 themselves.
enum SpawnOutput {
    static let lock = Locked(())

    static func spawn(into file: String?, _ clone: () -> Int32) throws(DgrunError) -> Int32 {
        try lock.withLock { (_: inout Void) -> Result<Int32, DgrunError> in
            guard let file else { return .success(clone()) }
            let fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                return .failure(DgrunError.launch("cannot open the task's log \(file): \(String(cString: strerror(errno)))"))
            }
            defer { close(fd) }
            let saved = [fcntl(1, F_DUPFD_CLOEXEC, 3), fcntl(2, F_DUPFD_CLOEXEC, 3)]
            defer {
                for (target, copy) in zip([Int32(1), 2], saved) {
                    if copy >= 0 { dup2(copy, target); close(copy) } else { close(target) }
                }
            }
            guard dup2(fd, 1) == 1, dup2(fd, 2) == 2 else {
                return .failure(DgrunError.launch("cannot send the task's output to \(file): \(String(cString: strerror(errno)))"))
            }
            return .success(clone())
        }.get()
    }
}
