// The child side of a dgrun sandbox. See dgrun_spawn.h for the protocol.
// Rules: raw syscalls only after clone; no malloc, no stdio, no locks; every failure is reported as
// {stage, errno, detail} over the CLOEXEC error pipe, then the process exits.
#define _GNU_SOURCE
#include "dgrun_spawn.h"
#include "dgrun_trace.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

_Static_assert(DGRUN_NS_USER == CLONE_NEWUSER && DGRUN_NS_MNT == CLONE_NEWNS && DGRUN_NS_PID == CLONE_NEWPID &&
               DGRUN_NS_NET == CLONE_NEWNET && DGRUN_NS_IPC == CLONE_NEWIPC && DGRUN_NS_UTS == CLONE_NEWUTS &&
               DGRUN_NS_CGROUP == CLONE_NEWCGROUP, "namespace flags");
_Static_assert(DGRUN_RLIMIT_NPROC == RLIMIT_NPROC && DGRUN_RLIMIT_AS == RLIMIT_AS && DGRUN_RLIMIT_NOFILE == RLIMIT_NOFILE,
               "rlimit numbers");

struct dg_mount_attr { uint64_t attr_set, attr_clr, propagation, userns_fd; };

#define DG_MAX_BINDS 128
#define DG_PATH_MAX 4096

// ---------------------------------------------------------------- small async-signal-safe helpers

static size_t dg_strlen(const char *s) { size_t n = 0; while (s && s[n]) n++; return n; }

static void dg_copy(char *dst, size_t cap, const char *src) {
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++) dst[i] = src[i];
    dst[i] = 0;
}

// dst = a + b, truncated to cap.
static void dg_join(char *dst, size_t cap, const char *a, const char *b) {
    size_t i = 0;
    for (size_t j = 0; a && a[j] && i + 1 < cap; j++) dst[i++] = a[j];
    for (size_t j = 0; b && b[j] && i + 1 < cap; j++) dst[i++] = b[j];
    dst[i] = 0;
}

static int dg_error_fd = -1;

__attribute__((noreturn)) static void dg_fail(int stage, int err, const char *detail) {
    struct dgrun_failure f;
    memset(&f, 0, sizeof f);
    f.stage = stage;
    f.err = err;
    dg_copy(f.detail, sizeof f.detail, detail);
    if (dg_error_fd >= 0) {
        ssize_t r;
        do { r = write(dg_error_fd, &f, sizeof f); } while (r < 0 && errno == EINTR);
    }
    _exit(stage == DGRUN_STAGE_EXEC ? (err == ENOENT ? 127 : 126) : 125);
}

static void dg_check(int ok, int stage, const char *detail) {
    if (!ok) dg_fail(stage, errno, detail);
}

static long dg_clone3(uint64_t flags, int *pidfd, int cgroup_fd) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = flags;
    args.exit_signal = SIGCHLD;
    if (pidfd) args.pidfd = (uint64_t)(uintptr_t)pidfd;
    if (cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cgroup_fd;
    }
    return syscall(SYS_clone3, &args, sizeof args);
}

// The command's clone: CLONE_VM | CLONE_VFORK on a stack of its own, and with CLONE_INTO_CGROUP
// (which only clone3 has) straight into the run's cgroup. glibc has no clone3 wrapper that takes
// a function, and a child that returned from syscall() onto a new stack would have no frame to
// return to, so the child side is these few instructions: call fn(arg) on the new stack, then
// exit with what it returns (it never returns: it execs or _exits).
#if defined(__x86_64__)
long dg_clone3_call(struct clone_args *args, size_t size, int (*fn)(void *), void *arg);
__asm__(
    ".pushsection .text\n"
    ".p2align 4\n"
    ".type dg_clone3_call, @function\n"
    "dg_clone3_call:\n"
    "    mov %rdx, %r8\n"          // fn and arg survive the syscall (it clobbers rcx and r11)
    "    mov %rcx, %r9\n"
    "    mov $435, %eax\n"         // __NR_clone3
    "    syscall\n"
    "    test %rax, %rax\n"
    "    jnz 1f\n"
    "    xor %ebp, %ebp\n"         // the child: outermost frame, on the stack clone3 gave it
    "    mov %r9, %rdi\n"
    "    call *%r8\n"
    "    mov %eax, %edi\n"
    "    mov $60, %eax\n"          // __NR_exit
    "    syscall\n"
    "    hlt\n"
    "1:  ret\n"
    ".size dg_clone3_call, .-dg_clone3_call\n"
    ".popsection\n");
#define DG_COMMAND_JOINS_CGROUPS 1
#else
#define DG_COMMAND_JOINS_CGROUPS 0
#endif

// Who joins the run's cgroups: the command (the init stays in dgrun's, so the run's cgroups are
// empty the moment the sandbox's last process is reaped, and dgrun removes them while the init is
// still tearing the namespaces down), or, where the command cannot be cloned into them, the init.
// --userns auto is such a case: the init has become the id range's root by then, whose host uid
// may not write the cgroup's cgroup.procs, which CLONE_INTO_CGROUP checks with the caller's ids.
static int dg_command_joins(const struct dgrun_plan *plan) {
    return DG_COMMAND_JOINS_CGROUPS && !plan->become_root;
}

static int dg_open_tree(const char *path, unsigned flags) {
    return (int)syscall(SYS_open_tree, AT_FDCWD, path, flags);
}

static int dg_set_readonly(int tree_fd) {
    struct dg_mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID;
    return (int)syscall(SYS_mount_setattr, tree_fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr);
}

static int dg_attach(int tree_fd, const char *target) {
    return (int)syscall(SYS_move_mount, tree_fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
}

// mkdir -p of a path relative to the current directory (the staged new root). Best effort:
// a read-only parent gives EROFS, which the following mount then reports with the path.
static void dg_mkdir_p(const char *rel, int as_file) {
    char buf[DG_PATH_MAX];
    dg_copy(buf, sizeof buf, rel);
    size_t n = dg_strlen(buf);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char saved = buf[i];
            buf[i] = 0;
            if (saved == 0 && as_file) {
                int fd = open(buf, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
                if (fd >= 0) close(fd);
            } else {
                mkdir(buf, 0755);
            }
            buf[i] = saved;
        }
    }
}

static const char *dg_relative(const char *abs) {
    while (*abs == '/') abs++;
    return *abs ? abs : ".";
}

// ---------------------------------------------------------------- stages

static void dg_loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    dg_check(s >= 0, DGRUN_STAGE_LOOPBACK, "socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    dg_copy(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    dg_check(ioctl(s, SIOCGIFFLAGS, &ifr) == 0, DGRUN_STAGE_LOOPBACK, "lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    dg_check(ioctl(s, SIOCSIFFLAGS, &ifr) == 0, DGRUN_STAGE_LOOPBACK, "lo");
    close(s);
}

