// The seccomp user-notification supervisor of `dgrun discover` (runs in dgrun, not in the child).
// For every traced call: read its path arguments from the target's memory, resolve the path inside
// the target's root and note whether it exists *before* the call runs, then let the call continue
// unchanged. A successful answer proves the target was still waiting, so what was read was its.
// Several threads serve one listener (each notification goes to one of them): a task with many
// processes would otherwise queue on one supervisor.
#define _GNU_SOURCE
#include "dgrun_spawn.h"
#include "dgrun_trace.h"
#include "dgrun_hash.h"
#include "dgrun_fasttrace.h"

#include <linux/futex.h>
#include <sys/mman.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

// The traced syscalls, numbers from the kernel headers and names for the graph's evidence: the one
// table of them (the BPF program, the handler and the Swift side all read it).
#define DG_SYSCALL(name) { SYS_##name, #name }
static const struct { int nr; const char *name; } traced[] = {
    DG_SYSCALL(open), DG_SYSCALL(openat), DG_SYSCALL(openat2), DG_SYSCALL(creat), DG_SYSCALL(execve),
    DG_SYSCALL(execveat), DG_SYSCALL(stat), DG_SYSCALL(lstat), DG_SYSCALL(newfstatat), DG_SYSCALL(statx),
    DG_SYSCALL(access), DG_SYSCALL(faccessat), DG_SYSCALL(faccessat2), DG_SYSCALL(readlink),
    DG_SYSCALL(readlinkat), DG_SYSCALL(mkdir), DG_SYSCALL(mkdirat), DG_SYSCALL(unlink), DG_SYSCALL(unlinkat),
    DG_SYSCALL(rmdir), DG_SYSCALL(rename), DG_SYSCALL(renameat), DG_SYSCALL(renameat2), DG_SYSCALL(link),
    DG_SYSCALL(linkat), DG_SYSCALL(symlink), DG_SYSCALL(symlinkat), DG_SYSCALL(truncate), DG_SYSCALL(chdir),
    DG_SYSCALL(connect), DG_SYSCALL(bind), DG_SYSCALL(listen), DG_SYSCALL(sendto), DG_SYSCALL(sendmsg),
};
int dgrun_traced_syscall_count(void) { return (int)(sizeof traced / sizeof traced[0]); }
int dgrun_traced_syscall(int index) { return traced[index].nr; }
const char *dgrun_traced_syscall_name(int nr) {
    for (size_t i = 0; i < sizeof traced / sizeof traced[0]; i++)
        if (traced[i].nr == nr) return traced[i].name;
    return NULL;
}

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

int dgrun_trace_receive_listener(int socket_fd) {
    char byte;
    int fd = -1, n = 0;
    long r = dgrun_recv_fds(socket_fd, &byte, 1, &fd, 1, &n);
    if (r < 0) return (int)r;
    if (r == 0 || n != 1) return -EPROTO;
    // Linux 6.6+: wake the tracer and the traced process on the current CPU. Each traced call is
    // two wake-ups, and across CPUs (worse in a VM) they are most of its cost. Older kernels say
    // EINVAL and keep the ordinary wake-ups.
    ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
    return fd;
}

// A NUL-terminated string from the target, page by page (a string may end just before an
// unmapped page). Returns its length, or -1.
static ssize_t read_string(pid_t pid, uint64_t address, char *out, size_t cap) {
    if (!address) return -1;
    size_t got = 0;
    while (got + 1 < cap) {
        uint64_t at = address + got;
        size_t chunk = 4096 - (at & 4095);
        if (chunk > cap - 1 - got) chunk = cap - 1 - got;
        struct iovec local = { out + got, chunk }, remote = { (void *)(uintptr_t)at, chunk };
        ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (n <= 0) return got ? (ssize_t)got : -1;
        void *nul = memchr(out + got, 0, (size_t)n);
        if (nul) return (char *)nul - out;
        got += (size_t)n;
    }
    out[got] = 0;
    return (ssize_t)got;
}

static ssize_t read_bytes(pid_t pid, uint64_t address, void *out, size_t length) {
    if (!address || !length) return 0;
    struct iovec local = { out, length }, remote = { (void *)(uintptr_t)address, length };
    return process_vm_readv(pid, &local, 1, &remote, 1, 0);
}

// Makes `path` absolute as the target sees it: relative to its cwd, or to the directory fd.
static void absolute(pid_t pid, int dirfd, const char *path, char *out, size_t cap) {
    if (path[0] == '/') {
        snprintf(out, cap, "%s", path);
        return;
    }
    char link[64], base[4096];
    if (dirfd == AT_FDCWD) snprintf(link, sizeof link, "/proc/%d/cwd", pid);
    else snprintf(link, sizeof link, "/proc/%d/fd/%d", pid, dirfd);
    ssize_t n = readlink(link, base, sizeof base - 1);
    if (n < 0) n = 0;
    base[n] = 0;
    if (path[0] == 0) snprintf(out, cap, "%s", base);
    else snprintf(out, cap, "%s/%s", strcmp(base, "/") == 0 ? "" : base, path);
}

// SOCK_STREAM, SOCK_DGRAM... of the target's socket `fd`, or 0 when it cannot be read: the
// address alone does not tell TCP from UDP. The target is still waiting in the call, so its fd
// still names that socket; pidfd_getfd (Linux 5.6) lends it to us for one getsockopt.
// The type (SOCK_STREAM 1, SOCK_DGRAM 2; 0 unknown) of the target's socket `fd`, read from a
// copy of it; with `name`, also the address it is bound to (what listen() serves, ephemeral port
// included), its length in *name_len.
static int64_t socket_info(pid_t pid, int fd, uint8_t *name, int32_t *name_len) {
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) return 0;
    int local = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
    close(pidfd);
    if (local < 0) return 0;
    int type = 0;
    socklen_t size = sizeof type;
    if (getsockopt(local, SOL_SOCKET, SO_TYPE, &type, &size) != 0) type = 0;
    if (name) {
        socklen_t length = 128;
        *name_len = getsockname(local, (struct sockaddr *)name, &length) == 0 ? (int32_t)(length < 128 ? length : 128) : 0;
    }
    close(local);
    return type;
}

