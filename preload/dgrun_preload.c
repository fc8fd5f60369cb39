// The fast path of dgrun's tracer, preloaded into a traced task (LD_PRELOAD), in the manner of rr's
// syscall buffering. libc's read-only file calls (open without write/create/truncate, the stat
// family, access, readlink, and fopen/opendir built on them) are made here, from one stub page at
// the address dgrun chose, which the notify filter lets through without a trap; each is recorded
// (path made absolute in this process, the call's result) into a ring shared with dgrun, which
// drains it into the same trace log as the trapped calls. Every call it does not handle (writes,
// creates, execs, network, /proc paths, paths too long for a slot, a full ring, no ring at all)
// is made the ordinary way and traps, so nothing is missed. Pure C, no allocation, no locks
// (signal handlers and threads may call in at any time); x86-64 only.
//   cc -O2 -shared -fPIC -fno-delete-null-pointer-checks -Wno-nonnull-compare -o libdgrun-preload.so dgrun_preload.c
#define _GNU_SOURCE
#include "dgrun_fasttrace.h"
#include "dgrun_trace.h"

#include <dirent.h>
#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/stat.h>

#if !defined(__x86_64__)
#error "the fast path's stub is x86-64 code"
#endif

typedef long (*stub_fn)(long nr, long a, long b, long c, long d, long e);
static stub_fn stub;
static struct dgrun_ring *ring;

// mov rax,rdi; mov rdi,rsi; mov rsi,rdx; mov rdx,rcx; mov r10,r8; mov r8,r9; syscall; ret
static const unsigned char stub_code[] = {
    0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0x48, 0x89, 0xd6, 0x48, 0x89, 0xca,
    0x4d, 0x89, 0xc2, 0x4d, 0x89, 0xc8, 0x0f, 0x05, 0xc3,
};

static void redirect_libc_opens(void);