static void dg_setup_dev(void) {
    dg_check(mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=65536k") == 0,
             DGRUN_STAGE_MOUNT_DEV, "/dev");
    static const char *const nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        char host[64], inside[64];
        dg_join(host, sizeof host, "/dev/", nodes[i]);
        dg_join(inside, sizeof inside, "dev/", nodes[i]);
        int fd = open(inside, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0666);
        dg_check(fd >= 0, DGRUN_STAGE_MOUNT_DEV, host);
        close(fd);
        dg_check(mount(host, inside, NULL, MS_BIND, NULL) == 0, DGRUN_STAGE_MOUNT_DEV, host);
    }
    dg_check(mkdir("dev/pts", 0755) == 0, DGRUN_STAGE_MOUNT_DEV, "/dev/pts");
    dg_check(mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=620") == 0, DGRUN_STAGE_MOUNT_DEV, "/dev/pts");
    dg_check(symlink("pts/ptmx", "dev/ptmx") == 0, DGRUN_STAGE_MOUNT_DEV, "/dev/ptmx");
    dg_check(mkdir("dev/shm", 01777) == 0, DGRUN_STAGE_MOUNT_DEV, "/dev/shm");
    dg_check(mount("tmpfs", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") == 0,
             DGRUN_STAGE_MOUNT_DEV, "/dev/shm");
    static const char *const links[][2] = {
        { "/proc/self/fd", "dev/fd" }, { "/proc/self/fd/0", "dev/stdin" },
        { "/proc/self/fd/1", "dev/stdout" }, { "/proc/self/fd/2", "dev/stderr" },
    };
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
        dg_check(symlink(links[i][0], links[i][1]) == 0, DGRUN_STAGE_MOUNT_DEV, links[i][1]);
}

// Re-binds what is at rel over itself, read-only. A missing path is not an error (runc skips it too);
// a symlink is never followed, so a rootfs cannot point the mount elsewhere.
static void dg_readonly_path(const char *rel, const char *target) {
    int fd = dg_open_tree(rel, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) return;
    dg_check(fd >= 0, DGRUN_STAGE_READONLY_PATH, target);
    dg_check(dg_set_readonly(fd) == 0, DGRUN_STAGE_READONLY_PATH, target);
    dg_check(dg_attach(fd, rel) == 0, DGRUN_STAGE_READONLY_PATH, target);
    close(fd);
}

// Hides what is at rel: a directory under an empty read-only tmpfs, anything else under the host's
// /dev/null, read-only (reads give nothing, writes EROFS), as runc does.
static void dg_mask_path(const char *rel, const char *target) {
    struct stat st;
    if (fstatat(AT_FDCWD, rel, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        dg_check(errno == ENOENT, DGRUN_STAGE_MASK_PATH, target);
        return;
    }
    if (S_ISLNK(st.st_mode)) return;
    if (S_ISDIR(st.st_mode)) {
        dg_check(mount("tmpfs", rel, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0555") == 0,
                 DGRUN_STAGE_MASK_PATH, target);
        return;
    }
    int fd = dg_open_tree("/dev/null", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    dg_check(fd >= 0, DGRUN_STAGE_MASK_PATH, "/dev/null");
    dg_check(dg_set_readonly(fd) == 0, DGRUN_STAGE_MASK_PATH, target);
    dg_check(dg_attach(fd, rel) == 0, DGRUN_STAGE_MASK_PATH, target);
    close(fd);
}

// Build the new root under a private tmpfs at /tmp (of this mount namespace only) and pivot into it.
// Bind sources are cloned first, while the host's view of every path is still intact.
static void dg_setup_mounts(const struct dgrun_plan *plan) {
    int bind_fds[DG_MAX_BINDS];
    if (plan->n_mounts > DG_MAX_BINDS) dg_fail(DGRUN_STAGE_CLONE_BIND, E2BIG, "too many mounts");

    dg_check(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0, DGRUN_STAGE_MOUNT_PRIVATE, "/");

    const char *root_src = plan->rootfs ? plan->rootfs : "/";
    int root_fd = dg_open_tree(root_src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    dg_check(root_fd >= 0, DGRUN_STAGE_CLONE_ROOT, root_src);
    dg_check(dg_set_readonly(root_fd) == 0, DGRUN_STAGE_ROOT_READONLY, root_src);

    for (int i = 0; i < plan->n_mounts; i++) {
        const struct dgrun_mount *m = &plan->mounts[i];
        bind_fds[i] = -1;
        if (m->kind != DGRUN_MOUNT_BIND) continue;
        if (m->tree_fd >= 0) { bind_fds[i] = m->tree_fd; continue; }  // made (idmapped) by the parent
        bind_fds[i] = dg_open_tree(m->source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
        dg_check(bind_fds[i] >= 0, DGRUN_STAGE_CLONE_BIND, m->source);
        if (m->readonly) dg_check(dg_set_readonly(bind_fds[i]) == 0, DGRUN_STAGE_BIND_READONLY, m->source);
    }

    dg_check(mount("dgrun", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700,size=64k") == 0,
             DGRUN_STAGE_STAGING, "/tmp");
    dg_check(mkdir("/tmp/root", 0755) == 0, DGRUN_STAGE_STAGING, "/tmp/root");
    dg_check(dg_attach(root_fd, "/tmp/root") == 0, DGRUN_STAGE_ATTACH_ROOT, root_src);
    close(root_fd);
    dg_check(chdir("/tmp/root") == 0, DGRUN_STAGE_ATTACH_ROOT, "/tmp/root");

    if (plan->setup_proc)
        dg_check(mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0,
                 DGRUN_STAGE_MOUNT_PROC, "/proc");
    if (plan->setup_dev) dg_setup_dev();

    for (int i = 0; i < plan->n_mounts; i++) {
        const struct dgrun_mount *m = &plan->mounts[i];
        const char *rel = dg_relative(m->target);
        if (m->kind == DGRUN_MOUNT_TMPFS) {
            dg_mkdir_p(rel, 0);
            dg_check(mount("tmpfs", rel, "tmpfs", MS_NOSUID | MS_NODEV | (m->readonly ? MS_RDONLY : 0),
                           "mode=1777") == 0, DGRUN_STAGE_MOUNT_TMPFS, m->target);
        } else if (m->kind == DGRUN_MOUNT_BIND) {
            struct stat st;
            int is_file = fstat(bind_fds[i], &st) == 0 && !S_ISDIR(st.st_mode);
            if (faccessat(AT_FDCWD, rel, F_OK, AT_SYMLINK_NOFOLLOW) != 0) dg_mkdir_p(rel, is_file);
            dg_check(dg_attach(bind_fds[i], rel) == 0, DGRUN_STAGE_ATTACH_BIND, m->target);
            close(bind_fds[i]);
        }
    }

    // Last, so that nothing mounted above can uncover them: the kernel files a task must not write
    // (readonly) or read (mask). The tree is still the staged one, so host paths are not reachable.
    for (int i = 0; i < plan->n_mounts; i++) {
        const struct dgrun_mount *m = &plan->mounts[i];
        if (m->kind == DGRUN_MOUNT_READONLY) dg_readonly_path(dg_relative(m->target), m->target);
        else if (m->kind == DGRUN_MOUNT_MASK) dg_mask_path(dg_relative(m->target), m->target);
    }

    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only ours.
    dg_check(syscall(SYS_pivot_root, ".", ".") == 0, DGRUN_STAGE_PIVOT_ROOT, root_src);
    dg_check(umount2(".", MNT_DETACH) == 0, DGRUN_STAGE_PIVOT_ROOT, "old root");
    dg_check(chdir("/") == 0, DGRUN_STAGE_PIVOT_ROOT, "/");
}

static void dg_drop_caps(const struct dgrun_plan *plan, int stage_detail_is_init) {
    (void)stage_detail_is_init;
    for (int cap = 0; cap <= plan->last_cap; cap++) {
        if (plan->keep_caps & (1ULL << cap)) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
            dg_fail(DGRUN_STAGE_CAPS, errno, "bounding set");
    }
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    for (int i = 0; i < 2; i++) {
        uint32_t bits = (uint32_t)(plan->keep_caps >> (32 * i));
        data[i].effective = data[i].permitted = data[i].inheritable = bits;
    }
    dg_check(syscall(SYS_capset, &hdr, data) == 0, DGRUN_STAGE_CAPS, "capset");
    dg_check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == 0, DGRUN_STAGE_CAPS, "ambient");
    for (int cap = 0; cap <= plan->last_cap; cap++)
        if (plan->keep_caps & (1ULL << cap))
            dg_check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) == 0, DGRUN_STAGE_CAPS, "ambient");
}

// execvpe without allocation: try each PATH entry, remembering EACCES like execvp does.
__attribute__((noreturn)) static void dg_exec(const struct dgrun_plan *plan) {
    const char *file = plan->argv[0];
    char *const *argv = (char *const *)plan->argv;
    char *const *envp = (char *const *)plan->envp;
    if (!file || !*file) dg_fail(DGRUN_STAGE_EXEC, ENOENT, "");
    for (const char *c = file; *c; c++) {
        if (*c == '/') {
            execve(file, argv, envp);
            dg_fail(DGRUN_STAGE_EXEC, errno, file);
        }
    }
    int saw_eacces = 0, last = ENOENT;
    const char *p = plan->search_path ? plan->search_path : "/usr/local/bin:/usr/bin:/bin";
    char buf[DG_PATH_MAX];
    while (1) {
        const char *end = p;
        while (*end && *end != ':') end++;
        size_t dirlen = (size_t)(end - p);
        size_t flen = dg_strlen(file);
        if (dirlen + 1 + flen + 1 < sizeof buf) {
            size_t i = 0;
            if (dirlen == 0) buf[i++] = '.';
            for (size_t j = 0; j < dirlen; j++) buf[i++] = p[j];
            buf[i++] = '/';
            for (size_t j = 0; j < flen; j++) buf[i++] = file[j];
            buf[i] = 0;
            execve(buf, argv, envp);
            last = errno;
            if (last == EACCES) saw_eacces = 1;
            else if (last != ENOENT && last != ENOTDIR && last != ELOOP && last != ENAMETOOLONG) break;
        }
        if (!*end) break;
        p = end + 1;
    }
    dg_fail(DGRUN_STAGE_EXEC, saw_eacces ? EACCES : last, file);
}

// Loads one seccomp filter (none when bpf is NULL); filters stack, the strictest answer wins.
static void dg_load_filter(const void *bpf, uint16_t len, const char *what) {
    if (!bpf || !len) return;
    struct sock_fprog prog = { len, (struct sock_filter *)bpf };
    dg_check(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0, DGRUN_STAGE_SECCOMP, what);
}

// Installs the notify filter last (so denied calls never reach the tracer) and hands the listener to
// dgrun before any traced call: the filter lets this one sendmsg on trace_socket through.
static void dg_install_tracer(const struct dgrun_plan *plan) {
    struct sock_fprog prog = { plan->trace_bpf_len, (struct sock_filter *)plan->trace_bpf };
    int listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    dg_check(listener >= 0, DGRUN_STAGE_TRACE, "seccomp notify filter");
    char byte = 0;
    long r = dgrun_send_fds(plan->trace_socket, &byte, 1, &listener, 1);
    if (r < 0) errno = (int)-r;
    dg_check(r == 1, DGRUN_STAGE_TRACE, "send the tracer's listener");
    close(listener);
    close(plan->trace_socket);
}

// The command: the last stages before exec, in the order the kernel needs them.
__attribute__((noreturn)) static void dg_command(const struct dgrun_plan *plan) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < 65; sig++) sigaction(sig, &dfl, NULL);  // ignored signals stay ignored otherwise
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    if (plan->new_session) dg_check(setsid() >= 0, DGRUN_STAGE_SETSID, "setsid");
    if (plan->stdout_to_stderr) dg_check(dup2(2, 1) == 1, DGRUN_STAGE_CLOSE_FDS, "stdout");
    for (int i = 0; i < plan->n_rlimits; i++) {
        struct rlimit rl = { plan->rlimits[i].soft, plan->rlimits[i].hard };
        dg_check(setrlimit(plan->rlimits[i].resource, &rl) == 0, DGRUN_STAGE_RLIMIT, "setrlimit");
    }
    // Mark every inherited fd above stdio close-on-exec; the error pipe must live until execve.
    dg_check(syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) == 0, DGRUN_STAGE_CLOSE_FDS, "close_range");
    // The fast path's ring is the command's to map (its preloaded library finds it by number).
    if (plan->trace_bpf && plan->trace_ring_fd > 2)
        dg_check(fcntl(plan->trace_ring_fd, F_SETFD, 0) == 0, DGRUN_STAGE_TRACE, "the tracer's ring");
    dg_drop_caps(plan, 0);
    dg_check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, DGRUN_STAGE_NO_NEW_PRIVS, "prctl");
    dg_load_filter(plan->bpf, plan->bpf_len, "seccomp");
    dg_load_filter(plan->guard_bpf, plan->guard_bpf_len, "user-namespace filter");
    if (plan->trace_bpf && plan->trace_socket >= 0) dg_install_tracer(plan);
    dg_exec(plan);
}