// One run's tracer state: the sandbox's root, the resolution caches, the files it read. Several
// traced sandboxes may run in one dgrun (a workspace's tasks on their threads), so each run has
// its own, hung on its log; a serving thread points `dg_st` at its run's before it handles a call.
#define DIRS_SLOTS 1024
#define DIRS_MAX 256
struct dir_entry { uint64_t hash; char *path; char *canonical; int fd; };  // fd -1: no such directory
struct cache_entry {
    uint64_t hash; char *path; char *canonical; int exists; int follow;
    int32_t recorded[6]; int n_recorded;  // syscalls already logged for this path: not again
    uint64_t generation;                  // live only while it is the cache's (see cache_clear)
    size_t canonical_len;
};
// Strings copied one after another into chunks, freed all at once: the resolution cache's
// live until its next clear, the read paths' for the whole run. A strdup and a free each
// (and malloc's trims of the drainer's heap, with their TLB shootdowns) were a fifth of what a
// ring record cost the drainer (perf, a pipeline over /usr/include).
struct arena_chunk { struct arena_chunk *next; size_t size, used; char bytes[]; };
struct arena { struct arena_chunk *head; };
struct path_set { uint64_t *hashes; char **paths; uint8_t *claimed; size_t capacity, count; };
struct dg_trace_state {
    int rootfd;                   // the traced sandbox's root, for this run
    pthread_mutex_t lock;         // guards all of this and the log: shared by the serving threads
    struct dir_entry dirs[DIRS_SLOTS];
    int dir_count;
    uint64_t dirs_generation;
    struct cache_entry *cache;
    size_t cache_capacity, cache_count;
    uint64_t cache_generation;    // bumped by every clear: a resolution that started before is not cached after
    struct path_set read_paths;
    struct arena cache_strings, read_strings;
    struct dgrun_ring *ring;      // the fast path's records (dgrun_fasttrace_ring), NULL: none
    pthread_mutex_t drain_lock;   // one drainer at a time: records are logged in ring order
};
static __thread struct dg_trace_state *dg_st;

static pthread_mutex_t dg_state_alloc = PTHREAD_MUTEX_INITIALIZER;
// The run's state, made on first use (the serving threads of one run race to it).
static struct dg_trace_state *dg_state_of(struct dgrun_trace_log *log) {
    struct dg_trace_state *state = __atomic_load_n((struct dg_trace_state **)&log->state, __ATOMIC_ACQUIRE);
    if (state) return state;
    pthread_mutex_lock(&dg_state_alloc);
    state = log->state;
    if (!state) {
        state = calloc(1, sizeof *state);
        if (state) {
            state->rootfd = -1;
            pthread_mutex_init(&state->lock, NULL);
            pthread_mutex_init(&state->drain_lock, NULL);
            __atomic_store_n((struct dg_trace_state **)&log->state, state, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&dg_state_alloc);
    return state;
}
// The globals of old, now the current run's.
#define rootfd (dg_st->rootfd)
#define state_lock (dg_st->lock)
#define dirs (dg_st->dirs)
#define dir_count (dg_st->dir_count)
#define dirs_generation (dg_st->dirs_generation)
#define cache (dg_st->cache)
#define cache_capacity (dg_st->cache_capacity)
#define cache_count (dg_st->cache_count)
#define cache_generation (dg_st->cache_generation)
#define read_paths (dg_st->read_paths)

static char *arena_copy(struct arena *a, const char *s, size_t n) {
    struct arena_chunk *c = a->head;
    if (!c || c->size - c->used < n + 1) {
        size_t size = n + 1 > (64 << 10) ? n + 1 : (64 << 10);
        c = malloc(sizeof *c + size);
        if (!c) return NULL;
        c->next = a->head;
        c->size = size;
        c->used = 0;
        a->head = c;
    }
    char *copy = c->bytes + c->used;
    memcpy(copy, s, n);
    copy[n] = 0;
    c->used += n + 1;
    return copy;
}

// Every string freed but the newest chunk, which is kept (emptied) for the strings to come.
static void arena_reset(struct arena *a, int keep) {
    struct arena_chunk *c = a->head, *kept = NULL;
    if (keep && c) { kept = c; c = c->next; kept->next = NULL; kept->used = 0; }
    while (c) { struct arena_chunk *next = c->next; free(c); c = next; }
    a->head = kept;
}

// `a` then `b` into `out` as snprintf(out, cap, "%s%s", a, b) would write them; the length written.
static size_t copy_joined(char *out, size_t cap, const char *a, size_t na, const char *b, size_t nb) {
    if (cap == 0) return 0;
    if (na > cap - 1) na = cap - 1;
    memcpy(out, a, na);
    if (nb > cap - 1 - na) nb = cap - 1 - na;
    memcpy(out + na, b, nb);
    out[na + nb] = 0;
    return na + nb;
}

// Every process of the sandbox shares one root (chroot is denied by the profiles), so the
// first one's is kept open for the whole run (until the log is freed): two syscalls fewer.
static int sandbox_root(pid_t pid) {
    int root_fd = __atomic_load_n(&rootfd, __ATOMIC_ACQUIRE);
    if (root_fd >= 0) return root_fd;
    if (pid <= 0) return -1;  // a fast-path record before any trap: no process of ours to ask
    char root[64];
    snprintf(root, sizeof root, "/proc/%d/root", pid);
    pthread_mutex_lock(&state_lock);
    if (rootfd < 0) __atomic_store_n(&rootfd, open(root, O_PATH | O_DIRECTORY | O_CLOEXEC), __ATOMIC_RELEASE);
    root_fd = rootfd;
    pthread_mutex_unlock(&state_lock);
    return root_fd;
}

// `path` opened as the sandbox sees it, or -1 with errno.
static int open_in_root(int root_fd, const char *path, uint64_t flags) {
    struct open_how how = { 0 };
    how.flags = flags;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    // With RESOLVE_IN_ROOT, a ".." fails with EAGAIN when any rename or mount happened on the
    // system during the walk (another sandbox starting is enough): retry, it is not an absence.
    int fd = -1;
    for (int attempt = 0; attempt < 64; attempt++) {
        fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
        if (fd >= 0 || errno != EAGAIN) break;
    }
    return fd;
}

// The canonical path of what `fd` refers to; 1, or 0 when it cannot be read.
static int fd_path(int fd, char *canonical, size_t cap) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, canonical, cap - 1);
    if (n <= 0) return 0;
    canonical[n] = 0;
    return 1;
}

// Directories already resolved, each with an O_PATH fd: a new file in a known directory is then
// one fstatat of its name, where a whole resolution is openat2, readlink and close (a task
// reading thousands of headers from a few hundred directories). Cleared by any call that can
// make, remove or rename a directory; at most `DIRS_MAX` fds are held.