// Off unless dgrun passed a stub address and a ring this process can map: then every call traps.
__attribute__((constructor)) static void dgrun_preload_init(void) {
    const char *config = getenv(DGRUN_FASTTRACE_ENV);
    if (!config) return;
    char *end;
    unsigned long long address = strtoull(config, &end, 16);
    if (*end != ':' || address != DGRUN_FASTTRACE_STUB) return;
    long fd = strtol(end + 1, &end, 10);
#ifdef DGRUN_PRELOAD_CEILING
    // bench/floor: the stub alone, nothing recorded (what the fast path cannot go below).
    (void)fd;
    void *only = mmap((void *)(uintptr_t)address, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (only != (void *)(uintptr_t)address) return;
    memcpy(only, stub_code, sizeof stub_code);
    if (mprotect(only, 4096, PROT_READ | PROT_EXEC) == 0) stub = (stub_fn)only;
    if (stub) redirect_libc_opens();
    return;
#endif
    if (*end || fd < 0) return;
    void *r = mmap(NULL, DGRUN_RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, (int)fd, 0);
    if (r == MAP_FAILED) return;
    struct dgrun_ring *candidate = r;
    if (candidate->magic != DGRUN_RING_MAGIC || candidate->slots != DGRUN_RING_SLOTS
        || candidate->slot_size != DGRUN_RING_SLOT_SIZE) {
        munmap(r, DGRUN_RING_BYTES);
        return;
    }
    // A page already there (the address is taken in this process): no fast path.
    void *page = mmap((void *)(uintptr_t)address, 4096, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (page != (void *)(uintptr_t)address) {
        if (page != MAP_FAILED) munmap(page, 4096);
        munmap(r, DGRUN_RING_BYTES);
        return;
    }
    memcpy(page, stub_code, sizeof stub_code);
    if (mprotect(page, 4096, PROT_READ | PROT_EXEC) != 0) {
        munmap(page, 4096);
        munmap(r, DGRUN_RING_BYTES);
        return;
    }
    ring = candidate;
    stub = (stub_fn)page;
    redirect_libc_opens();
}

static size_t length_of(const char *s) { size_t n = 0; while (s[n]) n++; return n; }

// `path` as the process sees it, absolute (not normalized: as the trapped tracer does), into
// `out`; its length, or -1 when it cannot be made here (the call then traps instead).
static long absolute(int dirfd, const char *path, char *out, size_t cap) {
    size_t n = length_of(path);
    if (path[0] == '/') {
        if (n >= cap) return -1;
        memcpy(out, path, n + 1);
        return (long)n;
    }
    if (n == 0) return -1;  // AT_EMPTY_PATH and the like: not a lookup by name
    long base;
    if (dirfd == AT_FDCWD) {
        base = syscall(SYS_getcwd, out, cap);  // the length with its NUL
        if (base <= 1 || out[0] != '/') return -1;
        base--;
    } else {
        char link[32] = "/proc/self/fd/";
        size_t at = 14;
        char digits[12];
        int d = 0;
        if (dirfd < 0) return -1;
        for (unsigned v = (unsigned)dirfd; d == 0 || v; v /= 10) digits[d++] = (char)('0' + v % 10);
        while (d) link[at++] = digits[--d];
        link[at] = 0;
        base = stub(SYS_readlinkat, AT_FDCWD, (long)link, (long)out, (long)cap - 1, 0);
        if (base <= 0 || out[0] != '/') return -1;
    }
    if (base == 1) base = 0;  // "/" + "/name" would be "//name"
    if ((size_t)base + 1 + n >= cap) return -1;
    out[base] = '/';
    memcpy(out + base + 1, path, n + 1);
    return base + 1 + (long)n;
}

// A slot reserved, or NULL when the ring is full (or absent).
static struct dgrun_ring_record *reserve(uint64_t *index) {
    uint64_t head = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
    do {
        if (head - __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE) >= DGRUN_RING_SLOTS) return NULL;
    } while (!__atomic_compare_exchange_n(&ring->head, &head, head + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    *index = head;
    return (struct dgrun_ring_record *)((char *)ring + DGRUN_RING_HEADER + (head & (DGRUN_RING_SLOTS - 1)) * DGRUN_RING_SLOT_SIZE);
}

// A record complete: the supervisor may take it. Every DGRUN_RING_WAKE_EVERY records the drainer
// is woken (it also looks every 5 ms).
static void publish(struct dgrun_ring_record *slot, uint64_t index) {
    __atomic_store_n(&slot->commit, index + 1, __ATOMIC_RELEASE);
    if ((index & (DGRUN_RING_WAKE_EVERY - 1)) == DGRUN_RING_WAKE_EVERY - 1) {
        __atomic_add_fetch(&ring->wake, 1, __ATOMIC_RELEASE);
        syscall(SYS_futex, &ring->wake, 1 /* FUTEX_WAKE, shared */, 1, NULL, NULL, 0);
    }
}

// A record of a call made (its path already in the slot, `n` bytes), or an empty one (kind 0,
// skipped by the supervisor) for a call the library leaves to trap; either way published.
static void record(struct dgrun_ring_record *slot, uint64_t index, int kind, long nr, int64_t flags, int follow, long result, long n) {
    slot->nr = (int32_t)nr;
    slot->pid = kind ? (int32_t)syscall(SYS_getpid) : 0;
    slot->flags = flags;
    slot->result = (int32_t)result;
    slot->kind = (int16_t)kind;
    slot->follow = (int16_t)follow;
    slot->path_len = kind ? (uint32_t)n : 0;
    publish(slot, index);
}

static int is_proc(const char *path, long n) {
    return n >= 5 && memcmp(path, "/proc", 5) == 0 && (n == 5 || path[5] == '/');
}

// The call made from the stub and recorded, or made the ordinary way (trapping) when it cannot be.
static long traced(int kind, long nr, int dirfd, const char *path, int follow, int64_t flags,
                   long a, long b, long c, long d, long e) {
    if (!stub || !path) return syscall(nr, a, b, c, d, e);
#ifdef DGRUN_PRELOAD_CEILING
    char scratch[1024];
    if (absolute(dirfd, path, scratch, sizeof scratch) < 0) return syscall(nr, a, b, c, d, e);
    long made = stub(nr, a, b, c, d, e);
    if (made < 0 && made > -4096) { errno = (int)-made; return -1; }
    return made;
#endif
    int saved = errno;
    uint64_t index;
    struct dgrun_ring_record *slot = reserve(&index);
    if (!slot) return syscall(nr, a, b, c, d, e);
    long n = absolute(dirfd, path, slot->path, sizeof slot->path);
    // /proc is per process and its "self" is dgrun's to resolve: those trap.
    if (n < 0 || is_proc(slot->path, n)) {
        record(slot, index, 0, nr, 0, 0, 0, 0);
        errno = saved;
        return syscall(nr, a, b, c, d, e);
    }
    long r = stub(nr, a, b, c, d, e);
    record(slot, index, kind, nr, flags, follow, r, n);
    if (r < 0 && r > -4096) { errno = (int)-r; return -1; }
    errno = saved;
    return r;
}

// The kernel's __O_TMPFILE bit alone (glibc's __O_TMPFILE also has O_DIRECTORY in it).
#define TMPFILE_BIT 020000000
#define WRITES (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | TMPFILE_BIT)

static int open_at(int dirfd, const char *path, int flags, mode_t mode) {
    // Writes keep trapping: the supervisor notes existence and hashes what they replace first.
    if (flags & WRITES) return (int)syscall(SYS_openat, dirfd, path, flags, mode);
    return (int)traced(DGRUN_TRACE_OPEN, SYS_openat, dirfd, path, 1, flags, dirfd, (long)path, flags, mode, 0);
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & TMPFILE_BIT) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    return open_at(AT_FDCWD, path, flags, mode);
}
int open64(const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    return open_at(AT_FDCWD, path, flags, mode);
}
int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    return open_at(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    return open_at(dirfd, path, flags, mode);
}
// _FORTIFY_SOURCE's entry points (no mode: they are never called with O_CREAT).
int __open_2(const char *path, int flags) { return open_at(AT_FDCWD, path, flags, 0); }
int __open64_2(const char *path, int flags) { return open_at(AT_FDCWD, path, flags, 0); }
int __openat_2(int dirfd, const char *path, int flags) { return open_at(dirfd, path, flags, 0); }
int __openat64_2(int dirfd, const char *path, int flags) { return open_at(dirfd, path, flags, 0); }

// libc's own opens call its open functions directly, not through the PLT, so that interposing
// open does not see them and each one traps: setlocale's locale files (a compiler opens 14 of
// them as it starts: 900 of make -j2's 1,533 trapped calls), gettext's catalogs, iconv's modules,
// fopen, opendir and nftw inside libc. As rr does with libc's system call sites, the entry of
// those functions (the exported open64, which libc's internal open is, and __open64_nocancel) is
// made a jump to the open64 above, which makes its calls with system calls of its own, never
// libc's open. Only when it is safe to: a 5-byte relative jump that reaches (this library is
// mapped near libc), no branch in the function that could land inside those 5 bytes (every byte
// offset is read as a possible jump, so a doubt means no patch), and a page that can be made
// writable while it stays executable (not under W^X policies). Anything else leaves libc as it is,
// and its opens trap as before. Done in the constructor, before the program has threads.
static int lands_inside(const unsigned char *code, size_t size, const unsigned char *start, size_t n) {
    for (size_t i = 0; i + 2 <= size; i++) {
        const unsigned char *at = code + i;
        long target = -1;
        if (at[0] == 0xeb || (at[0] >= 0x70 && at[0] <= 0x7f)) target = (long)(i + 2) + (signed char)at[1];
        else if ((at[0] == 0xe9 || at[0] == 0xe8) && i + 5 <= size) target = (long)(i + 5) + *(const int32_t *)(at + 1);
        else if (at[0] == 0x0f && at[1] >= 0x80 && at[1] <= 0x8f && i + 6 <= size) target = (long)(i + 6) + *(const int32_t *)(at + 2);
        if (target > start - code && target < start - code + (long)n) return 1;
    }
    return 0;
}

static int redirect(void *from, void *to) {
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    if (!from || !dladdr1(from, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym || info.dli_saddr != from || sym->st_size < 16)
        return 0;
    unsigned char *code = from, *entry = code;
    if (entry[0] == 0xf3 && entry[1] == 0x0f && entry[2] == 0x1e && entry[3] == 0xfa) entry += 4;  // endbr64 stays
    if (entry[0] == 0xe9 || entry[0] == 0xeb || entry[0] == 0xff || entry[0] == 0xcc) return 0;  // hooked already
    long distance = (long)((unsigned char *)to - (entry + 5));
    if (distance != (long)(int32_t)distance || lands_inside(code, sym->st_size, entry, 5)) return 0;
    uintptr_t first = (uintptr_t)entry & ~(uintptr_t)4095, last = ((uintptr_t)entry + 4) & ~(uintptr_t)4095;
    size_t length = last - first + 4096;
    if (stub(SYS_mprotect, (long)first, (long)length, PROT_READ | PROT_WRITE | PROT_EXEC, 0, 0) != 0) return 0;
    volatile unsigned char *w = entry;
    int32_t rel = (int32_t)distance;
    w[1] = (unsigned char)rel; w[2] = (unsigned char)(rel >> 8); w[3] = (unsigned char)(rel >> 16); w[4] = (unsigned char)(rel >> 24);
    w[0] = 0xe9;
    stub(SYS_mprotect, (long)first, (long)length, PROT_READ | PROT_EXEC, 0, 0);
    return 1;
}

// Where libc's entries jump: this library's own, never a definition of open64 that the program
// itself may export (which would come first in a lookup).
static int libc_open_entry(const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    return open_at(AT_FDCWD, path, flags, mode);
}

static void redirect_libc_opens(void) {
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc) return;
    void *body = dlsym(libc, "open64"), *nocancel = dlvsym(libc, "__open64_nocancel", "GLIBC_PRIVATE");
    if (body) redirect(body, (void *)libc_open_entry);
    if (nocancel && nocancel != body) redirect(nocancel, (void *)libc_open_entry);
    dlclose(libc);
}

// libc's own fopen and opendir open through an internal call that cannot be interposed: a
// read-only fopen and every opendir are opened here and handed to fdopen/fdopendir.
static FILE *fopen_read(const char *path, const char *mode) {
    int plus = 0, cloexec = 0;
    for (const char *m = mode; *m; m++) {
        if (*m == '+') plus = 1;
        if (*m == 'e') cloexec = 1;
    }
    if (mode[0] != 'r' || plus) return NULL;
    int fd = open_at(AT_FDCWD, path, O_RDONLY | (cloexec ? O_CLOEXEC : 0), 0);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, mode);
    if (!f) { int e = errno; close(fd); errno = e; }
    return f;
}
static FILE *(*next_fopen)(const char *, const char *);
FILE *fopen(const char *path, const char *mode) {
    if (stub && path && mode && mode[0] == 'r') {
        int plain = 1;  // "r+" writes; ",ccs=" is fopen's alone (fdopen does not take it)
        for (const char *m = mode; *m; m++) plain &= *m != '+' && *m != ',';
        if (plain) return fopen_read(path, mode);
    }
    // Writes: libc's own (it traps). RTLD_NEXT is found once; fopen64 is the same on x86-64.
    if (!next_fopen) {
        next_fopen = (FILE *(*)(const char *, const char *))dlsym(RTLD_NEXT, "fopen");
        if (!next_fopen) { errno = ENOSYS; return NULL; }
    }
    return next_fopen(path, mode);
}
FILE *fopen64(const char *path, const char *mode) { return fopen(path, mode); }

DIR *opendir(const char *path) {
    int fd = open_at(AT_FDCWD, path, O_RDONLY | O_NONBLOCK | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) return NULL;
    DIR *dir = fdopendir(fd);
    if (!dir) { int e = errno; close(fd); errno = e; }
    return dir;
}

static int stat_at(int dirfd, const char *path, struct stat *st, int flags) {
    if ((flags & AT_EMPTY_PATH) && path && !path[0])  // fstat: no path, not traced
        return (int)syscall(SYS_newfstatat, dirfd, path, st, flags);
    return (int)traced(DGRUN_TRACE_LOOKUP, SYS_newfstatat, dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW), flags,
                       dirfd, (long)path, (long)st, flags, 0);
}
int stat(const char *path, struct stat *st) { return stat_at(AT_FDCWD, path, st, 0); }
int stat64(const char *path, struct stat64 *st) { return stat_at(AT_FDCWD, path, (struct stat *)st, 0); }
int lstat(const char *path, struct stat *st) { return stat_at(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW); }
int lstat64(const char *path, struct stat64 *st) { return stat_at(AT_FDCWD, path, (struct stat *)st, AT_SYMLINK_NOFOLLOW); }
int fstatat(int dirfd, const char *path, struct stat *st, int flags) { return stat_at(dirfd, path, st, flags); }
int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags) { return stat_at(dirfd, path, (struct stat *)st, flags); }
// Binaries built against glibc before 2.33 call these (version 1: the kernel's struct stat on x86-64).
int __xstat(int ver, const char *path, struct stat *st) { (void)ver; return stat_at(AT_FDCWD, path, st, 0); }
int __xstat64(int ver, const char *path, struct stat64 *st) { (void)ver; return stat_at(AT_FDCWD, path, (struct stat *)st, 0); }
int __lxstat(int ver, const char *path, struct stat *st) { (void)ver; return stat_at(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW); }
int __lxstat64(int ver, const char *path, struct stat64 *st) { (void)ver; return stat_at(AT_FDCWD, path, (struct stat *)st, AT_SYMLINK_NOFOLLOW); }
int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags) { (void)ver; return stat_at(dirfd, path, st, flags); }
int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags) { (void)ver; return stat_at(dirfd, path, (struct stat *)st, flags); }

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *out) {
    if ((flags & AT_EMPTY_PATH) && path && !path[0])
        return (int)syscall(SYS_statx, dirfd, path, flags, mask, out);
    return (int)traced(DGRUN_TRACE_LOOKUP, SYS_statx, dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW), flags,
                       dirfd, (long)path, flags, mask, (long)out);
}