// After the command: reap what it left behind until none is left or `linger_ms` passes.
// Signals reach every process that is left.
static void dg_init_linger(int linger_ms) {
    sigset_t all;
    sigfillset(&all);
    struct timespec now, deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += linger_ms / 1000;
    deadline.tv_nsec += (long)(linger_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000L; }
    while (1) {
        int status;
        pid_t p;
        while ((p = waitpid(-1, &status, WNOHANG | __WALL)) > 0) {}
        if (p < 0 && errno == ECHILD) return;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left_ns = (deadline.tv_sec - now.tv_sec) * 1000000000L + (deadline.tv_nsec - now.tv_nsec);
        if (left_ns <= 0) return;
        struct timespec wait = { left_ns / 1000000000L, left_ns % 1000000000L };
        siginfo_t info;
        int sig = sigtimedwait(&all, &info, &wait);
        if (sig > 0 && sig != SIGCHLD) kill(-1, sig);
    }
}

// The init's last word, once every other process of the sandbox is dead and reaped.
struct dg_report {
    int32_t command_status;    // wait status of the command
    int32_t init_code;         // what the init exits with
    int32_t out_of_cgroups;    // 1: the init is in none of the run's cgroups (they are empty now)
    int32_t pad;
    int64_t user_usec, sys_usec, maxrss_kib;  // rusage of everything the init reaped
};