static void dirs_clear(void) {  // under state_lock
    for (int i = 0; i < DIRS_SLOTS; i++) {
        if (!dirs[i].hash) continue;
        if (dirs[i].fd >= 0) close(dirs[i].fd);
        free(dirs[i].path);
        free(dirs[i].canonical);
    }
    memset(dirs, 0, sizeof dirs);
    dir_count = 0;
    dirs_generation++;
}

static struct dir_entry *dirs_find(const char *path, uint64_t h) {  // under state_lock
    for (int i = (int)(h & (DIRS_SLOTS - 1));; i = (i + 1) & (DIRS_SLOTS - 1)) {
        if (!dirs[i].hash) return NULL;
        if (dirs[i].hash == h && strcmp(dirs[i].path, path) == 0) return &dirs[i];
    }
}

// Takes `fd`; NULL (and `fd` closed) when it cannot be kept.
static struct dir_entry *dirs_put(const char *path, uint64_t h, int fd, const char *canonical) {  // under state_lock
    if (dir_count >= DIRS_MAX) dirs_clear();
    char *p = strdup(path), *c = strdup(canonical);
    if (!p || !c) { free(p); free(c); if (fd >= 0) close(fd); return NULL; }
    int i = (int)(h & (DIRS_SLOTS - 1));
    while (dirs[i].hash) i = (i + 1) & (DIRS_SLOTS - 1);
    dirs[i] = (struct dir_entry){ h, p, c, fd };
    dir_count++;
    return &dirs[i];
}

static uint64_t hash_path(const char *s, int follow);

// The fast path of `resolve`: 1 or 0 as it does, or -1 when this path needs the whole
// resolution (a symlink to follow, "." or ".." in it, anything unusual).
static int resolve_in_directory(int root_fd, const char *path, int follow, char *canonical, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (path[0] != '/' || !slash || slash == path || !slash[1] || strstr(path, "/.") || strstr(path, "//")) return -1;
    size_t length = (size_t)(slash - path);
    char parent[4096];
    if (length >= sizeof parent) return -1;
    memcpy(parent, path, length);
    parent[length] = 0;
    const char *name = slash + 1;
    uint64_t h = hash_path(parent, 7);
    pthread_mutex_lock(&state_lock);
    struct dir_entry *d = dirs_find(parent, h);
    if (!d) {
        uint64_t generation = dirs_generation;
        pthread_mutex_unlock(&state_lock);
        char resolved[4096] = "";
        int fd = open_in_root(root_fd, parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 && errno != ENOENT && errno != ENOTDIR) return -1;
        if (fd >= 0 && !fd_path(fd, resolved, sizeof resolved)) { close(fd); return -1; }
        pthread_mutex_lock(&state_lock);
        // A directory made or renamed meanwhile: this answer may be stale, resolve the long way.
        if (generation != dirs_generation || !(d = dirs_put(parent, h, fd, resolved))) {
            pthread_mutex_unlock(&state_lock);
            if (generation != dirs_generation && fd >= 0) close(fd);
            return -1;
        }
    }
    int result;
    struct stat st;
    if (d->fd < 0) {
        result = 0;
    } else if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        result = errno == ENOENT || errno == ENOTDIR ? 0 : -1;
    } else if (S_ISLNK(st.st_mode) && follow) {
        result = -1;
    } else {
        result = 1;
        const char *base = strcmp(d->canonical, "/") == 0 ? "" : d->canonical;
        size_t nb = strlen(base);
        size_t n = copy_joined(canonical, cap, base, nb, "/", 1);
        if (n == nb + 1) copy_joined(canonical + n, cap - n, name, strlen(name), "", 0);
    }
    pthread_mutex_unlock(&state_lock);
    return result;
}

