import Foundation
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
        let r = Harness.dgrun(["exec", "--", "sh", "-c", "grep '^Seccomp:' /proc/self/status; python3 -c '\(Self.probe(Self.denied))'"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("Seccomp:\t2\n"), "the command runs under a filter: \(r.stdout)")
        for (name, _) in Self.denied {
            #expect(r.stdout.contains("\(name) -1 1\n"), "\(name) must fail with EPERM: \(r.stdout)")
        }
    }

    /// A sandbox without capabilities gets EPERM from most of these calls with no filter at all, so
    /// EPERM alone proves nothing: the default profile's own rules, with their errno changed to one
    /// no kernel path returns for these calls (EHWPOISON, 133), must give that errno for each, and the
    /// control run without a filter must not.
    @Test func eachDeniedCallIsDeniedByTheFilterItself() throws {
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        let original = try String(contentsOfFile: Harness.repositoryRoot + "/profiles/seccomp/default.json", encoding: .utf8)
        // Each ERRNO rule's errno becomes 133 (a key twice in one object is refused, so the old one goes).
        let marked = original.replacingOccurrences(of: "\"errnoRet\": 1,", with: "")
            .replacingOccurrences(of: "\"action\": \"SCMP_ACT_ERRNO\"", with: "\"action\": \"SCMP_ACT_ERRNO\", \"errnoRet\": 133")
        #expect(marked != original)
        try marked.write(toFile: dir + "/marked.json", atomically: true, encoding: .utf8)
        let filtered = Harness.dgrun(["exec", "--seccomp", dir + "/marked.json", "--", "python3", "-c", Self.probe(Self.denied)])
        let control = Harness.dgrun(["exec", "--seccomp", "unconfined", "--", "sh", "-c",
                                     "grep '^Seccomp:' /proc/self/status; python3 -c '\(Self.probe(Self.denied))'"])
        #expect(filtered.status == 0 && control.status == 0, "\(filtered.stderr) \(control.stderr)")
        #expect(control.stdout.hasPrefix("Seccomp:\t0\n"), "\(control.stdout)")
        for (name, _) in Self.denied {
            #expect(filtered.stdout.contains("\(name) -1 133\n"), "\(name): the profile's rule must answer: \(filtered.stdout)")
            #expect(!control.stdout.contains("\(name) -1 133\n"), "\(name): the control run must differ: \(control.stdout)")
        }
    }

    static let userNamespaceProbe = """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print("unshare", libc.unshare(0x10000000), ctypes.get_errno())
        print("clone3", libc.syscall(435, 0, 0), ctypes.get_errno())
        """

    @Test func newUserNamespacesAreDeniedByDefaultAndAllowedByTheNestedProfile() {
        for profile in ["default", "strict"] {
            let denied = Harness.dgrun(["exec", "--profile", profile, "--", "python3", "-c", Self.userNamespaceProbe])
            #expect(denied.stdout == "unshare -1 1\nclone3 -1 38\n", "\(profile): \(denied.stdout) \(denied.stderr)")
        }
        // The control: the same calls succeed (unshare) or fail otherwise (clone3 with a NULL
        // argument: EFAULT or EINVAL) where the profile allows user namespaces.
        let allowed = Harness.dgrun(["exec", "--profile", "nested", "--", "python3", "-c", Self.userNamespaceProbe])
        #expect(allowed.stdout.hasPrefix("unshare 0 0\nclone3 -1 "), "\(allowed.stdout) \(allowed.stderr)")
        #expect(!allowed.stdout.contains("clone3 -1 38"), "\(allowed.stdout)")
        // Threads and processes still start under the denial (glibc falls back from clone3 to clone).
        let tools = Harness.dgrun(["exec", "--", "sh", "-c", "python3 -c 'import threading; t = threading.Thread(target=print, args=(\"thread\",)); t.start(); t.join()' && (true | cat) && echo fork"])
        #expect(tools.stdout == "thread\nfork\n", "\(tools.stdout) \(tools.stderr)")
    }

    @Test func theFilterIsWhatDeniesIoUring() {
        // Without the filter, io_uring_setup(0, NULL) fails with another errno (EFAULT/EINVAL).
        let r = Harness.dgrun(["exec", "--seccomp", "unconfined", "--", "python3", "-c", Self.probe([("io_uring_setup", 425)])])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!r.stdout.contains("io_uring_setup -1 1\n"), "\(r.stdout)")
    }

    @Test func defaultProfileKeepsWhatToolsNeed() {
        // ptrace (sanitizers, debuggers), threads.
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