// A struct rusage as the CPU microseconds and the peak RSS that dgrun reports.
static void dg_usage(const struct rusage *ru, int64_t *user_usec, int64_t *sys_usec, int64_t *maxrss_kib) {
    *user_usec = (int64_t)ru->ru_utime.tv_sec * 1000000 + ru->ru_utime.tv_usec;
    *sys_usec = (int64_t)ru->ru_stime.tv_sec * 1000000 + ru->ru_stime.tv_usec;
    *maxrss_kib = ru->ru_maxrss;
}

// End the sandbox: kill what the command left, reap it all, then tell dgrun, which can remove the
// run's cgroups (when the init is not in them) and report the exit status while the init's exit
// tears the namespaces down: 0.8 ms of `exec -- /bin/true`, as bubblewrap's monitor does not wait
// for its pid 1 either. stdio is closed first, so that a caller reading dgrun's output through a
// pipe sees its end with dgrun's exit.
__attribute__((noreturn)) static void dg_init_end(int status_fd, int32_t command_status, int out_of_cgroups) {
    kill(-1, SIGKILL);
    int status;
    while (waitpid(-1, &status, __WALL) > 0 || errno == EINTR) {}
    struct dg_report report;
    memset(&report, 0, sizeof report);
    report.command_status = command_status;
    report.init_code = WIFEXITED(command_status) ? WEXITSTATUS(command_status) : 128 + WTERMSIG(command_status);
    report.out_of_cgroups = out_of_cgroups;
    struct rusage ru;
    if (getrusage(RUSAGE_CHILDREN, &ru) == 0) dg_usage(&ru, &report.user_usec, &report.sys_usec, &report.maxrss_kib);
    close(0);
    close(1);
    close(2);
    ssize_t r;
    do { r = write(status_fd, &report, sizeof report); } while (r < 0 && errno == EINTR);
    _exit(report.init_code);
}

int dgrun_is_stop_signal(int sig) { return sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT; }

// pid 1 of the sandbox: forward signals to the command, reap every orphan, report the command's
// status to the parent, and end the namespace when the command ends (or lingers: see above).
__attribute__((noreturn)) static void dg_init_loop(pid_t command, int status_fd, int linger_ms, int out_of_cgroups) {
    sigset_t all;
    sigfillset(&all);
    while (1) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0) continue;
        if (sig != SIGCHLD) {
            // A stop signal goes to every process of the sandbox, as a terminal's ^C reaches the
            // whole foreground job: a shell waiting for its child would otherwise outwait it.
            // Others (USR1, USR2) are the command's own business.
            if (dgrun_is_stop_signal(sig)) kill(-1, sig);
            else kill(command, sig);
            continue;
        }
        int status;
        pid_t p;
        while ((p = waitpid(-1, &status, WNOHANG | __WALL)) > 0) {
            if (p != command) continue;
            if (linger_ms > 0) dg_init_linger(linger_ms);
            dg_init_end(status_fd, status, out_of_cgroups);  // whatever the command left behind dies with it
        }
    }
}

// Closes every fd above stdio except the `n` given (-1 entries: none).
static void dg_close_except(int *keep, int n) {
    for (int i = 0; i < n; i++)  // sort them
        for (int j = i + 1; j < n; j++)
            if (keep[j] < keep[i]) { int t = keep[i]; keep[i] = keep[j]; keep[j] = t; }
    unsigned from = 3;
    for (int i = 0; i < n; i++) {
        if (keep[i] < (int)from) continue;
        if ((unsigned)keep[i] > from) syscall(SYS_close_range, from, (unsigned)keep[i] - 1, 0);
        from = (unsigned)keep[i] + 1;
    }
    syscall(SYS_close_range, from, ~0U, 0);
}

// The run's cgroups: joined by whoever dg_command_joins names, before anything else runs there.
// cgroup v1 `tasks` files get "0", the writer itself (see v1_task_fds); the cgroup namespace is
// unshared after, so that it is rooted at the run's cgroup.
static void dg_join_cgroups(const struct dgrun_plan *plan) {
    for (int i = 0; i < plan->n_v1_task_fds; i++) {
        ssize_t w;
        do { w = write(plan->v1_task_fds[i], "0", 1); } while (w < 0 && errno == EINTR);
        dg_check(w == 1, DGRUN_STAGE_CGROUP_JOIN, "cgroup v1 tasks");
        close(plan->v1_task_fds[i]);
    }
    if (plan->clone_flags & CLONE_NEWCGROUP)
        dg_check(unshare(CLONE_NEWCGROUP) == 0, DGRUN_STAGE_CGROUPNS, "cgroup namespace");
}

#define DG_MAX_PASSED_FDS 16

long dgrun_send_fds(int socket_fd, const void *data, size_t len, const int *fds, int n_fds) {
    if (n_fds < 0 || n_fds > DG_MAX_PASSED_FDS) return -E2BIG;
    struct iovec iov = { (void *)data, len };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * DG_MAX_PASSED_FDS)]; } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (n_fds > 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n_fds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n_fds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n_fds);
    }
    ssize_t r;
    do { r = sendmsg(socket_fd, &msg, MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : (long)r;
}

long dgrun_recv_fds(int socket_fd, void *data, size_t len, int *fds, int max_fds, int *n_fds) {
    *n_fds = 0;
    struct iovec iov = { data, len };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * DG_MAX_PASSED_FDS)]; } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    ssize_t r;
    do { r = recvmsg(socket_fd, &msg, MSG_CMSG_CLOEXEC); } while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (*n_fds < max_fds) fds[(*n_fds)++] = fd;
            else close(fd);
        }
    }
    return (long)r;
}

// What dgrun_send_resources sends, the fds beside it (SCM_RIGHTS, v2
// directory first when there is one).
struct dg_resources {
    int32_t has_cgroup_fd;
    int32_t n_v1;
    int32_t n_rlimits;
    int32_t pad;
    struct dgrun_rlimit rlimits[DGRUN_MAX_SENT_RLIMITS];
};

// The plan with the resources received: static, as the plan the command reads must outlive the
// init's frames (the command runs on the init's memory until its exec).
static struct dgrun_plan dg_received;
static int32_t dg_received_task_fds[DGRUN_MAX_SENT_TASK_FDS];
static struct dgrun_rlimit dg_received_rlimits[2 * DGRUN_MAX_SENT_RLIMITS];

