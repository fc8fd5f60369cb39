// The discover tracer: a seccomp user-notification supervisor in dgrun (the parent).
// The command installs the notify filter right before exec and hands the listener fd to dgrun over
// a socketpair (SCM_RIGHTS); dgrun's wait loop calls dgrun_trace_handle for each notification.
#ifndef DGRUN_TRACE_H
#define DGRUN_TRACE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum dgrun_trace_kind {
    DGRUN_TRACE_OPEN = 1,     // open, openat, openat2, creat: flags = open flags
    DGRUN_TRACE_EXEC = 2,     // execve, execveat
    DGRUN_TRACE_LOOKUP = 3,   // stat family, access, readlink: no change to the file
    DGRUN_TRACE_MODIFY = 4,   // mkdir, unlink, rmdir, rename, link, symlink, truncate (path2: the new name)
    DGRUN_TRACE_CONNECT = 5,  // connect, sendto, sendmsg: addr = the sockaddr, data = first bytes sent,
                              // flags = the socket's type (SOCK_STREAM 1, SOCK_DGRAM 2; 0 unknown);
                              // a unix socket's pathname is also the event's path, resolved
    DGRUN_TRACE_BIND = 6,     // bind, listen (addr: the bound address, as getsockname gives it): as connect
};

// One event in the log: this header, then path, path2, addr, data bytes (lengths below).
// For a file call, data is empty or the 32-byte sha256 of the content the call is about to
// replace, when the task had read that file earlier: path2 for a rename, path otherwise.
struct dgrun_trace_event {
    int32_t kind;
    int32_t nr;          // syscall number
    int32_t pid;         // in dgrun's pid namespace
    int32_t exists;      // the path existed when the call was made (before it ran)
    int64_t flags;
    uint64_t seq;        // the order the calls were received in (the log is in the order handled)
    int32_t path_len, path2_len, addr_len, data_len;
};

struct dgrun_trace_log {
    uint8_t *bytes;
    size_t length, capacity;
    uint64_t notifications;
    uint64_t lost;       // targets that died before they could be read
    uint64_t busy_us;    // CPU time the serving threads used (answering, resolving, logging)
    uint64_t fast;       // of the notifications, the calls the fast path recorded without a trap
    void *state;         // the run's resolution caches (tracer.c), freed with the log
};

// The BPF program is built by the parent (libseccomp); these are the syscalls it must cover.
int dgrun_traced_syscall_count(void);
int dgrun_traced_syscall(int index);
// The name of a traced syscall number, NULL for any other.
const char *dgrun_traced_syscall_name(int nr);

// Receive the listener fd sent by the command. Returns the fd or -errno.
int dgrun_trace_receive_listener(int socket_fd);
// Handle one pending notification (blocks until there is one); 0, 1 when every traced process
// is gone, or -errno on a broken listener. Safe to call from several threads at once.
int dgrun_trace_handle(int listener, struct dgrun_trace_log *log);

// Threads serving one listener until stopped: a traced process waits in its call until it is
// answered, so with several processes one supervisor would be a queue.
#define DGRUN_TRACER_MAX_THREADS 8
struct dgrun_tracer {
    int listener;            // owned: closed by stop (or by the last thread, if all failed)
    struct dgrun_trace_log *log;
    int threads;
    int stop;
    int running;
    int error;               // the first -errno a thread stopped on, or 0
    int finished[DGRUN_TRACER_MAX_THREADS];
    pthread_t thread[DGRUN_TRACER_MAX_THREADS];
    int draining;            // the fast path's ring has a drainer thread
    pthread_t drainer;
};
// 0 once at least one thread serves; -errno when none could start (the caller still owns the
// listener then).
int dgrun_tracer_start(struct dgrun_tracer *t, int listener, struct dgrun_trace_log *log, int threads);
// Stops and joins the threads, closes the listener; the first error a thread stopped on, or 0.
int dgrun_tracer_stop(struct dgrun_tracer *t);
void dgrun_trace_log_free(struct dgrun_trace_log *log);

// The fast path (dgrun_fasttrace.h): a shared ring for this run's log, made before the spawn.
// Returns its memfd (close-on-exec; the child clears that for the command) or -errno; the log
// keeps the mapping. After the run, _finish logs what is left in it.
int dgrun_fasttrace_ring(struct dgrun_trace_log *log);
void dgrun_fasttrace_finish(struct dgrun_trace_log *log);

#endif
