#if canImport(Glibc)
import Glibc
#endif

/// Starting helper processes (dgrun itself for a workspace's tasks, curl for fetches) with
/// posix_spawn: dgrun runs with its forwarded signals blocked, and a child must start with a clean
/// mask and default handlers.
public enum Subprocess {
    /// `stdin`: a file to read from; `stdout`/`stderr`: files to write to (created or truncated);
    /// nil inherits.
    public static func spawn(_ argv: [String], stdin: String? = nil, stdout: String? = nil,
                             stderr: String? = nil) throws(SystemError) -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        sigdelset(&all, SIGKILL)
        sigdelset(&all, SIGSTOP)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin { posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0) }
        if let stdout { posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600) }
        if let stderr { posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o600) }
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        var pid: pid_t = 0
        let rc = argv[0].contains("/")
            ? posix_spawn(&pid, argv[0], &actions, &attributes, &cArgs, environ)
            : posix_spawnp(&pid, argv[0], &actions, &attributes, &cArgs, environ)
        guard rc == 0 else { throw SystemError("posix_spawn", path: argv[0], errno: rc) }
        return pid
    }

    /// Waits for `pid`; its exit status, or 128+N when signal N ended it.
    public static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return 127 }
        }
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
