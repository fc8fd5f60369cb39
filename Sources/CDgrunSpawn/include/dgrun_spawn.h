// The child side of a dgrun sandbox: everything between clone and exec.
//
// The parent (Swift) prepares one flat `dgrun_plan`; `dgrun_spawn` clones the sandbox init, which
// waits for the parent's go byte (sent after uid/gid maps and cgroup placement), builds the mount
// tree, forks the command, and stays as pid 1 to reap zombies and forward signals. Nothing here
// allocates or takes locks: it runs in a copy of a multi-threaded Swift process.
#ifndef DGRUN_SPAWN_H
#define DGRUN_SPAWN_H

#include <stdint.h>
#include <sys/types.h>

// Namespace flags and rlimit numbers, which Glibc's Swift module does not export (values from the
// kernel's uapi headers; spawn.c checks them against <sched.h> at compile time).
#define DGRUN_NS_CGROUP 0x02000000ULL
#define DGRUN_NS_UTS    0x04000000ULL
#define DGRUN_NS_IPC    0x08000000ULL
#define DGRUN_NS_USER   0x10000000ULL
#define DGRUN_NS_PID    0x20000000ULL
#define DGRUN_NS_NET    0x40000000ULL
#define DGRUN_NS_MNT    0x00020000ULL
#define DGRUN_RLIMIT_NPROC 6
#define DGRUN_RLIMIT_NOFILE 7
#define DGRUN_RLIMIT_AS 9

enum dgrun_mount_kind {
    DGRUN_MOUNT_BIND = 1,   // source (host path) bound at target
    DGRUN_MOUNT_TMPFS = 2,  // fresh tmpfs at target
    // After every other mount, on what is then at target (skipped when target does not exist):
    DGRUN_MOUNT_READONLY = 3,  // made read-only in place (OCI readonlyPaths)
    DGRUN_MOUNT_MASK = 4,      // hidden: an empty read-only directory, or /dev/null for a file (maskedPaths)
};

struct dgrun_mount {
    int32_t kind;
    int32_t readonly;
    const char *source;  // host path (bind)
    const char *target;  // absolute path inside the sandbox
    int32_t tree_fd;     // bind: >= 0, a detached tree the parent made (dgrun_idmapped_tree) used
                         // instead of cloning source; -1: the child clones source
};

struct dgrun_rlimit {
    int32_t resource;
    uint64_t soft;
    uint64_t hard;
};

struct dgrun_plan {
    const char *const *argv;   // NULL-terminated
    const char *const *envp;   // NULL-terminated
    const char *search_path;   // PATH used to resolve argv[0] when it has no '/'
    const char *cwd;           // working directory inside the sandbox
    const char *hostname;      // NULL: keep
    uint64_t clone_flags;      // CLONE_NEW* namespaces (CLONE_NEWCGROUP is applied after placement)
    // The run's cgroups, which the command joins as it is created (the init stays in dgrun's, so
    // they are empty as soon as the sandbox's processes are reaped), or the init where the command
    // cannot (--userns auto; not x86-64): see dg_command_joins in spawn.c. They are made after the
    // clone and follow the go byte (dgrun_send_resources); the init fills these two fields and
    // adds the rlimits sent with them, in its copy of the plan, before the command exists.
    int32_t cgroup_fd;         // >= 0: clone3(CLONE_INTO_CGROUP) into this cgroup-v2 directory
    // cgroup-v1 `tasks` files opened by the parent: the joiner writes "0" (itself) to each before
    // anything else. A thread moving itself skips the global threadgroup lock and its RCU grace
    // period, which a parent writing the pid to cgroup.procs pays (about 10-15 ms).
    const int32_t *v1_task_fds;
    int32_t n_v1_task_fds;
    const char *rootfs;        // NULL: the host root, read-only
    const struct dgrun_mount *mounts;
    int32_t n_mounts;
    int32_t become_root;       // after the maps: setgroups([]), setresgid(0), setresuid(0) inside
                               // (--userns auto: the init's host ids are not mapped there)
    int32_t setup_proc;        // fresh /proc (needs CLONE_NEWPID)
    int32_t setup_dev;         // minimal /dev
    int32_t loopback_up;       // bring up lo in a new network namespace
    int32_t new_session;       // setsid() before exec
    int32_t stdout_to_stderr;  // the command's stdout is dgrun's stderr (discover's graph owns stdout)
    int32_t output_fd;         // >= 0: the sandbox's stdout and stderr (dgrun ci's per-task log); -1: dgrun's
    const void *bpf;           // struct sock_filter[bpf_len], NULL: no seccomp
    uint16_t bpf_len;
    const void *guard_bpf;     // a second filter stacked on bpf (new user namespaces denied), NULL: none
    uint16_t guard_bpf_len;
    uint64_t keep_caps;        // bit N: keep capability N
    int32_t last_cap;          // /proc/sys/kernel/cap_last_cap
    const struct dgrun_rlimit *rlimits;
    int32_t n_rlimits;
    // discover: a seccomp notify filter (BPF) installed last, its listener sent over trace_socket.
    const void *trace_bpf;
    uint16_t trace_bpf_len;
    int32_t trace_socket;      // the child's end of a socketpair, -1: no tracing
    int32_t trace_ring_fd;     // the tracer's fast-path ring (dgrun_fasttrace_ring), inherited by
                               // the command (it is named in its environment); -1: none
    int32_t linger_ms;         // after the command exits, let what it left behind run this long
                               // (discover traces daemons); 0: the sandbox ends with the command
};