// An unlink (not of a directory) whose target is a regular file now, as the call waits: it can
// change no directory's resolution, so the directories resolved stay (a compiler removes its
// temporary files all the time, and each clear cost the tracer an openat2, a readlink and a close
// a directory after it). A task that swaps the file for a link meanwhile only makes the tracer
// keep a directory it could have re-resolved.
static int removes_a_file_only(pid_t pid, int nr, const __u64 *a, const char *full) {
    if (!(nr == SYS_unlink || (nr == SYS_unlinkat && !(a[2] & AT_REMOVEDIR)))) return 0;
    int root_fd = sandbox_root(pid);
    if (root_fd < 0 || strncmp(full, "/proc/", 6) == 0) return 0;
    int fd = open_in_root(root_fd, full, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    int regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    return regular;
}

// Resolves `path` inside the target's root. On success, `canonical` is the path with symlinks
// resolved (follow: the last component too) and 1 is returned; 0 when it does not exist.
static int resolve(pid_t pid, const char *path, int follow, char *canonical, size_t cap) {
    // /proc is full of magic links, and "self" would be dgrun: check the target's own entry and
    // keep the path as the program wrote it.
    if (strncmp(path, "/proc/", 6) == 0) {
        const char *rest = path + 6;
        char host[4096];
        if (strncmp(rest, "self", 4) == 0 && (rest[4] == '/' || rest[4] == 0))
            snprintf(host, sizeof host, "/proc/%d%s", pid, rest + 4);
        else if (strncmp(rest, "thread-self", 11) == 0 && (rest[11] == '/' || rest[11] == 0))
            snprintf(host, sizeof host, "/proc/%d%s", pid, rest + 11);
        else  // numbers are the sandbox's pids: look in its own /proc, through its root
            snprintf(host, sizeof host, "/proc/%d/root%s", pid, path);
        snprintf(canonical, cap, "%s", path);
        return faccessat(AT_FDCWD, host, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
    }
    int root_fd = sandbox_root(pid);
    if (root_fd < 0) return 0;
    int fast = resolve_in_directory(root_fd, path, follow, canonical, cap);
    if (fast >= 0) return fast;
    int fd = open_in_root(root_fd, path, O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0) return 0;
    int found = fd_path(fd, canonical, cap);
    close(fd);
    return found;
}

// Resolutions seen in this run: repeated lookups of one path (loaders, include searches, stat
// loops) are most of what a task does. Any call that can create, remove or rename clears it.

static uint64_t hash_path(const char *s, int follow) {
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)follow;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h ? h : 1;
}

// Every entry of an older generation is dead, and a probe stops at a dead slot as at an empty
// one: entries are only ever added between clears, so a live one is never behind a dead one on
// its probe path. A clear is then a counter, not a walk of the table (a make clears it at every
// file its compilers create), and the dead entries' strings go with their arena.
static void cache_clear(void) {
    cache_count = 0;
    cache_generation++;
    arena_reset(&dg_st->cache_strings, 1);
}

static int cache_live(const struct cache_entry *e) { return e->hash && e->generation == cache_generation; }

static struct cache_entry *cache_find(const char *path, int follow, uint64_t h) {
    if (!cache_capacity) return NULL;
    for (size_t i = h & (cache_capacity - 1);; i = (i + 1) & (cache_capacity - 1)) {
        struct cache_entry *e = &cache[i];
        if (!cache_live(e)) return NULL;
        if (e->hash == h && e->follow == follow && strcmp(e->path, path) == 0) return e;
    }
}

static void cache_put(const char *path, int follow, uint64_t h, int exists, const char *canonical) {
    if ((cache_count + 1) * 2 > cache_capacity) {  // keep it at most half full
        size_t old_capacity = cache_capacity;
        struct cache_entry *old = cache;
        cache_capacity = old_capacity ? old_capacity * 2 : 4096;
        cache = calloc(cache_capacity, sizeof *cache);
        if (!cache) { cache = old; cache_capacity = old_capacity; return; }
        cache_count = 0;
        for (size_t i = 0; i < old_capacity; i++) {
            if (!cache_live(&old[i])) continue;
            size_t j = old[i].hash & (cache_capacity - 1);
            while (cache_live(&cache[j])) j = (j + 1) & (cache_capacity - 1);
            cache[j] = old[i];
            cache_count++;
        }
        free(old);
    }
    size_t canonical_len = strlen(canonical);
    char *p = arena_copy(&dg_st->cache_strings, path, strlen(path));
    char *c = p ? arena_copy(&dg_st->cache_strings, canonical, canonical_len) : NULL;
    if (!p || !c) return;
    size_t j = h & (cache_capacity - 1);
    while (cache_live(&cache[j])) j = (j + 1) & (cache_capacity - 1);
    cache[j] = (struct cache_entry){ h, p, c, exists, follow, { 0 }, 0, cache_generation, canonical_len };
    cache_count++;
}

// *seen: this syscall was already logged for this path since the cache was last cleared.
static int resolve_cached(pid_t pid, const char *path, int follow, int nr, char *canonical, size_t cap, int *seen) {
    uint64_t h = hash_path(path, follow);
    *seen = 0;
    pthread_mutex_lock(&state_lock);
    struct cache_entry *hit = cache_find(path, follow, h);
    if (hit) {
        copy_joined(canonical, cap, hit->canonical, hit->canonical_len, "", 0);
        for (int i = 0; i < hit->n_recorded; i++) if (hit->recorded[i] == nr) *seen = 1;
        if (!*seen && hit->n_recorded < 6) hit->recorded[hit->n_recorded++] = nr;
        int exists = hit->exists;
        pthread_mutex_unlock(&state_lock);
        return exists;
    }
    uint64_t generation = cache_generation;
    pthread_mutex_unlock(&state_lock);
    // Resolved without the lock: the other threads go on meanwhile.
    int exists = resolve(pid, path, follow, canonical, cap);
    // /proc differs per process: never cached.
    if (strncmp(path, "/proc/", 6) != 0) {
        pthread_mutex_lock(&state_lock);
        if (generation == cache_generation && !cache_find(path, follow, h)) {
            cache_put(path, follow, h, exists, exists ? canonical : "");
            struct cache_entry *added = cache_find(path, follow, h);
            if (added) { added->recorded[0] = nr; added->n_recorded = 1; }
        }
        pthread_mutex_unlock(&state_lock);
    }
    return exists;
}

// Files the task opened for reading in this run, as it named them and as resolved (never
// cleared): when one of them is about to be rewritten, truncated, removed or renamed over, its
// content is hashed first, while the writer waits. That is the version the task read; after the
// run only the new content is left.

static void path_set_free(struct path_set *set) {  // its paths are in dg_st->read_strings
    free(set->hashes);
    free(set->paths);
    free(set->claimed);
    memset(set, 0, sizeof *set);
}

static size_t path_set_slot(const struct path_set *set, const char *path, uint64_t h) {
    size_t i = h & (set->capacity - 1);
    while (set->hashes[i] && !(set->hashes[i] == h && strcmp(set->paths[i], path) == 0)) i = (i + 1) & (set->capacity - 1);
    return i;
}

static void path_set_add(struct path_set *set, const char *path) {  // under state_lock
    uint64_t h = hash_path(path, 9);
    if ((set->count + 1) * 2 > set->capacity) {
        struct path_set grown = { 0 };
        grown.capacity = set->capacity ? set->capacity * 2 : 1024;
        grown.hashes = calloc(grown.capacity, sizeof *grown.hashes);
        grown.paths = calloc(grown.capacity, sizeof *grown.paths);
        grown.claimed = calloc(grown.capacity, 1);
        if (!grown.hashes || !grown.paths || !grown.claimed) { path_set_free(&grown); return; }
        for (size_t i = 0; i < set->capacity; i++) {
            if (!set->hashes[i]) continue;
            size_t j = path_set_slot(&grown, set->paths[i], set->hashes[i]);
            grown.hashes[j] = set->hashes[i];
            grown.paths[j] = set->paths[i];
            grown.claimed[j] = set->claimed[i];
            grown.count++;
        }
        free(set->hashes);
        free(set->paths);
        free(set->claimed);
        *set = grown;
    }
    size_t i = path_set_slot(set, path, h);
    if (set->hashes[i]) return;
    char *copy = arena_copy(&dg_st->read_strings, path, strlen(path));
    if (!copy) return;
    set->hashes[i] = h;
    set->paths[i] = copy;
    set->count++;
}

// 1 the first time a path that is in the set is claimed, 0 otherwise.
static int path_set_claim(struct path_set *set, const char *path) {  // under state_lock
    if (!set->capacity) return 0;
    size_t i = path_set_slot(set, path, hash_path(path, 9));
    if (!set->hashes[i] || set->claimed[i]) return 0;
    set->claimed[i] = 1;
    return 1;
}

static int append_locked(struct dgrun_trace_log *log, const struct dgrun_trace_event *e, const char *path,
                         const char *path2, const void *addr, const void *data) {
    size_t need = sizeof *e + (size_t)e->path_len + (size_t)e->path2_len + (size_t)e->addr_len + (size_t)e->data_len;
    if (log->length + need > log->capacity) {
        size_t capacity = log->capacity ? log->capacity * 2 : 1 << 16;
        while (capacity < log->length + need) capacity *= 2;
        uint8_t *bytes = realloc(log->bytes, capacity);
        if (!bytes) return -ENOMEM;
        log->bytes = bytes;
        log->capacity = capacity;
    }
    uint8_t *p = log->bytes + log->length;
    memcpy(p, e, sizeof *e); p += sizeof *e;
    memcpy(p, path, (size_t)e->path_len); p += e->path_len;
    memcpy(p, path2, (size_t)e->path2_len); p += e->path2_len;
    memcpy(p, addr, (size_t)e->addr_len); p += e->addr_len;
    memcpy(p, data, (size_t)e->data_len);
    log->length += need;
    return 0;
}

static int append(struct dgrun_trace_log *log, const struct dgrun_trace_event *e, const char *path,
                  const char *path2, const void *addr, const void *data) {
    pthread_mutex_lock(&state_lock);
    int rc = append_locked(log, e, path, path2, addr, data);
    pthread_mutex_unlock(&state_lock);
    return rc;
}

// The last step of a file call, trapped or from the ring: the path resolved (cached; `exists` >= 0
// when already known), the reads remembered, the event logged unless this call on this path
// already was. `path` is scratch for the logged path.
static void log_file_event(struct dgrun_trace_log *log, struct dgrun_trace_event *e, pid_t pid, const char *full,
                           int follow, int exists, char *path, const char *path2, const void *addr, const void *data,
                           char *canonical) {
    int seen = 0;
    if (exists >= 0) e->exists = exists;
    else e->exists = resolve_cached(pid, full, follow, e->nr, canonical, 4096, &seen);
    const char *logged = e->exists ? canonical : full;
    e->path_len = (int32_t)copy_joined(path, 4096, logged, strlen(logged), "", 0);
    if (e->exists && e->kind == DGRUN_TRACE_OPEN && !(e->flags & (O_WRONLY | O_RDWR | O_TRUNC | O_CREAT))) {
        pthread_mutex_lock(&state_lock);
        path_set_add(&read_paths, full);
        if (strcmp(full, canonical) != 0) path_set_add(&read_paths, canonical);
        pthread_mutex_unlock(&state_lock);
    }
    if (seen) return;  // the same call on the same path: nothing new for the graph
    // Out of memory: the call is counted as lost, and the target was answered all the same.
    if (e->kind && append(log, e, path, path2, addr, data) != 0) __atomic_fetch_add(&log->lost, 1, __ATOMIC_RELAXED);
}

// ---------------------------------------------------------------- the fast path's ring

int dgrun_fasttrace_ring(struct dgrun_trace_log *log) {
    dg_st = dg_state_of(log);
    if (!dg_st) return -ENOMEM;
    if (dg_st->ring) return -EEXIST;
    int fd = (int)syscall(SYS_memfd_create, "dgrun-trace-ring", 1 /* MFD_CLOEXEC */);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)DGRUN_RING_BYTES) != 0) { int e = errno; close(fd); return -e; }
    void *map = mmap(NULL, DGRUN_RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) { int e = errno; close(fd); return -e; }
    struct dgrun_ring *ring = map;
    ring->slots = DGRUN_RING_SLOTS;
    ring->slot_size = DGRUN_RING_SLOT_SIZE;
    __atomic_store_n(&ring->magic, DGRUN_RING_MAGIC, __ATOMIC_RELEASE);
    dg_st->ring = ring;
    return fd;
}