int access(const char *path, int mode) {
    return (int)traced(DGRUN_TRACE_LOOKUP, SYS_access, AT_FDCWD, path, 1, 0, (long)path, mode, 0, 0, 0);
}
int faccessat(int dirfd, const char *path, int mode, int flags) {
    // As glibc: faccessat2 only when there are flags.
    if (flags) return (int)traced(DGRUN_TRACE_LOOKUP, SYS_faccessat2, dirfd, path, 1, 0, dirfd, (long)path, mode, flags, 0);
    return (int)traced(DGRUN_TRACE_LOOKUP, SYS_faccessat, dirfd, path, 1, 0, dirfd, (long)path, mode, 0, 0);
}

// euidaccess (make looks for every command along PATH with it): glibc's stats the path from
// inside libc, which traps. The kernel makes the same check with faccessat2 and AT_EACCESS (as
// glibc's own faccessat does); before Linux 5.8 (ENOSYS), libc's.
static int (*next_euidaccess)(const char *, int);
int euidaccess(const char *path, int mode) {
    if (stub) {
        int saved = errno;
        long r = traced(DGRUN_TRACE_LOOKUP, SYS_faccessat2, AT_FDCWD, path, 1, 0, AT_FDCWD, (long)path, mode, AT_EACCESS, 0);
        if (r == 0 || errno != ENOSYS) return (int)r;
        errno = saved;
    }
    if (!next_euidaccess) next_euidaccess = (int (*)(const char *, int))dlsym(RTLD_NEXT, "euidaccess");
    if (!next_euidaccess) { errno = ENOSYS; return -1; }
    return next_euidaccess(path, mode);
}
int eaccess(const char *path, int mode) { return euidaccess(path, mode); }