// Waits for dgrun's resources, the last message on the go socket (closed here); the plan to go on
// with. EOF (dgrun died, or gave up on this sandbox) or anything malformed ends the init: there
// is no command yet to report about.
static const struct dgrun_plan *dg_receive_resources(const struct dgrun_plan *plan, int go_fd) {
    struct dg_resources msg;
    memset(&msg, 0, sizeof msg);
    int fds[1 + DGRUN_MAX_SENT_TASK_FDS];
    int n_fds = 0;
    long got = dgrun_recv_fds(go_fd, &msg, sizeof msg, fds, 1 + DGRUN_MAX_SENT_TASK_FDS, &n_fds);
    close(go_fd);
    if (got != (long)sizeof msg) _exit(125);
    int want = (msg.has_cgroup_fd ? 1 : 0) + msg.n_v1;
    if (msg.n_v1 < 0 || msg.n_v1 > DGRUN_MAX_SENT_TASK_FDS || msg.n_rlimits < 0 || msg.n_rlimits > DGRUN_MAX_SENT_RLIMITS ||
        n_fds != want || plan->n_rlimits < 0 || plan->n_rlimits > DGRUN_MAX_SENT_RLIMITS) _exit(125);
    dg_received = *plan;
    int next = 0;
    dg_received.cgroup_fd = msg.has_cgroup_fd ? fds[next++] : -1;
    for (int i = 0; i < msg.n_v1; i++) dg_received_task_fds[i] = fds[next++];
    dg_received.v1_task_fds = dg_received_task_fds;
    dg_received.n_v1_task_fds = msg.n_v1;
    int n = 0;
    for (int i = 0; i < plan->n_rlimits; i++) dg_received_rlimits[n++] = plan->rlimits[i];
    for (int i = 0; i < msg.n_rlimits; i++) dg_received_rlimits[n++] = msg.rlimits[i];
    dg_received.rlimits = dg_received_rlimits;
    dg_received.n_rlimits = n;
    return &dg_received;
}

struct dg_command_start { const struct dgrun_plan *plan; int status_fd; };

// The command's side of the init's clone: the status pipe is the init's alone.
static int dg_command_entry(void *arg) {
    const struct dg_command_start *start = arg;
    close(start->status_fd);
    if (dg_command_joins(start->plan)) dg_join_cgroups(start->plan);
    dg_command(start->plan);
}

__attribute__((noreturn)) static void dg_child_main(const struct dgrun_plan *plan, int go_fd, int status_fd) {
    // Die with dgrun; the go byte read below also ends at EOF if dgrun died before this.
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (plan->output_fd >= 0) {  // the task's own log: the init's stdio, and so the command's
        if (dup2(plan->output_fd, 1) != 1 || dup2(plan->output_fd, 2) != 2) _exit(125);
    }
    char go;
    ssize_t r;
    do { r = read(go_fd, &go, 1); } while (r < 0 && errno == EINTR);
    if (r != 1) _exit(125);
    // The init is dgrun's own image and holds the status pipe to dgrun: a dumpable init would let
    // the command open /proc/1/exe (the dgrun binary on the host's writable mount, the runc
    // CVE-2019-5736 class) or /proc/1/fd/N (and forge the exit status dgrun reads). Not dumpable,
    // /proc/1 needs CAP_SYS_PTRACE over the host's namespace. Only now: the parent, rootless,
    // had to write /proc/PID/uid_map first, which a non-dumpable process's owner change forbids.
    dg_check(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0, DGRUN_STAGE_WAIT_GO, "prctl(PR_SET_DUMPABLE)");
    if (plan->become_root) {
        // Mapped to a subordinate range, the init's own host ids mean nothing inside: it becomes
        // the range's root (and drops the host's supplementary groups) before creating anything.
        dg_check(syscall(SYS_setgroups, 0, NULL) == 0, DGRUN_STAGE_SET_IDS, "setgroups");
        dg_check(syscall(SYS_setresgid, 0, 0, 0) == 0, DGRUN_STAGE_SET_IDS, "setresgid");
        dg_check(syscall(SYS_setresuid, 0, 0, 0) == 0, DGRUN_STAGE_SET_IDS, "setresuid");
    }

    int command_joins = dg_command_joins(plan);
    // The init joins the cgroups itself: it needs them now. The command joins them: they are
    // made while the init builds the namespaces, and needed only before the command exists.
    if (!command_joins) {
        plan = dg_receive_resources(plan, go_fd);
        dg_join_cgroups(plan);
    }
    if (plan->hostname)
        dg_check(sethostname(plan->hostname, dg_strlen(plan->hostname)) == 0, DGRUN_STAGE_HOSTNAME, plan->hostname);
    if (plan->loopback_up) dg_loopback_up();
    if (plan->clone_flags & CLONE_NEWNS) dg_setup_mounts(plan);
    if (plan->cwd) dg_check(chdir(plan->cwd) == 0, DGRUN_STAGE_CHDIR, plan->cwd);
    if (command_joins) plan = dg_receive_resources(plan, go_fd);
    // Everything else dgrun had open (other threads' files, other sandboxes' pipes, the trees the
    // mounts above used) is closed now, before the command exists: the init never execs, so
    // close-on-exec would never close it, and the command must not find it through /proc/1/fd.
    // The command's cgroup files stay open for it, when it joins.
    int keep[4 + 1 + 8];
    int n_keep = 0;
    keep[n_keep++] = status_fd;
    keep[n_keep++] = dg_error_fd;
    keep[n_keep++] = plan->trace_socket;
    keep[n_keep++] = plan->trace_bpf && plan->trace_ring_fd > 2 ? plan->trace_ring_fd : -1;
    if (command_joins) {
        keep[n_keep++] = plan->cgroup_fd;
        for (int i = 0; i < plan->n_v1_task_fds && i < 8; i++) keep[n_keep++] = plan->v1_task_fds[i];
    }
    dg_close_except(keep, n_keep);

    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    // The command shares the init's memory until its exec (CLONE_VM | CLONE_VFORK, as
    // posix_spawn does): the init is a copy of dgrun's whole address space, and a fork copied its
    // page tables, made every page copy-on-write for both, and the exec then tore the copy down.
    // The init waits meanwhile; the command runs on a stack of its own, touches nothing of the
    // init's but its own frames, and leaves by execve or _exit. Every signal stays blocked until
    // dg_command has reset the handlers (its own: no CLONE_SIGHAND).
    // The stack is static: the init is a process of its own (its copy of this array is its own),
    // and nothing is allocated between clone and exec.
    static char command_stack[256 * 1024] __attribute__((aligned(16)));
    struct dg_command_start start = { plan, status_fd };
    long pid;
#if DG_COMMAND_JOINS_CGROUPS
    if (command_joins) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_VM | CLONE_VFORK;
        args.exit_signal = SIGCHLD;
        args.stack = (uint64_t)(uintptr_t)command_stack;
        args.stack_size = sizeof command_stack;
        if (plan->cgroup_fd >= 0) {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = (uint64_t)plan->cgroup_fd;
        }
        pid = dg_clone3_call(&args, sizeof args, dg_command_entry, &start);
        if (pid < 0) { errno = (int)-pid; pid = -1; }
        if (plan->cgroup_fd >= 0) close(plan->cgroup_fd);
        for (int i = 0; i < plan->n_v1_task_fds; i++) close(plan->v1_task_fds[i]);
    } else
