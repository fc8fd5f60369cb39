import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Namespaces, filesystem view and privileges, against the real kernel.
@Suite struct IsolationTests {
    @Test func commandRunsInItsOwnPidNamespace() {
        let r = Harness.dgrun(["exec", "--", "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.first == "2", "the command is pid 2, under dgrun's init: \(r.stdout)")
        #expect((Int(lines.last ?? "") ?? 99) <= 5, "only the sandbox's own processes are visible: \(r.stdout)")
    }

    @Test func initReapsOrphans() {
        // Orphans re-parent to the sandbox init (pid 1), which must reap them: no zombie remains.
        let r = Harness.dgrun(["exec", "--", "sh", "-c",
                               "for i in 1 2 3 4 5; do (sh -c 'exit 0' &) ; done; sleep 0.5; grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "0\n", "zombies: \(r.stdout)")
    }

    @Test func hostnameIsTheSandboxes() {
        #expect(Harness.dgrun(["exec", "--", "hostname"]).stdout == "dgrun\n")
        #expect(Harness.dgrun(["exec", "--hostname", "build-7", "--", "hostname"]).stdout == "build-7\n")
    }

    @Test func netNoneHasOnlyLoopbackAndCannotReachTheHost() throws {
        let server = try LoopbackListener()
        defer { server.close() }
        let probe = "exec 3<>/dev/tcp/127.0.0.1/\(server.port) && echo connected || echo refused"
        if !Harness.hasCommand("bash") { try Harness.unavailable("", "bash is not installed (its /dev/tcp is the probe)") }
        let isolated = Harness.dgrun(["exec", "--net", "none", "--", "bash", "-c",
                                      "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; " + probe])
        #expect(isolated.status == 0, "\(isolated.stderr)")
        #expect(isolated.stdout.split(separator: "\n") == ["lo", "refused"], "\(isolated.stdout)")
        let shared = Harness.dgrun(["exec", "--net", "host", "--", "bash", "-c", probe])
        #expect(shared.stdout == "connected\n", "\(shared.stdout) \(shared.stderr)")
        // Loopback inside an isolated sandbox works: a server and a client in the same sandbox.
        if Harness.hasCommand("python3") {
            let local = Harness.dgrun(["exec", "--net", "none", "--", "python3", "-c", """
                import socket
                s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
                c = socket.create_connection(s.getsockname()); print("loopback ok")
                """])
            #expect(local.stdout == "loopback ok\n", "\(local.stderr)")
        }
    }

    @Test func hostRootIsReadOnlyAndOnlyAllowedPlacesAreWritable() throws {
        let work = Harness.makeTemporaryDirectory()
        let extraRO = Harness.makeTemporaryDirectory()
        let extraRW = Harness.makeTemporaryDirectory()
        defer { [work, extraRO, extraRW].forEach(Harness.removeTree) }
        let script = """
            touch /usr/dgrun-should-fail 2>/dev/null && echo usr-writable || echo usr-ro
            touch ./in-workdir && echo workdir-ok
            touch /tmp/private && echo tmp-ok
            touch \(extraRO)/x 2>/dev/null && echo ro-writable || echo ro-ok
            touch \(extraRW)/y && echo rw-ok
            """
        let r = Harness.dgrun(["exec", "--ro", extraRO, "--rw", extraRW, "--", "sh", "-c", script], cwd: work)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.split(separator: "\n") == ["usr-ro", "workdir-ok", "tmp-ok", "ro-ok", "rw-ok"])
        #expect(FileManager.default.fileExists(atPath: work + "/in-workdir"))
        #expect(FileManager.default.fileExists(atPath: extraRW + "/y"))
        #expect(!FileManager.default.fileExists(atPath: "/tmp/private"), "/tmp inside is a private tmpfs")
        #expect(!FileManager.default.fileExists(atPath: "/usr/dgrun-should-fail"))
    }

    @Test func bindToAnotherPathAndMissingSources() {
        let src = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(src) }
        _ = FileManager.default.createFile(atPath: src + "/data.txt", contents: Data("hello\n".utf8))
        let r = Harness.dgrun(["exec", "--ro", "\(src):/opt/dgrun-data", "--", "cat", "/opt/dgrun-data/data.txt"])
        // /opt may not have that directory and the root is read-only: dgrun says so, or it works.
        if r.status == 0 {
            #expect(r.stdout == "hello\n")
        } else {
            #expect(r.status == 125 && r.stderr.contains("/opt/dgrun-data"), "\(r.stderr)")
        }
        let tmpTarget = Harness.dgrun(["exec", "--ro", "\(src):/tmp/in/data", "--", "cat", "/tmp/in/data/data.txt"])
        #expect(tmpTarget.stdout == "hello\n", "a target under the sandbox's tmpfs is created: \(tmpTarget.stderr)")
        let missing = Harness.dgrun(["exec", "--ro", "/nonexistent/dgrun", "--", "true"])
        #expect(missing.status == 125)
        #expect(missing.stderr.contains("/nonexistent/dgrun"))
    }

    @Test func freshProcAndMinimalDev() {
        let r = Harness.dgrun(["exec", "--", "sh", "-c", "ls /dev | tr '\\n' ' '; head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo null-ok"])
        #expect(r.status == 0, "\(r.stderr)")
        for node in ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx"] {
            #expect(r.stdout.contains(node + " "), "missing /dev/\(node): \(r.stdout)")
        }
        #expect(!r.stdout.contains("vda"), "host block devices are not visible")
        #expect(r.stdout.hasSuffix(" 4\nnull-ok\n"), "\(r.stdout)")
    }

    @Test func noCapabilitiesAndMountFails() {
        let r = Harness.dgrun(["exec", "--", "sh", "-c",
                               "grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status | awk '{print $2}' | sort -u; grep NoNewPrivs /proc/self/status; mount -t tmpfs none /mnt 2>/dev/null && echo mounted || echo mount-denied"])
        #expect(r.stdout == "0000000000000000\nNoNewPrivs:\t1\nmount-denied\n", "\(r.stdout) \(r.stderr)")
        let kept = Harness.dgrun(["exec", "--cap-add", "CAP_NET_BIND_SERVICE", "--", "grep", "^CapEff", "/proc/self/status"])
        #expect(kept.stdout.hasSuffix("0000000000000400\n"), "\(kept.stdout) \(kept.stderr)")
    }

    @Test func nestedSandboxNeedsTheNestedProfile() {
        // The default profile denies new user namespaces (clone3 gets ENOSYS, clone and unshare
        // EPERM), and its masked /proc keeps an inner sandbox from mounting a /proc of its own:
        // dgrun says so and names --profile nested, which runs nested.
        // The clone (binary and profiles) may live under /tmp, which is private in the sandbox: bind it in.
        let buildDirectory = Harness.repositoryRoot
        let refused = Harness.dgrun(["exec", "--ro", buildDirectory, "--", Harness.binary, "exec", "--", "true"])
        #expect(refused.status == 125)
        #expect(refused.stderr.contains("--profile nested"), "\(refused.stderr)")
        let masked = Harness.dgrun(["exec", "--ro", buildDirectory, "--seccomp", "unconfined", "--cap-add", "CAP_SETFCAP", "--",
                                    Harness.binary, "exec", "--", "true"])
        #expect(masked.status == 125)
        #expect(masked.stderr.contains("mount proc") && masked.stderr.contains("--profile nested"), "\(masked.stderr)")
        let nested = Harness.dgrun(["exec", "--ro", buildDirectory, "--profile", "nested", "--",
                                    Harness.binary, "exec", "--hostname", "inner", "--", "hostname"])
        #expect(nested.status == 0, "\(nested.stderr)")
        #expect(nested.stdout == "inner\n")
    }

    @Test(.enabled(if: Harness.isRoot, "--userns auto needs root"))
    func usernsAutoRunsTheTaskAsAnUnprivilegedHostIdentity() throws {
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        try "mine\n".write(toFile: dir + "/mine.txt", atomically: false, encoding: .utf8)
        chmod(dir + "/mine.txt", 0o600)
        let r = Harness.dgrun(["exec", "--userns", "auto", "--", "sh", "-c", """
            id -u; cat mine.txt; echo new > new.txt; stat -c %u /etc/passwd; cat /etc/shadow >/dev/null 2>&1 && echo shadow-read
            awk '{print $2}' /proc/self/uid_map
            """], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        // Root inside; the caller's own 0600 file is readable (idmapped bind); host root's files
        // are nobody's, and root-only ones unreadable; the range is not the host's root.
        #expect(r.stdout.hasPrefix("0\nmine\n65534\n"), "\(r.stdout)")
        #expect(!r.stdout.contains("shadow-read"), "\(r.stdout)")
        let start = r.stdout.split(separator: "\n").last.flatMap { UInt32($0) } ?? 0
        #expect(start >= 65536, "the sandbox's root is a subordinate id: \(r.stdout)")
        var st = stat()
        #expect(stat(dir + "/new.txt", &st) == 0 && st.st_uid == getuid() && st.st_gid == getgid(),
                "what the task wrote belongs to the caller on the host")
        #expect(Harness.dgrun(["exec", "--userns", "sometimes", "--", "true"]).status == 125)
    }

    @Test func userMapping() {
        #expect(Harness.dgrun(["exec", "--", "id", "-u"]).stdout == "0\n")
        #expect(Harness.dgrun(["exec", "--user", "current", "--", "id", "-u"]).stdout == "\(getuid())\n")
    }

    @Test func inheritedDescriptorsAreClosed() {
        // fd 7 is open without CLOEXEC when dgrun starts; the command must not see it.
        let r = Harness.run(["/bin/sh", "-c", "exec 7</etc/hostname; exec \(Harness.binary) exec -- ls /proc/self/fd"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.split(separator: "\n").sorted() == ["0", "1", "2", "3"], "\(r.stdout)")
    }

    @Test func environmentIsPassedOrCleared() {
        let r = Harness.dgrun(["exec", "-e", "DGRUN_T=1", "--", "sh", "-c", "echo $DGRUN_T"])
        #expect(r.stdout == "1\n")
        let cleared = Harness.dgrun(["exec", "--clear-env", "-e", "ONLY=me", "--", "env"])
        let keys = Set(cleared.stdout.split(separator: "\n").map { String($0.prefix(while: { $0 != "=" })) })
        #expect(keys.isSubset(of: ["PATH", "HOME", "TERM", "LANG", "LC_ALL", "ONLY", "PWD"]), "\(keys)")
        #expect(keys.contains("ONLY"))
    }
}