// One record, checked (the task can write anything into the ring) and logged as a trapped call
// would be. The call has run: its result says whether the path existed, the resolution gives the
// canonical path (resolved now: every call that can change what exists traps, and drains the ring
// before it is answered, so what the ring holds is resolved as it was).
static void ring_log(struct dgrun_trace_log *log, const struct dgrun_ring_record *r) {
    if ((r->kind != DGRUN_TRACE_OPEN && r->kind != DGRUN_TRACE_LOOKUP) || r->path_len == 0
        || r->path_len >= sizeof r->path || r->path[0] != '/' || !dgrun_traced_syscall_name(r->nr)) return;
    char full[4096], path[4096], canonical[4096];
    memcpy(full, r->path, r->path_len);
    full[r->path_len] = 0;
    if (strlen(full) != r->path_len) return;
    struct dgrun_trace_event e = { 0 };
    e.kind = r->kind;
    e.nr = r->nr;
    e.pid = r->pid;
    e.flags = r->flags;
    e.seq = __atomic_fetch_add(&log->notifications, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&log->fast, 1, __ATOMIC_RELAXED);
    int seen = 0;
    int resolved = resolve_cached(0, full, r->follow != 0, r->nr, canonical, sizeof canonical, &seen);
    // readlink of what is not a link still names a path that exists.
    int absent = r->result == -ENOENT || r->result == -ENOTDIR;
    int exists = r->result >= 0 || (r->result == -EINVAL && (r->nr == SYS_readlink || r->nr == SYS_readlinkat)) ? 1
        : absent ? 0 : resolved;
    if (exists && !resolved) snprintf(canonical, sizeof canonical, "%s", full);  // gone since: as it was named
    if (seen) {
        // Logged before; a read must still be remembered (hash before a later rewrite).
        if (exists && e.kind == DGRUN_TRACE_OPEN && !(e.flags & (O_WRONLY | O_RDWR | O_TRUNC | O_CREAT))) {
            pthread_mutex_lock(&state_lock);
            path_set_add(&read_paths, full);
            if (resolved && strcmp(full, canonical) != 0) path_set_add(&read_paths, canonical);
            pthread_mutex_unlock(&state_lock);
        }
        return;
    }
    log_file_event(log, &e, 0, full, r->follow != 0, exists, path, "", NULL, NULL, canonical);
}

// Logs what the ring holds, in ring order. `final`: every writer is gone, so a slot reserved and
// never committed (its process died in the call) is skipped instead of waited for.
static void ring_drain(struct dgrun_trace_log *log, int final) {
    struct dgrun_ring *ring = dg_st ? dg_st->ring : NULL;
    if (!ring) return;
    pthread_mutex_lock(&dg_st->drain_lock);
    uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_RELAXED);
    uint64_t head = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
    if (head - tail > DGRUN_RING_SLOTS) head = tail + DGRUN_RING_SLOTS;  // a task that wrote nonsense
    while (tail != head) {
        const struct dgrun_ring_record *slot = (const struct dgrun_ring_record *)
            ((const char *)ring + DGRUN_RING_HEADER + (tail & (DGRUN_RING_SLOTS - 1)) * DGRUN_RING_SLOT_SIZE);
        if (__atomic_load_n(&slot->commit, __ATOMIC_ACQUIRE) != tail + 1) {
            if (!final) break;  // a writer between its reservation and its commit
            __atomic_fetch_add(&log->lost, 1, __ATOMIC_RELAXED);
            __atomic_store_n(&ring->tail, ++tail, __ATOMIC_RELEASE);
            continue;
        }
        struct dgrun_ring_record copy;
        memcpy(&copy, slot, sizeof copy);
        __atomic_store_n(&ring->tail, ++tail, __ATOMIC_RELEASE);  // the slot is the writers' again
        ring_log(log, &copy);
        if (tail == head) head = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
        if (head - tail > DGRUN_RING_SLOTS) head = tail + DGRUN_RING_SLOTS;
    }
    pthread_mutex_unlock(&dg_st->drain_lock);
}

