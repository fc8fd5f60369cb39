#if canImport(Glibc)
import Glibc
#endif

/// Starting helper processes (dgrun itself, for a workspace's tasks) with posix_spawn: dgrun runs
/// with its forwarded signals blocked, and a child must start with a clean mask and default handlers.
public enum Subprocess {
    public static func spawn(_ argv: [String]) throws(SystemError) -> pid_t {
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
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], nil, &attributes, &cArgs, environ)
        guard rc == 0 else { throw SystemError("posix_spawn", path: argv[0], errno: rc) }
        return pid
    }
}
