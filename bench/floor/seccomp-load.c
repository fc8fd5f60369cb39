// What loading a seccomp filter costs, by the program's shape: libseccomp's default chain of
// comparisons against its binary tree (SCMP_FLTATR_CTL_OPTIMIZE 2), for the same deny-list, and a
// one-instruction filter for the kernel's fixed cost. At load, the kernel runs the program for
// every syscall number to find those it always allows (the action cache), so the chain's length
// is paid ~450 times. Each load happens in a fresh child, as a sandbox's command does it.
//   seccomp-load RUNS NAMES-FILE    (NAMES-FILE: syscall names to deny, one per line)
//   prints "shape instructions median-us p25 p75", one line per shape
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// The deny-list's program as libseccomp exports it, at optimisation level `level`.
static int build(const char *names, int level, struct sock_filter *out, int cap) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) return -1;
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    if (level > 1 && seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, level) != 0) { seccomp_release(ctx); return -1; }
    FILE *f = fopen(names, "r");
    if (!f) { perror(names); exit(1); }
    char name[128];
    while (fscanf(f, "%127s", name) == 1) {
        int nr = seccomp_syscall_resolve_name(name);
        if (nr != __NR_SCMP_ERROR) seccomp_rule_add(ctx, SCMP_ACT_ERRNO(1), nr, 0);
    }
    fclose(f);
    int fd = memfd_create("bpf", MFD_CLOEXEC);
    seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    off_t size = lseek(fd, 0, SEEK_END);
    if (size / 8 > cap) { close(fd); return -1; }
    pread(fd, out, (size_t)size, 0);
    close(fd);
    return (int)(size / 8);
}

static void measure(const char *shape, struct sock_filter *prog, int len, int runs) {
    double *us = calloc((size_t)runs, sizeof *us);
    for (int i = 0; i < runs; i++) {
        int p[2];
        if (pipe(p) != 0) { perror("pipe"); exit(1); }
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            struct sock_fprog fprog = { (unsigned short)len, prog };
            long long t0 = now_ns();
            long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog);
            long long d = rc == 0 ? now_ns() - t0 : -1;
            write(p[1], &d, sizeof d);
            _exit(0);
        }
        long long d = -1;
        read(p[0], &d, sizeof d);
        waitpid(pid, NULL, 0);
        close(p[0]);
        close(p[1]);
        if (d < 0) { fprintf(stderr, "seccomp-load: the %s filter did not load\n", shape); exit(1); }
        us[i] = d / 1e3;
    }
    qsort(us, (size_t)runs, sizeof *us, compare);
    printf("%s\t%d\t%.1f\t%.1f\t%.1f\n", shape, len, us[runs / 2], us[runs / 4], us[runs * 3 / 4]);
    free(us);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: seccomp-load RUNS NAMES-FILE\n"); return 2; }
    int runs = atoi(argv[1]);
    if (runs < 1) runs = 1;
    static struct sock_filter chain[4096], tree[4096];
    struct sock_filter allow[1] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
    int chain_len = build(argv[2], 1, chain, 4096);
    int tree_len = build(argv[2], 2, tree, 4096);
    if (chain_len < 0 || tree_len < 0) { fprintf(stderr, "seccomp-load: libseccomp could not build the filters\n"); return 1; }
    measure("one instruction", allow, 1, runs);
    measure("chain (libseccomp default)", chain, chain_len, runs);
    measure("binary tree", tree, tree_len, runs);
    return 0;
}