ssize_t readlink(const char *path, char *buf, size_t size) {
    return traced(DGRUN_TRACE_LOOKUP, SYS_readlink, AT_FDCWD, path, 0, 0, (long)path, (long)buf, (long)size, 0, 0);
}
ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t size) {
    return traced(DGRUN_TRACE_LOOKUP, SYS_readlinkat, dirfd, path, 0, 0, dirfd, (long)path, (long)buf, (long)size, 0);
}

// An exec of a path that is not there fails with ENOENT (or ENOTDIR) before the kernel looks at
// anything else: the library fails it so, after a stat from the stub, recorded as the probe the
// trapped exec would have been. A shell's walk along PATH and execvp's try each directory in turn
// (dash: nine for `sh` here, gcc's driver as many for `as`), and each exec trapped. What exists
// goes on to the exec, which traps as before (the stat is then not recorded: the exec is).
// Returns the errno of a miss, 0 otherwise.
static int exec_misses(const char *path) {
    if (!stub || !ring || !path || !path[0]) return 0;  // no ring: bench/floor's ceiling build
    uint64_t index;
    struct dgrun_ring_record *slot = reserve(&index);
    if (!slot) return 0;
    long n = absolute(AT_FDCWD, path, slot->path, sizeof slot->path);
    long r = 0;
    struct stat st;
    if (n > 0 && !is_proc(slot->path, n)) r = stub(SYS_newfstatat, AT_FDCWD, (long)path, (long)&st, 0, 0);
    int miss = r == -ENOENT || r == -ENOTDIR;
    record(slot, index, miss ? DGRUN_TRACE_LOOKUP : 0, SYS_newfstatat, 0, 1, r, n);
    return miss ? (int)-r : 0;
}