// One message of `len` bytes with `n_fds` descriptors beside it (SCM_RIGHTS), over a unix socket;
// no allocation (the command sends the tracer's listener between clone and exec). Returns the
// bytes sent, or -errno.
long dgrun_send_fds(int socket_fd, const void *data, size_t len, const int *fds, int n_fds);
// One such message: its bytes (or -errno, 0 at EOF), the descriptors received (close-on-exec)
// in fds[0..*n_fds), at most `max_fds` (any beyond are closed).
long dgrun_recv_fds(int socket_fd, void *data, size_t len, int *fds, int max_fds, int *n_fds);

// The most v1 `tasks` files and rlimits dgrun_send_resources carries.
#define DGRUN_MAX_SENT_TASK_FDS 8
#define DGRUN_MAX_SENT_RLIMITS 8

struct dgrun_child {
    pid_t pid;          // sandbox init, as seen by the parent
    int32_t pidfd;
    int32_t go_fd;      // parent sends one byte (the maps are in place), then the resources
    int32_t error_fd;   // parent reads a dgrun_failure, or EOF once the command has exec'd
    int32_t status_fd;  // parent reads the init's report: the command's wait status and usage
};

// Stages the child reports on failure; dgrun_stage_name() gives the operation.
enum dgrun_stage {
    DGRUN_STAGE_WAIT_GO = 1, DGRUN_STAGE_CGROUP_JOIN, DGRUN_STAGE_CGROUPNS, DGRUN_STAGE_HOSTNAME, DGRUN_STAGE_LOOPBACK,
    DGRUN_STAGE_MOUNT_PRIVATE, DGRUN_STAGE_CLONE_ROOT, DGRUN_STAGE_ROOT_READONLY, DGRUN_STAGE_CLONE_BIND,
    DGRUN_STAGE_BIND_READONLY, DGRUN_STAGE_STAGING, DGRUN_STAGE_ATTACH_ROOT, DGRUN_STAGE_MOUNT_PROC,
    DGRUN_STAGE_MOUNT_DEV, DGRUN_STAGE_MOUNT_TMPFS, DGRUN_STAGE_ATTACH_BIND, DGRUN_STAGE_PIVOT_ROOT,
    DGRUN_STAGE_CHDIR, DGRUN_STAGE_FORK, DGRUN_STAGE_RLIMIT, DGRUN_STAGE_CAPS, DGRUN_STAGE_NO_NEW_PRIVS,
    DGRUN_STAGE_SECCOMP, DGRUN_STAGE_TRACE, DGRUN_STAGE_CLOSE_FDS, DGRUN_STAGE_SETSID, DGRUN_STAGE_EXEC,
    DGRUN_STAGE_READONLY_PATH, DGRUN_STAGE_MASK_PATH, DGRUN_STAGE_SET_IDS,
};

struct dgrun_failure {
    int32_t stage;
    int32_t err;
    char detail[488];   // the path or name involved; whole record stays under PIPE_BUF
};

struct dgrun_outcome {
    int32_t init_status;       // wait status of the sandbox init
    int32_t have_command_status;
    int32_t command_status;    // wait status of the command, from init
    int32_t timed_out;
    int32_t last_signal;       // last signal forwarded into the sandbox, 0 if none
    int64_t user_usec, sys_usec, maxrss_kib;  // rusage of everything the init reaped
    int32_t init_exiting;      // 1: the init reported the sandbox empty (its processes reaped, the
                               // run's cgroups without members) and is still exiting; see dgrun_reap
};

