import Testing

/// The seccomp profiles, checked with raw syscalls from python3's ctypes.
@Suite(.enabled(if: Harness.hasCommand("python3"), "needs python3 to issue raw syscalls"))
struct SeccompTests {
    // x86_64 numbers: the kernel-level calls Docker's default denies, and io_uring.
    static let denied: [(String, Int)] = [
        ("mount", 165), ("reboot", 169), ("init_module", 175), ("kexec_load", 246), ("keyctl", 250),
        ("perf_event_open", 298), ("open_by_handle_at", 304), ("bpf", 321), ("io_uring_setup", 425),
    ]

    static func probe(_ calls: [(String, Int)]) -> String {
        let list = calls.map { "(\"\($0.0)\", \($0.1))" }.joined(separator: ", ")
        return """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        for name, nr in [\(list)]:
            ctypes.set_errno(0)
            r = libc.syscall(nr, 0, 0, 0, 0, 0)
            print(name, r, ctypes.get_errno())
        """
    }

    @Test func defaultProfileDeniesKernelLevelCallsWithEPERM() {
        let r = Harness.dgrun(["exec", "--", "python3", "-c", Self.probe(Self.denied)])
        #expect(r.status == 0, "\(r.stderr)")
        for (name, _) in Self.denied {
            #expect(r.stdout.contains("\(name) -1 1\n"), "\(name) must fail with EPERM: \(r.stdout)")
        }
    }

    @Test func theFilterIsWhatDeniesIoUring() {
        // Without the filter, io_uring_setup(0, NULL) fails with another errno (EFAULT/EINVAL).
        let r = Harness.dgrun(["exec", "--seccomp", "unconfined", "--", "python3", "-c", Self.probe([("io_uring_setup", 425)])])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!r.stdout.contains("io_uring_setup -1 1\n"), "\(r.stdout)")
    }

    @Test func defaultProfileKeepsWhatToolsNeed() {
        // ptrace (sanitizers, debuggers), unshare of a user namespace (nested sandboxes), threads.
        let r = Harness.dgrun(["exec", "--", "python3", "-c", """
            import ctypes, os, threading
            libc = ctypes.CDLL(None, use_errno=True)
            pid = os.fork()
            if pid == 0:
                os._exit(0 if libc.ptrace(0, 0, 0, 0) == 0 else 1)
            _, status = os.waitpid(pid, 0)
            print("ptrace", os.WEXITSTATUS(status))
            t = threading.Thread(target=lambda: None); t.start(); t.join(); print("threads ok")
            """])
        #expect(r.stdout == "ptrace 0\nthreads ok\n", "\(r.stdout) \(r.stderr)")
    }

    @Test func strictProfileDeniesNamespacesAndNetworkButRunsTools() {
        let r = Harness.dgrun(["exec", "--profile", "strict", "--", "python3", "-c", """
            import ctypes, subprocess
            libc = ctypes.CDLL(None, use_errno=True)
            print("unshare", libc.unshare(0x10000000), ctypes.get_errno())
            print(subprocess.run(["sh", "-c", "ls / >/dev/null && echo tools ok"], capture_output=True, text=True).stdout.strip())
            print(open("/proc/net/dev").read().count(":"))
            """])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "unshare -1 1\ntools ok\n1\n", "\(r.stdout)")
    }
}
