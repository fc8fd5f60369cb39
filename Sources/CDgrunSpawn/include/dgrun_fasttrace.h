// The tracer's fast path (preload/dgrun_preload.c): a library preloaded into the traced task makes
// libc's read-only file calls itself, from one stub page at a fixed address that the notify filter
// lets through, and records each into this shared ring; the supervisor drains it into the same log
// as the trapped calls. What bypasses the library (the loader, static binaries, raw syscalls, a
// full ring) still traps, so nothing is missed.
#ifndef DGRUN_FASTTRACE_H
#define DGRUN_FASTTRACE_H

#include <stdint.h>

// Where the library maps its stub (dgrun chooses it and passes it in DGRUN_FASTTRACE; the notify
// filter allows the calls whose instruction pointer is in this page). Far from where PIE
// executables, the heap, mmap and the stack land on x86-64.
#define DGRUN_FASTTRACE_STUB 0x1dc000000000ULL
#define DGRUN_FASTTRACE_ENV "DGRUN_FASTTRACE"   // "STUB_HEX:RING_FD"

#define DGRUN_RING_MAGIC 0x31676e6972746764ULL  // "dgtring1"
#define DGRUN_RING_SLOTS 4096                   // a power of two
#define DGRUN_RING_SLOT_SIZE 1024
#define DGRUN_RING_HEADER 4096
#define DGRUN_RING_BYTES (DGRUN_RING_HEADER + (uint64_t)DGRUN_RING_SLOTS * DGRUN_RING_SLOT_SIZE)
#define DGRUN_RING_WAKE_EVERY 64                // the library wakes the drainer every this many records

struct dgrun_ring_record {
    uint64_t commit;     // slot index + 1 once the record is complete (release store, last)
    int32_t nr;          // the syscall made
    int32_t pid;         // getpid() in the sandbox's pid namespace
    int64_t flags;       // as the trapped event's flags
    int32_t result;      // the call's return value, -errno on failure
    int16_t kind;        // enum dgrun_trace_kind
    int16_t follow;      // the last component was followed
    uint32_t path_len;   // bytes of path (absolute, made so in the process), no NUL
    uint32_t reserved;
    char path[DGRUN_RING_SLOT_SIZE - 40];
};

struct dgrun_ring {
    uint64_t magic;
    uint32_t slots;
    uint32_t slot_size;
    uint64_t head __attribute__((aligned(64)));   // slots reserved by writers (CAS)
    uint64_t tail __attribute__((aligned(64)));   // slots consumed by the supervisor
    uint32_t wake __attribute__((aligned(64)));   // futex word the drainer waits on
};

// The notify filter's first instructions: a call made from the stub page is allowed when it is one
// the library makes (read-only open, stat family, access, readlink); anything else, from anywhere,
// goes on to the filter that follows (libseccomp cannot compare the instruction pointer). The
// instructions are struct sock_filter (code, jt, jf, k); returns how many were written (20).
struct dgrun_bpf_insn { uint16_t code; uint8_t jt, jf; uint32_t k; };
#define DGRUN_FASTTRACE_PREFIX_LEN 20
static inline int dgrun_fasttrace_prefix(struct dgrun_bpf_insn *p, uint64_t stub) {
    enum { LD = 0x20, JEQ = 0x15, JSET = 0x45, AND = 0x54, RET = 0x06, JA = 0x05, END = 20, ALLOW = 19, OPENAT = 17 };
    // x86-64 numbers: newfstatat, statx, access, faccessat, faccessat2, readlink, readlinkat.
    static const uint32_t lookups[7] = { 262, 332, 21, 269, 439, 89, 267 };
    int n = 0;
    p[n++] = (struct dgrun_bpf_insn){ LD, 0, 0, 4 };                      // arch
    p[n] = (struct dgrun_bpf_insn){ JEQ, 0, (uint8_t)(END - n - 1), 0xc000003eU }; n++;  // AUDIT_ARCH_X86_64
    p[n++] = (struct dgrun_bpf_insn){ LD, 0, 0, 12 };                     // instruction_pointer, high half
    p[n] = (struct dgrun_bpf_insn){ JEQ, 0, (uint8_t)(END - n - 1), (uint32_t)(stub >> 32) }; n++;
    p[n++] = (struct dgrun_bpf_insn){ LD, 0, 0, 8 };                      // low half, its page
    p[n++] = (struct dgrun_bpf_insn){ AND, 0, 0, 0xfffff000U };
    p[n] = (struct dgrun_bpf_insn){ JEQ, 0, (uint8_t)(END - n - 1), (uint32_t)stub & 0xfffff000U }; n++;
    p[n++] = (struct dgrun_bpf_insn){ LD, 0, 0, 0 };                      // nr
    p[n] = (struct dgrun_bpf_insn){ JEQ, (uint8_t)(OPENAT - n - 1), 0, 257 }; n++;  // openat
    for (int i = 0; i < 7; i++) { p[n] = (struct dgrun_bpf_insn){ JEQ, (uint8_t)(ALLOW - n - 1), 0, lookups[i] }; n++; }
    p[n] = (struct dgrun_bpf_insn){ JA, 0, 0, (uint32_t)(END - n - 1) }; n++;
    p[n++] = (struct dgrun_bpf_insn){ LD, 0, 0, 32 };                     // openat's flags (args[2], low half)
    // O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | __O_TMPFILE: a write traps even from the stub.
    p[n] = (struct dgrun_bpf_insn){ JSET, (uint8_t)(END - n - 1), 0, 0x400243U }; n++;
    p[n++] = (struct dgrun_bpf_insn){ RET, 0, 0, 0x7fff0000U };           // SECCOMP_RET_ALLOW
    return n;
}

#endif