// Block the signals dgrun forwards, in the calling thread; call first thing in main, before any
// thread exists, so every thread inherits the mask and signalfd sees them.
int dgrun_block_signals(void);

// For a caller that waits on several sandboxes (the engine's scheduler): a CLOEXEC pipe; a
// non-blocking signalfd over the forwarded signals (which dgrun_block_signals blocked); the next
// signal read from it (0: none pending).
int dgrun_pipe(int fds[2]);
int dgrun_forwarded_signalfd(void);
int dgrun_read_signal(int fd);
// INT, TERM, HUP, QUIT: dgrun asked to stop. They go to every process of the sandbox, start the
// stop timeout, and make the run interrupted; others (USR1, USR2) go to the command alone.
int dgrun_is_stop_signal(int sig);

// --userns auto. A user namespace whose only use is as an idmapping: host uid/gid `outside_*`
// appear as `inside_*` (a block of `count`); returns its fd (/proc/PID/ns/user of a short-lived
// child), or -errno. Needs CAP_SETUID/CAP_SETGID (root).
int dgrun_idmap_userns(uint32_t inside_uid, uint32_t outside_uid, uint32_t inside_gid, uint32_t outside_gid, uint32_t count);
// A detached copy of the tree at `path`, idmapped through `userns_fd` (and read-only when asked),
// for dgrun_mount.tree_fd. Returns the fd or -errno; `*stage` says which call failed (0 open_tree,
// 1 mount_setattr). Only the host's root may idmap a filesystem mounted in the host's namespace.
int dgrun_idmapped_tree(const char *path, int userns_fd, int readonly, int *stage);

// Clone the sandbox init. Returns 0, or -errno of clone3, socketpair or pipe2. Calls from several threads are
// serialized, so that one sandbox's init never holds another's pipe ends.
int dgrun_spawn(const struct dgrun_plan *plan, struct dgrun_child *child);
// Let the child go (its id maps are in place). Returns 0 or -errno. The go socket stays open for
// dgrun_send_resources, which the init waits for before it clones the command.
int dgrun_release(struct dgrun_child *child);
// The run's cgroup-v2 directory (-1: none), its v1 `tasks` files and the
// rlimits to add (the fallback without cgroups), to the init, which waits for them before it
// clones the command. The fds are the caller's to close. 0; -EPIPE (or another -errno) when the init
// is gone: its setup failed, and dgrun_wait reports why.
int dgrun_send_resources(struct dgrun_child *child, int cgroup_fd, const int32_t *v1_task_fds, int32_t n_v1,
                         const struct dgrun_rlimit *rlimits, int32_t n_rlimits);
// Read the child's setup/exec failure. 1: *out filled; 0: none (the command exec'd); -errno.
int dgrun_read_failure(struct dgrun_child *child, struct dgrun_failure *out);
// Wait for the sandbox, forwarding INT/TERM/HUP/QUIT/USR1/USR2. After timeout_ms (<0: none) send
// SIGTERM, after grace_ms more write "1" to kill_fd (>=0, a cgroup.kill) and SIGKILL the init.
// With trace_socket >= 0 (dgrun's end of the pair), it also receives the tracer's listener and
// serves its notifications into *log until the sandbox ends. With control_fd >= 0 the signals to
// forward come as int32 numbers over that pipe (written by whoever reads dgrun's signals: several
// sandboxes wait at once in a workspace run) instead of from a signalfd of its own.
struct dgrun_trace_log;
int dgrun_wait(struct dgrun_child *child, int64_t timeout_ms, int64_t grace_ms, int kill_fd,
               int trace_socket, int control_fd, struct dgrun_trace_log *log, struct dgrun_outcome *out);
// Kill the sandbox init (and so its pid namespace) and reap it. Used on parent-side errors.
void dgrun_abort(struct dgrun_child *child);
// Wait until an init that is still exiting (init_exiting) is gone: before its own cgroup is
// changed (dgrun's leaf of a taken-over cgroup v2). dgrun_close does not wait: it reaps the init if
// it is gone, else later (at a later spawn or close), and at the latest when dgrun exits (atexit).
void dgrun_reap(struct dgrun_child *child);
void dgrun_close(struct dgrun_child *child);
const char *dgrun_stage_name(int stage);

#endif