#endif
    pid = clone(dg_command_entry, command_stack + sizeof command_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &start);
    if (pid < 0) dg_fail(DGRUN_STAGE_FORK, errno, "fork");
    // The error pipe now belongs to the command: EOF on it tells the parent that exec succeeded.
    close(dg_error_fd);
    dg_error_fd = -1;
    struct dgrun_plan init_plan = *plan;
    init_plan.keep_caps = 0;
    dg_drop_caps(&init_plan, 1);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    dg_init_loop((pid_t)pid, status_fd, plan->linger_ms, command_joins || (plan->cgroup_fd < 0 && plan->n_v1_task_fds == 0));
}

// ---------------------------------------------------------------- parent side

static const int dg_forwarded[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };

static void dg_forwarded_set(sigset_t *set) {
    sigemptyset(set);
    for (size_t i = 0; i < sizeof dg_forwarded / sizeof dg_forwarded[0]; i++) sigaddset(set, dg_forwarded[i]);
}

int dgrun_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno; }

int dgrun_forwarded_signalfd(void) {
    sigset_t set;
    dg_forwarded_set(&set);
    int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return fd >= 0 ? fd : -errno;
}

int dgrun_read_signal(int fd) {
    struct signalfd_siginfo si;
    return read(fd, &si, sizeof si) == (ssize_t)sizeof si ? (int)si.ssi_signo : 0;
}

int dgrun_block_signals(void) {
    sigset_t set;
    dg_forwarded_set(&set);
    return sigprocmask(SIG_BLOCK, &set, NULL) == 0 ? 0 : -errno;
}

// --userns auto: the idmapping's user namespace belongs to a child that only waits to be killed.
// (Parent side: stdio is fine here.)
static int dg_idmap_child(void *arg) { (void)arg; for (;;) pause(); return 0; }

static int dg_write_map(pid_t pid, const char *file, uint32_t inside, uint32_t outside, uint32_t count) {
    char path[64], map[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    int n = snprintf(map, sizeof map, "%u %u %u\n", inside, outside, count);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t w = write(fd, map, (size_t)n);
    int e = w < 0 ? errno : EIO;
    close(fd);
    return w == n ? 0 : -e;
}

// The fork lock of swift-subprocess: pipes are made and their child ends closed under it, so a
// sandbox cloned by another thread at the same moment never inherits them (its init never execs,
// so CLOEXEC would not close them, and a parent would wait for an EOF that never comes).
static pthread_mutex_t dg_spawn_lock = PTHREAD_MUTEX_INITIALIZER;

int dgrun_idmap_userns(uint32_t inside_uid, uint32_t outside_uid, uint32_t inside_gid, uint32_t outside_gid, uint32_t count) {
    static char stack[16384] __attribute__((aligned(16)));
    // Under the fork lock for the whole life of the child: it must not hold another sandbox's
    // pipe ends, and the one stack is its alone.
    pthread_mutex_lock(&dg_spawn_lock);
    // CLONE_VM: nothing of dgrun's memory is copied for a child that only waits (a copy of the page
    // tables of a multi-threaded Swift process is most of what this call would cost).
    pid_t pid = clone(dg_idmap_child, stack + sizeof stack, CLONE_VM | CLONE_NEWUSER | SIGCHLD, NULL);
    if (pid < 0) { int e = errno; pthread_mutex_unlock(&dg_spawn_lock); return -e; }
    int rc = dg_write_map(pid, "uid_map", inside_uid, outside_uid, count);
    if (rc == 0) rc = dg_write_map(pid, "gid_map", inside_gid, outside_gid, count);
    if (rc == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
        rc = open(path, O_RDONLY | O_CLOEXEC);
        if (rc < 0) rc = -errno;
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR) {}
    pthread_mutex_unlock(&dg_spawn_lock);
    return rc;
}

int dgrun_idmapped_tree(const char *path, int userns_fd, int readonly, int *stage) {
    *stage = 0;
    int fd = dg_open_tree(path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd < 0) return -errno;
    *stage = 1;
    struct dg_mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | (readonly ? MOUNT_ATTR_RDONLY : 0);
    attr.userns_fd = (uint64_t)userns_fd;
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static int dg_spawn_locked(const struct dgrun_plan *plan, struct dgrun_child *child);
static void dg_reap_exiting(void);

int dgrun_spawn(const struct dgrun_plan *plan, struct dgrun_child *child) {
    pthread_mutex_lock(&dg_spawn_lock);
    dg_reap_exiting();
    int rc = dg_spawn_locked(plan, child);
    pthread_mutex_unlock(&dg_spawn_lock);
    return rc;
}

static int dg_spawn_locked(const struct dgrun_plan *plan, struct dgrun_child *child) {
    int go[2], err[2], status[2];
    memset(child, 0, sizeof *child);
    child->pid = -1;
    child->pidfd = child->go_fd = child->error_fd = child->status_fd = -1;
    // A socket, not a pipe: the resources made after the clone follow the go byte as a message of
    // their own, with their fds.
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, go) != 0) return -errno;
    if (pipe2(err, O_CLOEXEC) != 0) { int e = errno; close(go[0]); close(go[1]); return -e; }
    if (pipe2(status, O_CLOEXEC) != 0) {
        int e = errno; close(go[0]); close(go[1]); close(err[0]); close(err[1]); return -e;
    }
    int pidfd = -1;
    uint64_t flags = plan->clone_flags & ~(uint64_t)CLONE_NEWCGROUP;
    long pid = dg_clone3(flags | CLONE_PIDFD, &pidfd, dg_command_joins(plan) ? -1 : plan->cgroup_fd);
    if (pid == 0) {
        close(go[1]);
        close(err[0]);
        close(status[0]);
        dg_error_fd = err[1];
        dg_child_main(plan, go[0], status[1]);
    }
    int e = errno;
    close(go[0]);
    close(err[1]);
    close(status[1]);
    if (pid < 0) {
        close(go[1]); close(err[0]); close(status[0]);
        return -e;
    }
    child->pid = (pid_t)pid;
    child->pidfd = pidfd;
    child->go_fd = go[1];
    child->error_fd = err[0];
    child->status_fd = status[0];
    return 0;
}