int execve(const char *path, char *const argv[], char *const envp[]) {
    int miss = exec_misses(path);
    if (miss) { errno = miss; return -1; }
    return (int)syscall(SYS_execve, path, argv, envp);
}

// glibc's execvpe (2.36, posix/execvpe.c), its execs through the execve above: libc's calls its
// own, which cannot be interposed.
static void script_execute(const char *file, char *const argv[], char *const envp[]) {
    int argc = 0;
    while (argv[argc]) argc++;
    char *script[argc > 1 ? argc + 2 : 3];  // the shell, the file, argv[1..], NULL
    script[0] = (char *)"/bin/sh";
    script[1] = (char *)file;
    for (int i = 1; i <= argc; i++) script[i + 1] = argv[i];
    if (argc <= 1) script[2] = NULL;
    execve(script[0], script, envp);
}

int execvpe(const char *file, char *const argv[], char *const envp[]) {
    if (!file || !*file) { errno = ENOENT; return -1; }
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        if (errno == ENOEXEC) script_execute(file, argv, envp);
        return -1;
    }
    const char *path = getenv("PATH");
    if (!path) path = "/bin:/usr/bin";  // confstr(_CS_PATH)
    size_t file_len = strnlen(file, NAME_MAX) + 1;
    size_t path_len = strnlen(path, PATH_MAX - 1) + 1;
    if (file_len > NAME_MAX) { errno = ENAMETOOLONG; return -1; }
    char buffer[path_len + file_len + 1];
    int got_eacces = 0;
    for (const char *p = path, *subp;; p = subp) {
        subp = strchrnul(p, ':');
        if ((size_t)(subp - p) >= path_len) {
            if (*subp == '\0') break;
            continue;
        }
        char *pend = mempcpy(buffer, p, (size_t)(subp - p));
        *pend = '/';
        memcpy(pend + (p < subp), file, file_len);  // an empty entry is the current directory
        execve(buffer, argv, envp);
        if (errno == ENOEXEC) script_execute(buffer, argv, envp);
        switch (errno) {
        case EACCES: got_eacces = 1; /* fallthrough */
        case ENOENT: case ESTALE: case ENOTDIR: case ENODEV: case ETIMEDOUT: break;
        default: return -1;  // found, and it failed otherwise
        }
        if (*subp++ == '\0') break;
    }
    if (got_eacces) errno = EACCES;
    return -1;
}
int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