void dgrun_fasttrace_finish(struct dgrun_trace_log *log) {
    dg_st = log->state;
    if (dg_st) ring_drain(log, 1);
}

// Between trapped calls the ring is drained here, woken by the library every
// DGRUN_RING_WAKE_EVERY records or after 5 ms, so that records are resolved close to their call.
static void *drain_loop(void *arg) {
    struct dgrun_tracer *t = arg;
    dg_st = dg_state_of(t->log);
    if (!dg_st || !dg_st->ring) return NULL;
    struct dgrun_ring *ring = dg_st->ring;
    while (!__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
        uint32_t seen = __atomic_load_n(&ring->wake, __ATOMIC_ACQUIRE);
        ring_drain(t->log, 0);
        struct timespec wait = { 0, 5 * 1000 * 1000 };
        syscall(SYS_futex, &ring->wake, FUTEX_WAIT, seen, &wait, NULL, 0);
    }
    struct rusage usage;  // the supervisor's CPU time includes the drainer's
    if (getrusage(RUSAGE_THREAD, &usage) == 0)
        __atomic_fetch_add(&t->log->busy_us, (uint64_t)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000
                           + (uint64_t)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec), __ATOMIC_RELAXED);
    return NULL;
}

static struct seccomp_notif_sizes sizes;
static int sizes_error;
static void read_sizes(void) {
    if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) != 0) sizes_error = errno;
}