int dgrun_release(struct dgrun_child *child) {
    char go = 1;
    ssize_t r;
    do { r = send(child->go_fd, &go, 1, MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    return r == 1 ? 0 : -errno;
}

int dgrun_send_resources(struct dgrun_child *child, int cgroup_fd, const int32_t *v1_task_fds, int32_t n_v1,
                         const struct dgrun_rlimit *rlimits, int32_t n_rlimits) {
    if (child->go_fd < 0) return -EBADF;
    if (n_v1 < 0 || n_v1 > DGRUN_MAX_SENT_TASK_FDS || n_rlimits < 0 || n_rlimits > DGRUN_MAX_SENT_RLIMITS) return -E2BIG;
    struct dg_resources msg;
    memset(&msg, 0, sizeof msg);
    msg.has_cgroup_fd = cgroup_fd >= 0;
    msg.n_v1 = n_v1;
    msg.n_rlimits = n_rlimits;
    for (int i = 0; i < n_rlimits; i++) msg.rlimits[i] = rlimits[i];
    int fds[1 + DGRUN_MAX_SENT_TASK_FDS];
    int n_fds = 0;
    if (cgroup_fd >= 0) fds[n_fds++] = cgroup_fd;
    for (int i = 0; i < n_v1; i++) fds[n_fds++] = v1_task_fds[i];
    long r = dgrun_send_fds(child->go_fd, &msg, sizeof msg, fds, n_fds);
    int e = r == (long)sizeof msg ? 0 : (r < 0 ? (int)r : -EIO);
    close(child->go_fd);
    child->go_fd = -1;
    return e;
}

int dgrun_read_failure(struct dgrun_child *child, struct dgrun_failure *out) {
    size_t got = 0;
    while (got < sizeof *out) {
        ssize_t r = read(child->error_fd, (char *)out + got, sizeof *out - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) break;
        got += (size_t)r;
    }
    return got == sizeof *out ? 1 : 0;
}

static int64_t dg_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int dg_pidfd_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

// Serving threads for the tracer: DGRUN_TRACER_THREADS, or one per two CPUs dgrun may run on (at
// most 4). Under synchronous wake-ups a traced process and the thread answering it share a CPU;
// on two CPUs a second thread measured no faster (bench/discover.sh), past four the run's own
// CPUs are the limit.
static int dg_tracer_threads(void) {
    const char *forced = getenv("DGRUN_TRACER_THREADS");
    if (forced && *forced) {
        int n = atoi(forced);
        return n < 1 ? 1 : (n > DGRUN_TRACER_MAX_THREADS ? DGRUN_TRACER_MAX_THREADS : n);
    }
    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    int n = cpus / 2;
    return n < 1 ? 1 : (n > 4 ? 4 : n);
}

// 1: a whole report read; 0: none (the init died before it could write one).
static int dg_read_report(int fd, struct dg_report *report) {
    ssize_t got;
    do { got = read(fd, report, sizeof *report); } while (got < 0 && errno == EINTR);
    return got == (ssize_t)sizeof *report;
}

int dgrun_wait(struct dgrun_child *child, int64_t timeout_ms, int64_t grace_ms, int kill_fd,
               int trace_socket, int control_fd, struct dgrun_trace_log *log, struct dgrun_outcome *out) {
    memset(out, 0, sizeof *out);
    // The signals to forward: from a signalfd of this call's own, or from the caller's pipe.
    int own_signalfd = control_fd < 0;
    int sfd = own_signalfd ? dgrun_forwarded_signalfd() : control_fd;
    if (sfd < 0) return sfd;
    int64_t deadline = timeout_ms >= 0 ? dg_now_ms() + timeout_ms : -1;
    int phase = 0;  // 0 running, 1 SIGTERM sent, 2 SIGKILL sent
    int report_fd = child->status_fd;
    struct dg_report report;
    int have_report = 0;
    int listener = -1;  // served here only when no serving thread could start
    struct dgrun_tracer tracer;
    int serving = 0;
    while (1) {
        int wait_ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - dg_now_ms();
            wait_ms = left < 0 ? 0 : (left > 1000000 ? 1000000 : (int)left);
        }
        // The tracer's listener (or, until it arrives, the socket it comes over) is served first:
        // a traced process waits in the kernel until its notification is answered.
        int trace_fd = listener >= 0 ? listener : trace_socket;
        // The init's report (a negative fd once it is read or gone: poll skips it).
        struct pollfd fds[4] = { { child->pidfd, POLLIN, 0 }, { sfd, POLLIN, 0 }, { report_fd, POLLIN, 0 }, { trace_fd, POLLIN, 0 } };
        int n = poll(fds, trace_fd >= 0 ? 4 : 3, wait_ms);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            if (own_signalfd) close(sfd);
            if (listener >= 0) close(listener);
            if (serving) dgrun_tracer_stop(&tracer);
            return -e;
        }
        if (trace_fd >= 0 && fds[3].revents) {
            if (listener < 0) {
                listener = dgrun_trace_receive_listener(trace_socket);
                if (listener < 0) {
                    trace_socket = -1;  // the command died before it could send it
                } else if (dgrun_tracer_start(&tracer, listener, log, dg_tracer_threads()) == 0) {
                    serving = 1;  // the threads own the listener now
                    listener = -1;
                    trace_socket = -1;
                }
            } else if (fds[3].revents & POLLIN) {
                if (dgrun_trace_handle(listener, log) != 0) { close(listener); listener = -1; trace_socket = -1; }
            } else {
                close(listener);  // POLLHUP: every traced process is gone
                listener = -1;
                trace_socket = -1;
            }
            continue;
        }
        if (fds[0].revents) break;
        if (report_fd >= 0 && fds[2].revents) {
            have_report = dg_read_report(report_fd, &report);
            report_fd = -1;  // read, or the init died without one: its exit tells the rest
            if (have_report && report.out_of_cgroups) break;
            continue;
        }
        if (fds[1].revents) {
            int sig = 0;
            if (own_signalfd) {
                sig = dgrun_read_signal(sfd);
            } else {
                int32_t got_sig;
                ssize_t got = read(sfd, &got_sig, sizeof got_sig);
                if (got == (ssize_t)sizeof got_sig && got_sig > 0) sig = (int)got_sig;
                else if (got == 0) sfd = -1;  // the writer is gone: nothing more will come (poll skips a negative fd)
            }
            if (sig > 0) {
                out->last_signal = sig;
                dg_pidfd_signal(child->pidfd, sig);
                // Asked to stop: what has not stopped within the grace period is killed, as
                // `docker stop` does (the timeout's own grace, if it is already running, stands).
                if (dgrun_is_stop_signal(sig) && phase == 0) {
                    phase = 1;
                    deadline = dg_now_ms() + (grace_ms >= 0 ? grace_ms : 0);
                }
            }
            continue;
        }
        if (deadline >= 0 && dg_now_ms() >= deadline) {
            if (phase == 0) {
                out->timed_out = 1;
                dg_pidfd_signal(child->pidfd, SIGTERM);
                phase = 1;
                deadline = dg_now_ms() + (grace_ms >= 0 ? grace_ms : 0);
            } else {
                if (kill_fd >= 0) { ssize_t r = write(kill_fd, "1", 1); (void)r; }
                dg_pidfd_signal(child->pidfd, SIGKILL);
                phase = 2;
                deadline = -1;
            }
        }
    }
    if (own_signalfd) close(sfd);
    if (listener >= 0) close(listener);
    // The sandbox's init is gone, and with it every traced process: nothing is left to answer.
    if (serving) dgrun_tracer_stop(&tracer);
    if (have_report && report.out_of_cgroups) {
        // Everything in the sandbox is dead and reaped; the init itself is still exiting (its
        // namespaces' teardown). dgrun_close reaps it, or leaves it to be reaped later.
        out->init_status = (report.init_code & 0xff) << 8;
        out->init_exiting = 1;
    } else {
        siginfo_t info;
        struct rusage ru;
        memset(&info, 0, sizeof info);
        memset(&ru, 0, sizeof ru);
        long r;
        do { r = syscall(SYS_waitid, P_PIDFD, child->pidfd, &info, WEXITED | __WALL, &ru); } while (r < 0 && errno == EINTR);
        if (r < 0) return -errno;
        out->init_status = info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8 : (info.si_status & 0x7f);
        child->pid = -1;
        if (!have_report && report_fd >= 0) have_report = dg_read_report(report_fd, &report);
        // Killed before it could report: its own rusage covers what it reaped.
        if (!have_report) dg_usage(&ru, &out->user_usec, &out->sys_usec, &out->maxrss_kib);
    }
    if (have_report) {
        out->have_command_status = 1;
        out->command_status = report.command_status;
        out->user_usec = report.user_usec;
        out->sys_usec = report.sys_usec;
        out->maxrss_kib = report.maxrss_kib;
    }
    return 0;
}