// realpath: glibc's own walks the path with an internal readlink per component (a compiler's
// include search is thousands of them). The same walk here, each readlink through `traced`, so
// that the same calls are recorded (glibc 2.36's realpath_stk: readlink every prefix, follow
// links, a directory check where a trailing slash or "." needs one). Anything it cannot hold in
// its buffers is left to libc's.
static char *(*next_realpath)(const char *, char *);
static char *libc_realpath(const char *path, char *resolved) {
    if (!next_realpath) next_realpath = (char *(*)(const char *, char *))dlsym(RTLD_NEXT, "realpath");
    if (!next_realpath) { errno = ENOSYS; return NULL; }
    return next_realpath(path, resolved);
}

static int suffix_requires_dir_check(const char *end) {
    while (*end == '/') {
        do end++; while (*end == '/');
        switch (*end++) {
        default: return 0;
        case '\0': return 1;
        case '.': break;
        }
        if (!*end || (*end == '.' && (!end[1] || end[1] == '/'))) return 1;
    }
    return 0;
}

char *realpath(const char *name, char *resolved) {
    if (!stub) return libc_realpath(name, resolved);
    if (!name) { errno = EINVAL; return NULL; }
    if (!name[0]) { errno = ENOENT; return NULL; }
    enum { CAP = 4096 };
    char rname[CAP], work[2][CAP], link[CAP];
    int which = 0, links = 0;
    char *dest;
    if (name[0] != '/') {
        long n = syscall(SYS_getcwd, rname, CAP);
        if (n <= 1 || rname[0] != '/') return libc_realpath(name, resolved);
        dest = rname + n - 1;
    } else {
        rname[0] = '/';
        dest = rname + 1;
    }
    const char *start, *end;
    for (start = end = name; *start; start = end) {
        while (*start == '/') start++;
        for (end = start; *end && *end != '/'; end++) continue;
        size_t len = (size_t)(end - start);
        if (len == 0) break;
        if (len == 1 && start[0] == '.') continue;
        if (len == 2 && start[0] == '.' && start[1] == '.') {
            if (dest > rname + 1) for (--dest; dest > rname && dest[-1] != '/'; --dest) continue;
            continue;
        }
        if (dest[-1] != '/') *dest++ = '/';
        if ((size_t)(dest - rname) + len + 2 >= CAP) return libc_realpath(name, resolved);
        memcpy(dest, start, len);
        dest += len;
        *dest = 0;
        long n = traced(DGRUN_TRACE_LOOKUP, SYS_readlink, AT_FDCWD, rname, 0, 0, (long)rname, (long)link, CAP - 1, 0, 0);
        if (n >= 0) {
            if (++links > 40) { errno = ELOOP; goto error; }
            link[n] = 0;
            size_t rest = length_of(end);
            if ((size_t)n + rest + 1 > CAP) return libc_realpath(name, resolved);
            char *spliced = work[which];
            which ^= 1;
            memcpy(spliced, link, (size_t)n);
            memcpy(spliced + n, end, rest + 1);
            name = end = spliced;
            if (link[0] == '/') dest = rname + 1;
            else if (dest > rname + 1) for (--dest; dest > rname && dest[-1] != '/'; --dest) continue;
        } else {
            int ok;
            if (suffix_requires_dir_check(end)) {
                dest[0] = '/';
                dest[1] = 0;
                ok = traced(DGRUN_TRACE_LOOKUP, SYS_faccessat2, AT_FDCWD, rname, 1, 0, AT_FDCWD, (long)rname, F_OK, AT_EACCESS, 0) == 0;
                dest[0] = 0;
            } else {
                ok = errno == EINVAL;
            }
            if (!ok) goto error;
        }
    }
    if (dest > rname + 1 && dest[-1] == '/') --dest;
    *dest = 0;
    size_t length = (size_t)(dest - rname);
    if (resolved) {
        if (length >= 4096) { errno = ENAMETOOLONG; return NULL; }
        memcpy(resolved, rname, length + 1);
        return resolved;
    }
    char *copy = malloc(length + 1);
    if (!copy) { errno = ENOMEM; return NULL; }
    memcpy(copy, rname, length + 1);
    return copy;
error:;
    int saved = errno;
    if (resolved && (size_t)(dest - rname) < 4096) { *dest = 0; memcpy(resolved, rname, (size_t)(dest - rname) + 1); }
    errno = saved;
    return NULL;
}
char *canonicalize_file_name(const char *name) { return realpath(name, NULL); }
char *__realpath_chk(const char *name, char *resolved, size_t size) { (void)size; return realpath(name, resolved); }
