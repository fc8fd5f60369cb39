// The least a seccomp user-notification tracer can cost: the same calls as `dgrun discover`
// trapped, each answered "continue" at once, nothing read, resolved or logged. bench/discover.sh
// runs it beside dgrun to show how much of discover's overhead is the kernel round trip itself.
//   unotify-floor CMD [ARGS...]
//   UNOTIFY_FLOOR_ADDFD=1 unotify-floor CMD...: a read-only openat of an absolute path is opened here
//     and installed in the caller with SECCOMP_IOCTL_NOTIF_ADDFD (SECCOMP_ADDFD_FLAG_SEND) instead
//     of continued: what answering opens that way would cost at the least.
//   UNOTIFY_FLOOR_STUB=1 LD_PRELOAD=libdgrun-ceiling.so DGRUN_FASTTRACE=STUB:-1 unotify-floor CMD...
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/uio.h>
#include <linux/filter.h>
#include <sys/mman.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dgrun_fasttrace.h"

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

static const char *calls[] = {
    "open", "openat", "openat2", "creat", "execve", "execveat", "stat", "lstat", "newfstatat", "statx",
    "access", "faccessat", "faccessat2", "readlink", "readlinkat", "mkdir", "mkdirat", "unlink", "unlinkat",
    "rmdir", "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "truncate", "chdir",
    "connect", "bind", "listen", "sendto", "sendmsg",
};

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: unotify-floor CMD [ARGS...]\n"); return 2; }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) { perror("socketpair"); return 1; }
    pid_t child = fork();
    if (child == 0) {
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
            int nr = seccomp_syscall_resolve_name(calls[i]);
            if (nr == __NR_SCMP_ERROR) continue;
            // As dgrun: fstat (newfstatat/statx with AT_EMPTY_PATH) carries no path and is not trapped.
            if (strcmp(calls[i], "newfstatat") == 0)
                seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, nr, 1, SCMP_A3(SCMP_CMP_MASKED_EQ, 0x1000, 0));
            else if (strcmp(calls[i], "statx") == 0)
                seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, nr, 1, SCMP_A2(SCMP_CMP_MASKED_EQ, 0x1000, 0));
            else if (strcmp(calls[i], "sendmsg") == 0)  // not the hand-over of the listener itself
                seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, nr, 1, SCMP_A0(SCMP_CMP_NE, (scmp_datum_t)pair[1]));
            else
                seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, nr, 0);
        }
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        int fd;
        // UNOTIFY_FLOOR_STUB=1: the fast path's ceiling. The calls made from dgrun's stub page
        // (DGRUN_FASTTRACE_STUB, mapped by a preload library) pass, the rest trap as above.
        if (getenv("UNOTIFY_FLOOR_STUB")) {
            int mem = memfd_create("bpf", 0);
            if (mem < 0 || seccomp_export_bpf(ctx, mem) != 0) _exit(126);
            off_t size = lseek(mem, 0, SEEK_END);
            static struct dgrun_bpf_insn program[4096];
            int n = dgrun_fasttrace_prefix(program, DGRUN_FASTTRACE_STUB);
            if (size <= 0 || (size_t)size > (4096 - (size_t)n) * 8 || pread(mem, program + n, (size_t)size, 0) != size) _exit(126);
            struct sock_fprog prog = { (unsigned short)(n + size / 8), (struct sock_filter *)program };
            fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
            if (fd < 0) _exit(126);
            close(mem);
        } else {
            if (seccomp_load(ctx) != 0) _exit(126);
            fd = seccomp_notify_fd(ctx);
        }
        char byte = 0;
        struct iovec iov = { &byte, 1 };
        union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
        if (sendmsg(pair[1], &msg, 0) != 1) _exit(126);
        close(fd);
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    close(pair[1]);
    char byte;
    struct iovec iov = { &byte, 1 };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
    if (recvmsg(pair[0], &msg, MSG_CMSG_CLOEXEC) != 1) { fprintf(stderr, "no listener\n"); return 1; }
    int listener;
    memcpy(&listener, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof listener);
    ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
    struct seccomp_notif *req = NULL;
    struct seccomp_notif_resp *resp = NULL;
    if (seccomp_notify_alloc(&req, &resp) != 0) return 1;
    unsigned long answered = 0, by_nr[512] = { 0 };
    int addfd = getenv("UNOTIFY_FLOOR_ADDFD") != NULL;
    for (;;) {
        memset(req, 0, sizeof *req);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) != 0) {
            if (errno == EINTR) continue;
            if (errno == ENOENT) {  // cancelled, or nobody left: then the child is gone
                int status;
                if (waitpid(child, &status, WNOHANG) == child) break;
                continue;
            }
            break;
        }
        if (addfd && req->data.nr == SYS_openat && !(req->data.args[2] & 0x400243)) {
            char path[4096];
            struct iovec local = { path, sizeof path - 1 }, remote = { (void *)(uintptr_t)req->data.args[1], 4096 - (req->data.args[1] & 4095) };
            if (remote.iov_len > local.iov_len) remote.iov_len = local.iov_len;
            ssize_t n = process_vm_readv(req->pid, &local, 1, &remote, 1, 0);
            if (n > 0 && memchr(path, 0, (size_t)n) && path[0] == '/') {
                int flags = (int)req->data.args[2];
                int fd = open(path, flags | O_CLOEXEC, 0);
                if (fd >= 0) {
                    struct seccomp_notif_addfd add = { .id = req->id, .flags = SECCOMP_ADDFD_FLAG_SEND, .srcfd = (__u32)fd,
                                                       .newfd = 0, .newfd_flags = (__u32)(flags & O_CLOEXEC) };
                    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add) >= 0) answered++;
                    close(fd);
                } else {
                    memset(resp, 0, sizeof *resp);
                    resp->id = req->id;
                    resp->error = -errno;
                    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp) == 0) answered++;
                }
                if (req->data.nr >= 0 && req->data.nr < 512) by_nr[req->data.nr]++;
                continue;
            }
        }
        memset(resp, 0, sizeof *resp);
        resp->id = req->id;
        resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp) == 0) answered++;
        if (req->data.nr >= 0 && req->data.nr < 512) by_nr[req->data.nr]++;
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (getenv("UNOTIFY_FLOOR_VERBOSE")) {
        fprintf(stderr, "unotify-floor: %lu calls answered\n", answered);
        for (int nr = 0; nr < 512; nr++)
            if (by_nr[nr]) fprintf(stderr, "  %s %lu\n", seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr), by_nr[nr]);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