// Inits that reported and were still exiting when their run was closed (pidfds), reaped as they
// finish, and at the latest when dgrun exits: an init that outlived dgrun would be left to the
// process dgrun's parent is, and a container's pid 1 is often one that reaps nothing (`tail -f
// /dev/null`, `sleep infinity`), where every run would leave a zombie. Guarded by dg_spawn_lock.
#define DG_MAX_EXITING 64
static int dg_exiting[DG_MAX_EXITING];
static int dg_n_exiting;
static int dg_reap_at_exit_registered;
static void dg_reap_all_exiting(void);

// 1 once the process behind `pidfd` is reaped (or is not this process's child any more).
static int dg_reap(int pidfd, int block) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    long r;
    do { r = syscall(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED | __WALL | (block ? 0 : WNOHANG), NULL); } while (r < 0 && errno == EINTR);
    return r < 0 || info.si_pid != 0;
}

static void dg_reap_exiting(void) {
    int kept = 0;
    for (int i = 0; i < dg_n_exiting; i++) {
        if (dg_reap(dg_exiting[i], 0)) close(dg_exiting[i]);
        else dg_exiting[kept++] = dg_exiting[i];
    }
    dg_n_exiting = kept;
}

// atexit: what is left by now is in the last moments of its exit (its teardown ran while dgrun
// removed the cgroups and wrote its report). One that is not gone within 2 s (none should be:
// everything it waited for is dead) is killed, so that dgrun's own exit cannot hang on it.
static void dg_reap_all_exiting(void) {
    pthread_mutex_lock(&dg_spawn_lock);
    for (int i = 0; i < dg_n_exiting; i++) {
        struct pollfd gone = { dg_exiting[i], POLLIN, 0 };
        int ready;
        do { ready = poll(&gone, 1, 2000); } while (ready < 0 && errno == EINTR);
        if (ready == 0) syscall(SYS_pidfd_send_signal, dg_exiting[i], SIGKILL, NULL, 0);
        dg_reap(dg_exiting[i], 1);
        close(dg_exiting[i]);
    }
    dg_n_exiting = 0;
    pthread_mutex_unlock(&dg_spawn_lock);
}

void dgrun_reap(struct dgrun_child *child) {
    if (child->pidfd < 0 || child->pid < 0) return;
    dg_reap(child->pidfd, 1);
    child->pid = -1;
}

void dgrun_abort(struct dgrun_child *child) {
    if (child->pidfd < 0 || child->pid < 0) return;
    dg_pidfd_signal(child->pidfd, SIGKILL);
    siginfo_t info;
    long r;
    do { r = syscall(SYS_waitid, P_PIDFD, child->pidfd, &info, WEXITED | __WALL, NULL); } while (r < 0 && errno == EINTR);
    child->pid = -1;
}

void dgrun_close(struct dgrun_child *child) {
    if (child->pidfd >= 0 && child->pid >= 0) {  // an init still exiting: reaped now or later
        pthread_mutex_lock(&dg_spawn_lock);
        dg_reap_exiting();
        if (dg_reap(child->pidfd, 0)) {
            close(child->pidfd);
        } else {
            if (dg_n_exiting == DG_MAX_EXITING) {  // full: wait for the oldest
                dg_reap(dg_exiting[0], 1);
                close(dg_exiting[0]);
                memmove(dg_exiting, dg_exiting + 1, sizeof dg_exiting[0] * (DG_MAX_EXITING - 1));
                dg_n_exiting--;
            }
            dg_exiting[dg_n_exiting++] = child->pidfd;
            if (!dg_reap_at_exit_registered) dg_reap_at_exit_registered = atexit(dg_reap_all_exiting) == 0;
        }
        pthread_mutex_unlock(&dg_spawn_lock);
        child->pidfd = -1;
        child->pid = -1;
    }
    int *fds[] = { &child->pidfd, &child->go_fd, &child->error_fd, &child->status_fd };
    for (size_t i = 0; i < 4; i++) {
        if (*fds[i] >= 0) close(*fds[i]);
        *fds[i] = -1;
    }
}

const char *dgrun_stage_name(int stage) {
    switch (stage) {
    case DGRUN_STAGE_WAIT_GO: return "wait for the parent";
    case DGRUN_STAGE_CGROUP_JOIN: return "join the run's cgroup";
    case DGRUN_STAGE_CGROUPNS: return "unshare the cgroup namespace";
    case DGRUN_STAGE_HOSTNAME: return "set the hostname";
    case DGRUN_STAGE_LOOPBACK: return "bring up the loopback interface";
    case DGRUN_STAGE_MOUNT_PRIVATE: return "make mounts private";
    case DGRUN_STAGE_CLONE_ROOT: return "clone the root filesystem";
    case DGRUN_STAGE_ROOT_READONLY: return "make the root read-only";
    case DGRUN_STAGE_CLONE_BIND: return "clone a bind mount source";
    case DGRUN_STAGE_BIND_READONLY: return "make a bind mount read-only";
    case DGRUN_STAGE_STAGING: return "mount the staging tmpfs";
    case DGRUN_STAGE_ATTACH_ROOT: return "attach the new root";
    case DGRUN_STAGE_MOUNT_PROC: return "mount proc";
    case DGRUN_STAGE_MOUNT_DEV: return "set up /dev";
    case DGRUN_STAGE_MOUNT_TMPFS: return "mount a tmpfs";
    case DGRUN_STAGE_ATTACH_BIND: return "bind mount";
    case DGRUN_STAGE_PIVOT_ROOT: return "pivot_root";
    case DGRUN_STAGE_CHDIR: return "change to the working directory";
    case DGRUN_STAGE_FORK: return "fork the command";
    case DGRUN_STAGE_RLIMIT: return "set a resource limit";
    case DGRUN_STAGE_CAPS: return "drop capabilities";
    case DGRUN_STAGE_NO_NEW_PRIVS: return "set no_new_privs";
    case DGRUN_STAGE_SECCOMP: return "load the seccomp filter";
    case DGRUN_STAGE_TRACE: return "start the discovery tracer";
    case DGRUN_STAGE_CLOSE_FDS: return "close inherited file descriptors";
    case DGRUN_STAGE_SETSID: return "start a new session";
    case DGRUN_STAGE_EXEC: return "execute";
    case DGRUN_STAGE_READONLY_PATH: return "make a kernel path read-only";
    case DGRUN_STAGE_MASK_PATH: return "mask a kernel path";
    case DGRUN_STAGE_SET_IDS: return "become root of the id range";
    default: return "set up the sandbox";
    }
}
