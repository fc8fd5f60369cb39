#include <seccomp.h>
#include <stdint.h>
// libseccomp's actions are function-like macros, which Swift does not import.
static inline uint32_t dgrun_act_allow(void) { return SCMP_ACT_ALLOW; }
static inline uint32_t dgrun_act_errno(uint16_t e) { return SCMP_ACT_ERRNO(e); }
static inline uint32_t dgrun_act_kill_process(void) { return SCMP_ACT_KILL_PROCESS; }
static inline uint32_t dgrun_act_kill_thread(void) { return SCMP_ACT_KILL_THREAD; }
static inline uint32_t dgrun_act_trap(void) { return SCMP_ACT_TRAP; }
static inline uint32_t dgrun_act_log(void) { return SCMP_ACT_LOG; }
static inline uint32_t dgrun_act_trace(uint16_t m) { return SCMP_ACT_TRACE(m); }
static inline uint32_t dgrun_act_notify(void) { return SCMP_ACT_NOTIFY; }
#include <sys/syscall.h>
#include <unistd.h>
// memfd_create needs _GNU_SOURCE in glibc's headers; the BPF program is exported through one.
static inline int dgrun_memfd_cloexec(void) { return (int)syscall(SYS_memfd_create, "dgrun-bpf", 1u); }