int dgrun_trace_handle(int listener, struct dgrun_trace_log *log) {
    static pthread_once_t sizes_once = PTHREAD_ONCE_INIT;
    pthread_once(&sizes_once, read_sizes);
    if (sizes_error) return -sizes_error;
    dg_st = dg_state_of(log);
    if (!dg_st) return -ENOMEM;
    union { struct seccomp_notif n; uint8_t raw[512]; } req;
    union { struct seccomp_notif_resp r; uint8_t raw[512]; } resp;
    if (sizes.seccomp_notif > sizeof req || sizes.seccomp_notif_resp > sizeof resp) return -E2BIG;
    memset(&req, 0, sizeof req);  // the kernel insists on a zeroed buffer
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req.n) != 0) {
        if (errno == EINTR || errno == EAGAIN) return 0;
        if (errno != ENOENT) return -errno;
        // No notification: its process was killed while it waited, or every traced process is
        // gone (the listener hangs up, and the receive no longer waits).
        struct pollfd pfd = { listener, POLLIN, 0 };
        if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP) && !(pfd.revents & POLLIN)) return 1;
        __atomic_fetch_add(&log->lost, 1, __ATOMIC_RELAXED);
        return 0;
    }
    // What the fast path recorded before this call comes first (and must: a call that can
    // rewrite or remove a file hashes what was read, and existence is resolved as of now).
    ring_drain(log, 0);
    // The order calls were received in: one process's calls are sequential, and a call that
    // began after another ended is received after it, whichever thread logs it first.
    uint64_t seq = __atomic_fetch_add(&log->notifications, 1, __ATOMIC_RELAXED);
    const struct seccomp_data *d = &req.n.data;
    pid_t pid = (pid_t)req.n.pid;
    const __u64 *a = d->args;
    struct dgrun_trace_event e = { 0 };
    e.nr = d->nr;
    e.pid = pid;
    e.seq = seq;
    char path[4096], path2[4096], full[4096], canonical[4096];
    uint8_t addr[128], data[512];
    int dirfd = AT_FDCWD, dirfd2 = AT_FDCWD, follow = 1;
    uint64_t p1 = 0, p2 = 0;
    switch (d->nr) {
    case SYS_open: e.kind = DGRUN_TRACE_OPEN; p1 = a[0]; e.flags = (int64_t)a[1]; break;
    case SYS_creat: e.kind = DGRUN_TRACE_OPEN; p1 = a[0]; e.flags = O_CREAT | O_WRONLY | O_TRUNC; break;
    case SYS_openat: e.kind = DGRUN_TRACE_OPEN; dirfd = (int)a[0]; p1 = a[1]; e.flags = (int64_t)a[2]; break;
    case SYS_openat2: {
        e.kind = DGRUN_TRACE_OPEN; dirfd = (int)a[0]; p1 = a[1];
        uint64_t flags = 0;
        read_bytes(pid, a[2], &flags, sizeof flags);
        e.flags = (int64_t)flags;
        break;
    }
    case SYS_execve: e.kind = DGRUN_TRACE_EXEC; p1 = a[0]; break;
    case SYS_execveat: e.kind = DGRUN_TRACE_EXEC; dirfd = (int)a[0]; p1 = a[1]; e.flags = (int64_t)a[4]; break;
    case SYS_stat: case SYS_access: case SYS_chdir: e.kind = DGRUN_TRACE_LOOKUP; p1 = a[0]; break;
    case SYS_lstat: case SYS_readlink: e.kind = DGRUN_TRACE_LOOKUP; p1 = a[0]; follow = 0; break;
    case SYS_newfstatat: e.kind = DGRUN_TRACE_LOOKUP; dirfd = (int)a[0]; p1 = a[1];
        follow = !(a[3] & AT_SYMLINK_NOFOLLOW); e.flags = (int64_t)a[3]; break;
    case SYS_statx: e.kind = DGRUN_TRACE_LOOKUP; dirfd = (int)a[0]; p1 = a[1];
        follow = !(a[2] & AT_SYMLINK_NOFOLLOW); e.flags = (int64_t)a[2]; break;
    case SYS_faccessat: case SYS_faccessat2: e.kind = DGRUN_TRACE_LOOKUP; dirfd = (int)a[0]; p1 = a[1]; break;
    case SYS_readlinkat: e.kind = DGRUN_TRACE_LOOKUP; dirfd = (int)a[0]; p1 = a[1]; follow = 0; break;
    case SYS_mkdir: case SYS_rmdir: case SYS_unlink: case SYS_truncate:
        e.kind = DGRUN_TRACE_MODIFY; p1 = a[0]; follow = 0; break;
    case SYS_mkdirat: case SYS_unlinkat: e.kind = DGRUN_TRACE_MODIFY; dirfd = (int)a[0]; p1 = a[1]; follow = 0; break;
    case SYS_rename: case SYS_link: e.kind = DGRUN_TRACE_MODIFY; p1 = a[0]; p2 = a[1]; follow = 0; break;
    case SYS_renameat: case SYS_renameat2: case SYS_linkat:
        e.kind = DGRUN_TRACE_MODIFY; dirfd = (int)a[0]; p1 = a[1]; dirfd2 = (int)a[2]; p2 = a[3]; follow = 0; break;
    case SYS_symlink: e.kind = DGRUN_TRACE_MODIFY; p1 = a[1]; follow = 0; break;        // the link is created
    case SYS_symlinkat: e.kind = DGRUN_TRACE_MODIFY; dirfd = (int)a[1]; p1 = a[2]; follow = 0; break;
    case SYS_connect: case SYS_bind: {
        e.kind = d->nr == SYS_connect ? DGRUN_TRACE_CONNECT : DGRUN_TRACE_BIND;
        size_t len = a[2] < sizeof addr ? (size_t)a[2] : sizeof addr;
        ssize_t n = read_bytes(pid, a[1], addr, len);
        e.addr_len = n > 0 ? (int32_t)n : 0;
        e.flags = socket_info(pid, (int)a[0], NULL, NULL);
        break;
    }
    case SYS_listen:  // a server: the address it bound, known only now when the port was 0
        e.kind = DGRUN_TRACE_BIND;
        e.flags = socket_info(pid, (int)a[0], addr, &e.addr_len);
        break;
    case SYS_sendto: {
        e.kind = DGRUN_TRACE_CONNECT;
        e.flags = socket_info(pid, (int)a[0], NULL, NULL);
        size_t len = a[5] < sizeof addr ? (size_t)a[5] : sizeof addr;
        ssize_t n = read_bytes(pid, a[4], addr, len);
        e.addr_len = n > 0 ? (int32_t)n : 0;
        size_t dlen = a[2] < sizeof data ? (size_t)a[2] : sizeof data;
        n = read_bytes(pid, a[1], data, dlen);
        e.data_len = n > 0 ? (int32_t)n : 0;
        break;
    }
    case SYS_sendmsg: {
        e.kind = DGRUN_TRACE_CONNECT;
        e.flags = socket_info(pid, (int)a[0], NULL, NULL);
        struct msghdr msg;
        if (read_bytes(pid, a[1], &msg, sizeof msg) == (ssize_t)sizeof msg) {
            size_t len = msg.msg_namelen < sizeof addr ? msg.msg_namelen : sizeof addr;
            ssize_t n = read_bytes(pid, (uint64_t)(uintptr_t)msg.msg_name, addr, len);
            e.addr_len = n > 0 ? (int32_t)n : 0;
            struct iovec first;
            if (msg.msg_iovlen > 0 && read_bytes(pid, (uint64_t)(uintptr_t)msg.msg_iov, &first, sizeof first) == (ssize_t)sizeof first) {
                size_t dlen = first.iov_len < sizeof data ? first.iov_len : sizeof data;
                n = read_bytes(pid, (uint64_t)(uintptr_t)first.iov_base, data, dlen);
                e.data_len = n > 0 ? (int32_t)n : 0;
            }
        }
        break;
    }
    default: break;
    }
    path[0] = path2[0] = 0;
    int have_path = p1 && read_string(pid, p1, path, sizeof path) >= 0;
    if (p2) read_string(pid, p2, path2, sizeof path2);
    // A unix socket with a pathname is a file: resolved against the caller's cwd like one, and
    // whether it existed tells a live service from a probe (glibc tries nscd's socket, and so on).
    int unix_path = (e.kind == DGRUN_TRACE_CONNECT || e.kind == DGRUN_TRACE_BIND) && e.addr_len > 2
        && (addr[0] | addr[1] << 8) == AF_UNIX && addr[2] != 0;
    if (unix_path) {
        size_t n = 0;
        while (n < (size_t)e.addr_len - 2 && n < sizeof path - 1 && addr[2 + n]) { path[n] = (char)addr[2 + n]; n++; }
        path[n] = 0;
        have_path = 1;
    }

    // Relative paths are made absolute while the target still waits (it could chdir or close the
    // directory fd next). Only a call that can create the path must also wait for the existence
    // check; the others run on while the tracer resolves.
    int creates = e.kind == DGRUN_TRACE_MODIFY || e.kind == DGRUN_TRACE_BIND
        || (e.kind == DGRUN_TRACE_OPEN && (e.flags & O_CREAT));
    if (have_path) {
        absolute(pid, dirfd, path, full, sizeof full);
        if (path2[0]) {
            absolute(pid, dirfd2, path2, canonical, sizeof canonical);
            snprintf(path2, sizeof path2, "%s", canonical);
            e.path2_len = (int32_t)strlen(path2);
        }
        if (creates) {
            // Only these can make, remove or rename a directory (O_CREAT and bind make files),
            // and not an unlink of a regular file: no path resolves through one.
            int keep_dirs = e.kind != DGRUN_TRACE_MODIFY || removes_a_file_only(pid, d->nr, a, full);
            pthread_mutex_lock(&state_lock);
            cache_clear();  // what existed may change now
            if (!keep_dirs) dirs_clear();
            pthread_mutex_unlock(&state_lock);
            e.exists = resolve(pid, full, follow, canonical, sizeof canonical);
        }
    }
    // A file read earlier in the run that this call replaces (rename onto it), removes, truncates
    // or opens for writing: hashed now, before it changes. The digest rides in the event's data.
    if (have_path && e.data_len == 0) {
        int replaces = e.nr == SYS_rename || e.nr == SYS_renameat || e.nr == SYS_renameat2;
        int changes = replaces || e.nr == SYS_unlink || e.nr == SYS_unlinkat || e.nr == SYS_truncate
            || (e.kind == DGRUN_TRACE_OPEN && (e.flags & (O_WRONLY | O_RDWR | O_TRUNC)));
        const char *target = replaces ? path2 : full;
        if (changes && target[0]) {
            pthread_mutex_lock(&state_lock);
            int claimed = path_set_claim(&read_paths, target);
            pthread_mutex_unlock(&state_lock);
            int root_fd = claimed ? sandbox_root(pid) : -1;
            // Looked at through O_PATH first: only a regular file is opened (a device or a FIFO
            // could notice being opened). The writer waits while this runs, so past 256 MiB the
            // version read stays unknown rather than stall it for seconds.
            int at = root_fd >= 0 ? open_in_root(root_fd, target, O_PATH | O_CLOEXEC | (e.kind == DGRUN_TRACE_OPEN ? 0 : O_NOFOLLOW)) : -1;
            struct stat st;
            if (at >= 0 && fstat(at, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= (off_t)256 << 20) {
                char link[64];
                snprintf(link, sizeof link, "/proc/self/fd/%d", at);
                int fd = open(link, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
                if (fd >= 0 && dgrun_sha256_fd(fd, data, NULL, NULL) == 0) e.data_len = 32;
                if (fd >= 0) close(fd);
            }
            if (at >= 0) close(at);
        }
    }
    memset(&resp, 0, sizeof resp);
    resp.r.id = req.n.id;
    resp.r.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp.r) != 0) {
        if (errno != ENOENT) return -errno;
        // The target is gone (killed, or its pid could even be reused): what was read is not its.
        __atomic_fetch_add(&log->lost, 1, __ATOMIC_RELAXED);
        return 0;
    }
    if (have_path) log_file_event(log, &e, pid, full, follow, creates ? e.exists : -1, path, path2, addr, data, canonical);
    else if (e.kind && e.addr_len && append(log, &e, path, path2, addr, data) != 0) __atomic_fetch_add(&log->lost, 1, __ATOMIC_RELAXED);
    return 0;
}

