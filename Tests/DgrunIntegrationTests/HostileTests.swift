import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The hostile-task suite: each attack runs inside `dgrun exec` (as root, and as an unprivileged
/// user where the build is reachable by one), and is judged from outside the sandbox: the host file
/// unchanged, the host process alive, the listener never reached, nothing left running.
@Suite(.serialized, .enabled(if: Harness.hasCommand("python3"), "needs python3 for raw syscalls"))
struct HostileTests {
    /// root: as CI runs it; auto: root with --userns auto; nobody: an unprivileged caller.
    enum Who: String, CaseIterable, CustomTestStringConvertible {
        case root, auto, nobody
        var testDescription: String { rawValue }
    }

    static var nobodyReachable: Bool { Harness.unprivilegedBinary != nil }

    /// Runs `dgrun ARGS` as `who`, in a fresh task directory writable by both; nil (and a
    /// recorded skip reason) when that identity cannot run here.
    static func dgrun(_ who: Who, _ args: [String], cwd: String) throws -> RunResult {
        switch who {
        case .root, .auto:
            if !Harness.isRoot { try Harness.unavailable("root", "the root lanes of the hostile suite need root") }
            let options = who == .auto && args.first == "exec" ? ["exec", "--userns", "auto"] + args.dropFirst() : args
            return Harness.run([Harness.binary] + options, cwd: cwd)
        case .nobody:
            if !nobodyReachable {
                try Harness.unavailable("rootless", "the unprivileged lane needs root (to become uid 65534) and setpriv")
            }
            return Harness.run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                Harness.unprivilegedBinary!] + args, cwd: cwd)
        }
    }

    /// A directory on the host's own filesystem (not /tmp, which is private in the sandbox), with a
    /// victim file anyone may write on the host: only the sandbox can be what stops a write.
    static func withVictim(_ body: (_ workdir: String, _ victim: String) throws -> Void) throws {
        var template = Array("/var/tmp/dgrun-hostile-XXXXXX".utf8CString)
        let outside = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }!)
        defer { Harness.removeTree(outside) }
        chmod(outside, 0o777)
        let victim = outside + "/victim"
        try "original\n".write(toFile: victim, atomically: false, encoding: .utf8)
        chmod(victim, 0o666)
        let workdir = Harness.makeTemporaryDirectory(mode: 0o777)
        defer { Harness.removeTree(workdir) }
        try body(workdir, victim)
    }

    static func fileState(_ path: String) -> String {
        var st = stat()
        guard lstat(path, &st) == 0 else { return "missing" }
        let content = (try? String(contentsOfFile: path, encoding: .utf8)) ?? "?"
        return "\(st.st_mode) \(st.st_uid) \(st.st_nlink) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(content)"
    }

    @Test(arguments: Who.allCases)
    func writesOutsideTheAllowedPathsDoNotLand(who: Who) throws {
        try Self.withVictim { workdir, victim in
            let before = Self.fileState(victim)
            let script = """
                v=\(victim)
                echo pwned > $v; echo pwned >> /proc/self/root$v; echo pwned >> /proc/1/root$v
                ln $v hard && echo pwned >> hard
                ln -s $v soft && echo pwned >> soft
                mv $v moved; chmod 777 $v; touch -d 2001-01-01 $v; truncate -s 0 $v
                python3 -c 'import os; fd = os.open("\(victim)", os.O_RDONLY); os.chmod(f"/proc/self/fd/{fd}", 0o777); os.write(os.open(f"/proc/self/fd/{fd}", os.O_WRONLY), b"pwned")'
                exit 0
                """
            let r = try Self.dgrun(who, ["exec", "--", "sh", "-c", script], cwd: workdir)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(Self.fileState(victim) == before, "the host file changed: \(r.stderr)")
        }
    }

    @Test(arguments: Who.allCases)
    func kernelFilesAreNeitherWritableNorReadable(who: Who) throws {
        let watched = ["/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname",
                       "/proc/sys/vm/overcommit_memory", "/proc/sys/kernel/modprobe"]
        let before = watched.map { (try? FileIO.read($0)) ?? "?" }
        let workdir = Harness.makeTemporaryDirectory(mode: 0o777)
        defer { Harness.removeTree(workdir) }
        let script = """
            echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern; echo pwned > /proc/sys/kernel/hostname
            echo pwned > /proc/sys/kernel/domainname; echo 2 > /proc/sys/vm/overcommit_memory; echo /tmp/pwn > /proc/sys/kernel/modprobe
            [ -e /proc/sysrq-trigger ] && echo h > /proc/sysrq-trigger
            echo 1 > /sys/kernel/mm/ksm/run; echo pwned > /sys/class/net/lo/ifalias
            for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do [ -e $f ] && printf '%s:%s\\n' $f $(head -c 64 $f | wc -c); done
            ls /sys/firmware | wc -l
            exit 0
            """
        let r = try Self.dgrun(who, ["exec", "--", "sh", "-c", script], cwd: workdir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(watched.map { (try? FileIO.read($0)) ?? "?" } == before, "a host kernel setting changed")
        for line in r.stdout.split(separator: "\n") where line.hasPrefix("/proc/") {
            #expect(line.hasSuffix(":0"), "a masked kernel file is readable: \(line)")
        }
        #expect(r.stdout.hasSuffix("0\n"), "/sys/firmware is masked: \(r.stdout)")
    }

    @Test(arguments: Who.allCases)
    func theRuntimeBinaryAndItsPipesAreOutOfReach(who: Who) throws {
        // CVE-2019-5736: /proc/1/exe is the dgrun binary (the init never execs); CVE-2024-21626:
        // the init's descriptors, among them the pipe dgrun reads the command's exit status from.
        let digest = ContentHash.version(of: Harness.binary)
        let workdir = Harness.makeTemporaryDirectory(mode: 0o777)
        defer { Harness.removeTree(workdir) }
        let marker = "dgrun-hostile-exe-\(getpid())-\(who)"
        let script = """
            (setsid sh -c 'while :; do echo x >> /proc/1/exe; cat /proc/1/exe > /dev/null; sleep 0.05; done; : \(marker)' &) 2>/dev/null
            (exec 9</proc/1/exe) 2>/dev/null && echo opened-exe
            for f in /proc/1/fd/*; do readlink $f; done 2>/dev/null | wc -l
            for n in 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do printf '\\000\\000\\000\\000' > /proc/1/fd/$n; done 2>/dev/null
            readlink /proc/1/cwd /proc/1/root; cat /proc/1/environ | head -c 1
            exit 3
            """
        let r = try Self.dgrun(who, ["exec", "--", "sh", "-c", script], cwd: workdir)
        #expect(r.status == 3, "the exit status dgrun reports is the command's, not a forged one: \(r.status) \(r.stderr)")
        #expect(!r.stdout.contains("opened-exe"), "\(r.stdout)")
        #expect(r.stdout.hasPrefix("0\n"), "the init's descriptors are out of reach: \(r.stdout)")
        #expect(Harness.waitUntil(timeout: 2) { Harness.processes(containing: marker).isEmpty }, "a process outlived the run")
        #expect(ContentHash.version(of: Harness.binary) == digest, "the dgrun binary changed")
    }

    @Test(arguments: Who.allCases)
    func hostProcessesAreNeitherSeenNorSignalledNorRead(who: Who) throws {
        let marker = "dgrun-hostile-victim-\(getpid())-\(who)"
        let victim = Harness.start(["/bin/sh", "-c", "sleep 300; : \(marker)"])
        defer { Harness.stop(victim) }
        let workdir = Harness.makeTemporaryDirectory(mode: 0o777)
        defer { Harness.removeTree(workdir) }
        let script = """
            import ctypes, os, signal
            libc = ctypes.CDLL(None, use_errno=True)
            pid = \(victim)
            for sig in (signal.SIGKILL, signal.SIGSTOP):
                try: os.kill(pid, sig); print("kill reached")
                except OSError: pass
            print("ptrace", libc.ptrace(16, pid, 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
            class iovec(ctypes.Structure): _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
            buf = ctypes.create_string_buffer(8); local = iovec(ctypes.addressof(buf), 8); remote = iovec(0x400000, 8)
            print("process_vm_readv", libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0), ctypes.get_errno())
            print("pidfd_open", libc.syscall(434, pid, 0), ctypes.get_errno())
            print("visible", sum(1 for p in os.listdir("/proc") if p.isdigit()) < 10, flush=True)
            os.kill(-1, signal.SIGKILL)  # everything this process may signal: the sandbox's, never the host's
            """
        let r = try Self.dgrun(who, ["exec", "--", "python3", "-c", script], cwd: workdir)
        #expect(!r.stdout.contains("kill reached"), "\(r.stdout)")
        #expect(r.stdout.contains("ptrace -1 3\n"), "ESRCH: \(r.stdout) \(r.stderr)")
        #expect(r.stdout.contains("process_vm_readv -1 3\n"), "ESRCH: \(r.stdout)")
        #expect(r.stdout.contains("pidfd_open -1 3\n"), "ESRCH: \(r.stdout)")
        #expect(r.stdout.contains("visible True"), "\(r.stdout)")
        #expect(kill(victim, 0) == 0, "the host process was killed")
        #expect(Harness.processes(containing: marker).count == 1)
        let stat = (try? FileIO.read("/proc/\(victim)/stat")) ?? ""
        #expect(!stat.contains(") T "), "the host process was stopped")
    }

    @Test(arguments: Who.allCases)
    func noNetworkUnderNone(who: Who) throws {
        // A TCP listener on the host's loopback and an abstract unix socket: neither may be reached.
        let dir = Harness.makeTemporaryDirectory(mode: 0o777)
        defer { Harness.removeTree(dir) }
        let server = """
            import os, socket, select, sys
            t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("127.0.0.1", 0)); t.listen(8)
            u = socket.socket(socket.AF_UNIX); u.bind("\\0dgrun-hostile-\(getpid())"); u.listen(8)
            # Written whole, then renamed: the test reads it as soon as the name exists.
            with open("\(dir)/port.new", "w") as f: f.write(str(t.getsockname()[1]))
            os.rename("\(dir)/port.new", "\(dir)/port")
            while True:
                r, _, _ = select.select([t, u], [], [])
                for s in r: s.accept(); open("\(dir)/reached", "a").write("x")
            """
        let pid = Harness.start(["/usr/bin/python3", "-c", server])
        defer { Harness.stop(pid) }
        #expect(Harness.waitUntil(timeout: 5) { FileIO.exists(dir + "/port") })
        let port = (try? FileIO.read(dir + "/port")) ?? "0"
        let client = """
            import socket
            for family, address in ((socket.AF_INET, ("127.0.0.1", \(port))), (socket.AF_UNIX, "\\0dgrun-hostile-\(getpid())")):
                s = socket.socket(family); s.settimeout(1)
                try: s.connect(address); print("connected")
                except OSError as e: print("refused", e.errno)
            """
        let r = try Self.dgrun(who, ["exec", "--net", "none", "--", "python3", "-c", client], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!r.stdout.contains("connected"), "\(r.stdout)")
        usleep(200_000)
        #expect(!FileIO.exists(dir + "/reached"), "the host listener was reached")
    }

    @Test(arguments: Who.allCases)
    func noCapabilitiesNoSetuidNoMountsNoKernelSurface(who: Who) throws {
        // A setuid-root copy of id on the host's own filesystem: no_new_privs (and nosuid) must
        // keep it from raising the effective uid.
        try Self.withVictim { workdir, victim in
            let setuid = (victim as NSString).deletingLastPathComponent + "/suid-id"
            _ = Harness.run(["/bin/sh", "-c", "cp /usr/bin/id \(setuid) && chown 0:0 \(setuid) && chmod 4755 \(setuid)"])
            let script = """
                import ctypes, os, subprocess
                libc = ctypes.CDLL(None, use_errno=True)
                status = dict(l.split(":\\t") for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
                print("caps", all(int(status[k], 16) == 0 for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")))
                print("nnp", status["NoNewPrivs"], "seccomp", status["Seccomp"])
                print("setuid", subprocess.run(["\(setuid)"], capture_output=True, text=True).stdout.strip())
                calls = {"mount": (165, b"none", b"/mnt", b"tmpfs", 0, 0), "io_uring_setup": (425, 1, 0), "bpf": (321, 0, 0, 0),
                         "perf_event_open": (298, 0, 0, -1, -1, 0), "keyctl": (250, 0, 0), "kexec_load": (246, 0, 0, 0, 0),
                         "init_module": (175, 0, 0, 0), "finit_module": (313, -1, 0, 0), "open_by_handle_at": (304, 3, 0, 0),
                         "unshare-userns": (272, 0x10000000), "setns": (308, 0, 0), "swapon": (167, b"/x", 0),
                         "userfaultfd": (323, 0), "add_key": (248, b"user", b"x", b"y", 1, -4)}
                for name, call in calls.items():
                    ctypes.set_errno(0)
                    rc = libc.syscall(call[0], *[ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a) for a in call[1:]])
                    print(name, "allowed" if rc >= 0 else "denied")
                """
            let r = try Self.dgrun(who, ["exec", "--", "python3", "-c", script], cwd: workdir)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("caps True\n"), "\(r.stdout)")
            #expect(r.stdout.contains("nnp 1 seccomp 2\n"), "\(r.stdout)")
            #expect(r.stdout.contains("setuid uid=") && !r.stdout.contains("euid="), "the setuid bit took effect: \(r.stdout)")
            #expect(!r.stdout.contains("allowed"), "\(r.stdout)")
        }
    }

    @Test(arguments: Who.allCases)
    func daemonsDoNotOutliveTheRun(who: Who) throws {
        let marker = "dgrun-hostile-daemon-\(getpid())-\(who)"
        let workdir = Harness.makeTemporaryDirectory(mode: 0o777)
        defer { Harness.removeTree(workdir) }
        let script = """
            setsid sh -c 'sleep 300; : \(marker)' < /dev/null > /dev/null 2>&1 &
            nohup sh -c 'sleep 301; : \(marker)' > /dev/null 2>&1 &
            (trap '' HUP TERM INT; sh -c 'trap "" HUP TERM INT; sleep 302; : \(marker)' &) &
            python3 -c 'import os, time
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv("/bin/sh", ["sh", "-c", "sleep 303; : \(marker)"])
            ' &
            sleep 0.3; exit 0
            """
        let r = try Self.dgrun(who, ["exec", "--", "sh", "-c", script], cwd: workdir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(Harness.waitUntil(timeout: 2) { Harness.processes(containing: marker).isEmpty },
                "processes outlived the run: \(Harness.processes(containing: marker))")
    }

    @Test(arguments: Who.allCases)
    func devicesAreMinimal(who: Who) throws {
        let workdir = Harness.makeTemporaryDirectory(mode: 0o777)
        defer { Harness.removeTree(workdir) }
        let script = """
            ls /dev | tr '\\n' ' '; echo
            mknod /dev/shm/sda b 8 0 && echo mknod-made; mknod ./mem c 1 1 && echo mknod-made
            for d in /dev/sda /dev/vda /dev/mem /dev/kmsg /dev/port /dev/cpu; do [ -e $d ] && echo "present $d"; done
            exit 0
            """
        let r = try Self.dgrun(who, ["exec", "--", "sh", "-c", script], cwd: workdir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("fd full null ptmx pts random shm stderr stdin stdout tty urandom zero \n"), "\(r.stdout)")
        #expect(!r.stdout.contains("mknod-made") && !r.stdout.contains("present"), "\(r.stdout)")
    }

    @Test(.enabled(if: Harness.canLimit, Comment(rawValue: Harness.limitSkipReason)))
    func forkAndMemoryBombsAreContained() throws {
        let workdir = Harness.makeTemporaryDirectory(mode: 0o777)
        defer { Harness.removeTree(workdir) }
        let marker = "dgrun-hostile-bomb-\(getpid())"
        let started = Date()
        // The shell execs its sleep rather than forking it: once the bomb fills the pids limit a fork
        // of the shell's own fails too, and the shell would end with status 2 before the timeout.
        let fork = try Self.dgrun(.root, ["exec", "--pids", "64", "--timeout", "3s", "--stop-timeout", "1s", "--", "sh", "-c",
                                          "b() { b | b & }; b; exec sleep 30; : \(marker)"], cwd: workdir)
        #expect(fork.status == 124, "\(fork.status) \(fork.stderr)")
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(Harness.waitUntil(timeout: 2) { Harness.processes(containing: marker).isEmpty })
        #expect(Harness.run(["/bin/true"]).status == 0, "the host can still start processes")
        let memory = try Self.dgrun(.root, ["exec", "--memory", "64m", "--", "python3", "-c",
                                            "a = []\nwhile True: a.append(bytearray(1 << 20))"], cwd: workdir)
        #expect(memory.status == 137, "\(memory.status) \(memory.stderr)")
    }

    @Test(arguments: Who.allCases)
    func linksPlantedForDgrunToWriteThroughAreRefused(who: Who) throws {
        // After the run dgrun (often root) writes the report, the store and graph.json: a task that
        // swaps a directory on the way for a link to /var/tmp/... must not get a file written there.
        try Self.withVictim { workdir, victim in
            let outside = (victim as NSString).deletingLastPathComponent
            let task = workdir + "/task"
            mkdir(task, 0o777)
            mkdir(task + "/reports", 0o777)
            chmod(task, 0o777)
            chmod(task + "/reports", 0o777)
            let script = "rm -rf .dgrun reports; ln -s \(outside) reports; ln -sfn \(outside) .dgrun; mkdir -p .dgrun; echo ok > out.txt"
            try "command = [\"sh\", \"-c\", \"\(script)\"]\n".write(toFile: task + "/task.toml", atomically: false, encoding: .utf8)
            chmod(task + "/task.toml", 0o666)
            let r = try Self.dgrun(who, ["exec", "--report", task + "/reports/report.json", task], cwd: workdir)
            #expect(r.stderr.contains("nothing was written"), "\(r.status) \(r.stderr)")
            let planted = FileIO.listDirectory(outside).filter { $0 != "victim" && $0 != "suid-id" }
            #expect(planted.isEmpty, "dgrun wrote through a planted link: \(planted)")
            #expect(FileIO.isRealDirectory(task + "/.dgrun"), "the state directory is still the real one")
            let again = try Self.dgrun(who, ["exec", task], cwd: workdir)
            #expect(again.status == 0 && again.stderr.contains("up to date"), "the state survived: \(again.stderr)")
        }
    }

    @Test(arguments: Who.allCases)
    func anOutputLeftAsALinkIsRecordedAsTheLinkNotWhatItPointsTo(who: Who) throws {
        // dgrun hashes outputs after the run, with its own rights: following a link the task left
        // would put the digest of a file the task cannot read into the graph (and, with a cache,
        // its bytes into the cache).
        try Self.withVictim { workdir, victim in
            try "secret \(getpid())\n".write(toFile: victim, atomically: false, encoding: .utf8)
            chmod(victim, 0o600)
            let digest = try #require(ContentHash.version(of: victim)).dropFirst("sha256:".count)
            let task = workdir + "/task"
            mkdir(task, 0o777)
            chmod(task, 0o777)
            try "command = [\"sh\", \"-c\", \"ln -sf \(victim) out.txt\"]\noutputs = [\"out.txt\"]\n"
                .write(toFile: task + "/task.toml", atomically: false, encoding: .utf8)
            chmod(task + "/task.toml", 0o666)
            let r = try Self.dgrun(who, ["exec", task], cwd: workdir)
            #expect(r.status == 0, "\(r.stderr)")
            let graph = (try? String(contentsOfFile: task + "/.dgrun/graph.json", encoding: .utf8)) ?? ""
            #expect(graph.contains("link:"), "the output is recorded as a link")
            #expect(!graph.contains(digest), "the digest of what the link points to is in the graph")
            let again = try Self.dgrun(who, ["exec", task], cwd: workdir)
            #expect(again.stderr.contains("up to date"), "\(again.stderr)")
        }
    }
}