// A signal of our own, with a handler that does nothing: it only interrupts a serving thread's
// blocking receive (a semaphore wait the kernel lets signals break) when the run is over.
static int wake_signal(void) { return SIGRTMIN + 5; }
static void on_wake(int signo) { (void)signo; }

struct serving { struct dgrun_tracer *tracer; int index; };

static void close_listener(struct dgrun_tracer *t) {
    int fd = __atomic_exchange_n(&t->listener, -1, __ATOMIC_ACQ_REL);
    if (fd >= 0) close(fd);
}

static void *serve(void *arg) {
    struct dgrun_tracer *t = ((struct serving *)arg)->tracer;
    int index = ((struct serving *)arg)->index;
    free(arg);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, wake_signal());
    pthread_sigmask(SIG_UNBLOCK, &only, NULL);
    int listener = t->listener;
    while (!__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
        int rc = dgrun_trace_handle(listener, t->log);
        if (rc == 1) break;  // nothing left to serve
        if (rc < 0) {
            int none = 0;
            __atomic_compare_exchange_n(&t->error, &none, rc, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
            break;
        }
    }
    struct rusage usage;
    if (getrusage(RUSAGE_THREAD, &usage) == 0) {
        uint64_t us = (uint64_t)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000
            + (uint64_t)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
        __atomic_fetch_add(&t->log->busy_us, us, __ATOMIC_RELAXED);
    }
    // The last thread to give up on a broken listener closes it, so that no traced process
    // waits for an answer that will not come (the kernel then fails their calls with ENOSYS).
    if (__atomic_sub_fetch(&t->running, 1, __ATOMIC_ACQ_REL) == 0 && !__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE))
        close_listener(t);
    __atomic_store_n(&t->finished[index], 1, __ATOMIC_RELEASE);
    return NULL;
}

int dgrun_tracer_start(struct dgrun_tracer *t, int listener, struct dgrun_trace_log *log, int threads) {
    memset(t, 0, sizeof *t);
    t->listener = listener;
    t->log = log;
    if (threads < 1) threads = 1;
    if (threads > DGRUN_TRACER_MAX_THREADS) threads = DGRUN_TRACER_MAX_THREADS;
    struct sigaction action = { 0 };
    action.sa_handler = on_wake;  // no SA_RESTART: the receive must return EINTR
    sigemptyset(&action.sa_mask);
    if (sigaction(wake_signal(), &action, NULL) != 0) return -errno;
    // The threads start with every signal blocked (the caller's are for its signalfd) and
    // unblock only the wake-up.
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    int rc = 0;
    for (int i = 0; i < threads; i++) {
        struct serving *arg = malloc(sizeof *arg);
        if (!arg) { rc = -ENOMEM; break; }
        arg->tracer = t;
        arg->index = i;
        __atomic_add_fetch(&t->running, 1, __ATOMIC_ACQ_REL);
        int err = pthread_create(&t->thread[i], NULL, serve, arg);
        if (err) { __atomic_sub_fetch(&t->running, 1, __ATOMIC_ACQ_REL); free(arg); rc = -err; break; }
        t->threads = i + 1;
    }
    struct dg_trace_state *state = dg_state_of(log);
    if (t->threads > 0 && state && state->ring)
        t->draining = pthread_create(&t->drainer, NULL, drain_loop, t) == 0;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return t->threads > 0 ? 0 : rc;
}

int dgrun_tracer_stop(struct dgrun_tracer *t) {
    __atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < t->threads; i++) {
        // A thread between its check and its receive misses one signal: signal until it is done.
        while (!__atomic_load_n(&t->finished[i], __ATOMIC_ACQUIRE)) {
            pthread_kill(t->thread[i], wake_signal());
            struct timespec pause = { 0, 200 * 1000 };
            nanosleep(&pause, NULL);
        }
        pthread_join(t->thread[i], NULL);
    }
    if (t->draining) {
        struct dg_trace_state *state = t->log->state;
        __atomic_add_fetch(&state->ring->wake, 1, __ATOMIC_RELEASE);
        syscall(SYS_futex, &state->ring->wake, FUTEX_WAKE, 1, NULL, NULL, 0);
        pthread_join(t->drainer, NULL);
        t->draining = 0;
    }
    close_listener(t);
    return t->error;
}

void dgrun_trace_log_free(struct dgrun_trace_log *log) {
    dg_st = log->state;
    if (dg_st) {
        if (rootfd >= 0) close(rootfd);
        dirs_clear();
        path_set_free(&read_paths);
        if (cache) {
            cache_clear();
            free(cache);
        }
        arena_reset(&dg_st->cache_strings, 0);
        arena_reset(&dg_st->read_strings, 0);
        if (dg_st->ring) munmap(dg_st->ring, DGRUN_RING_BYTES);
        pthread_mutex_destroy(&dg_st->drain_lock);
        pthread_mutex_destroy(&dg_st->lock);
        free(dg_st);
        dg_st = NULL;
    }
    free(log->bytes);
    memset(log, 0, sizeof *log);
}
