import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `dgrun discover` on real programs: each kind of access becomes the right node and edge.
@Suite struct DiscoverTests {
    /// sha256 by sha256sum, independent of the code under test.
    static func sha256(_ text: String) -> String {
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        try? text.write(toFile: dir + "/f", atomically: true, encoding: .utf8)
        return String(Harness.run(["sha256sum", dir + "/f"]).stdout.prefix(64))
    }

    struct Found {
        var nodes: [String: [String: Any]] = [:]   // by ref
        var nodesByID: [String: [String: Any]] = [:]
        var edges: Set<String> = []                 // "relation ref"
        var status: Int32
        var stderr: String

        func has(_ relation: String, _ ref: String) -> Bool { edges.contains("\(relation) \(ref)") }
    }

    /// `environment`: NAME=VALUE settings for dgrun itself.
    static func discover(_ command: [String], cwd: String? = nil, environment: [String] = []) -> Found {
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        let r = Harness.run(environment + [Harness.binary, "discover", "-o", dir + "/graph.json", "--"] + command, cwd: cwd)
        var found = Found(status: r.status, stderr: r.stderr)
        guard let data = FileManager.default.contents(atPath: dir + "/graph.json"),
              let graph = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return found }
        #expect(graph["schema"] as? String == "dgrun.graph/1")
        var refByID: [String: String] = [:]
        for node in graph["nodes"] as? [[String: Any]] ?? [] {
            let ref = node["ref"] as? String ?? ""
            refByID[node["id"] as? String ?? ""] = ref
            found.nodes[ref] = node
            found.nodesByID[node["id"] as? String ?? ""] = node
        }
        for edge in graph["edges"] as? [[String: Any]] ?? [] {
            let to = refByID[edge["to"] as? String ?? ""] ?? ""
            found.edges.insert("\(edge["relation"] as? String ?? "") \(to)")
        }
        return found
    }

    @Test func filesReadWrittenProbedAndExecuted() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        try "input\n".write(toFile: work + "/in.txt", atomically: true, encoding: .utf8)
        let f = Self.discover(["sh", "-c", "cat in.txt > out.txt; test -e missing.txt; mkdir made; mv out.txt made/moved.txt; cd gone 2>/dev/null; true"], cwd: work)
        #expect(f.status == 0, "\(f.stderr)")
        #expect(f.stderr.contains("; the tracer was busy "), "the supervisor's CPU time is reported: \(f.stderr)")
        #expect(f.has("reads", work + "/in.txt"))
        #expect(f.has("writes", work + "/out.txt"))
        #expect(f.has("writes", work + "/made/moved.txt"))
        #expect(f.has("probes", work + "/missing.txt"))
        #expect(f.has("executes", FileIO.realPath("/bin/cat") ?? "/usr/bin/cat"))
        #expect(f.has("loads", FileIO.realPath("/lib/x86_64-linux-gnu/libc.so.6") ?? ""))
        let input = try #require(f.nodes[work + "/in.txt"])
        #expect(input["ownership"] as? String == "internal")
        #expect(input["state"] as? String == "available")
        #expect((input["version"] as? String)?.hasPrefix("sha256:7d3f9b62") == true, "sha256 of 'input\\n'")
        #expect(f.nodes[work + "/missing.txt"]?["state"] as? String == "unavailable")
        #expect((f.nodes[work + "/gone"]?["evidence"] as? [String])?.contains("traced:chdir") == true, "a chdir into nothing is a probe")
        let libc = try #require(f.nodes[FileIO.realPath("/lib/x86_64-linux-gnu/libc.so.6") ?? ""])
        #expect(libc["kind"] as? String == "library")
        #expect((libc["evidence"] as? [String])?.contains("static:elf-needed") == true)
        #expect(f.nodes["cgroup:" + Harness.layout.rawValue]?["kind"] as? String == "infrastructure" || !Harness.canLimit)
    }

    @Test func aDaemonLeftBehindIsTracedUntilItEndsOrTheLingerBound() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        try "x\n".write(toFile: work + "/late.txt", atomically: true, encoding: .utf8)
        // The command exits at once; the daemon reads a file 0.3 s later.
        let f = Self.discover(["sh", "-c", "(sleep 0.3; cat late.txt > /dev/null) & exit 0"], cwd: work)
        #expect(f.status == 0, "\(f.stderr)")
        #expect(f.has("reads", work + "/late.txt"), "the daemon's read is in the graph")

        // One that would run for 30 s is ended at the bound, and nothing is left behind.
        let marker = "29.\(getpid())"  // a sleep's argument, unique to this test run
        let started = Date()
        let r = Harness.run([Harness.binary, "discover", "--linger", "500ms", "-o", work + "/g.json", "--",
                             "sh", "-c", "sleep \(marker) & exit 0"], cwd: work)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(Harness.processes(containing: marker).isEmpty)
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/var/lib/dpkg/status") && Harness.hasCommand("dpkg-query"),
                   "needs a Debian system (dpkg)"))
    func systemFilesCarryTheirDebianPackageVersion() throws {
        let f = Self.discover(["cat", "/etc/hostname"])
        #expect(f.status == 0, "\(f.stderr)")
        let cat = try #require(FileIO.realPath("/bin/cat"))
        let version = try #require(f.nodes[cat]?["version"] as? String)
        // What dpkg itself says owns it and at which version: the independent answer.
        let owner = Harness.run(["dpkg-query", "-S", "/bin/cat"]).stdout.split(separator: ":").first.map(String.init) ?? "?"
        let installed = Harness.run(["dpkg-query", "-W", "-f", "${Version}", owner]).stdout
        #expect(version.contains("deb:\(owner)=\(installed)"), "\(version) vs \(owner) \(installed)")
        #expect(version.hasPrefix("sha256:"), "the content hash stays first")
    }

    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func scriptsRunAsAnArgumentAreAnalysedPythonImportsIncluded() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        mkdir(work + "/lib", 0o755)
        try "import json\nfrom lib import helper\nif False:\n    import rarely_used\nprint(json.dumps(helper.value()))\n"
            .write(toFile: work + "/main.py", atomically: true, encoding: .utf8)
        try "".write(toFile: work + "/lib/__init__.py", atomically: true, encoding: .utf8)
        try "def value(): return 1\n".write(toFile: work + "/lib/helper.py", atomically: true, encoding: .utf8)
        try "y = 2\n".write(toFile: work + "/rarely_used.py", atomically: true, encoding: .utf8)
        try "gzip --version > /dev/null\npython3 main.py\n".write(toFile: work + "/build.sh", atomically: true, encoding: .utf8)
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        let r = Harness.run([Harness.binary, "discover", "-o", dir + "/g.json", "--", "sh", "build.sh"], cwd: work)
        #expect(r.status == 0, "\(r.stderr)")
        let data = try #require(FileManager.default.contents(atPath: dir + "/g.json"))
        let graph = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        var evidence: [String: [String]] = [:]
        for node in graph["nodes"] as? [[String: Any]] ?? [] {
            evidence[node["ref"] as? String ?? ""] = node["evidence"] as? [String] ?? []
        }
        let requires = Set((graph["edges"] as? [[String: Any]] ?? []).filter { $0["relation"] as? String == "requires" }
            .map { "\(($0["from"] as? String ?? "").split(separator: "/").last ?? "") -> \($0["to"] as? String ?? "")" })
        // build.sh ran as sh's argument: its commands are found as for a shebang script.
        #expect(requires.contains("build.sh -> file:\(FileIO.realPath("/bin/gzip") ?? "/usr/bin/gzip")"), "\(requires.sorted())")
        // main.py's imports: the local ones, the one in a branch that never ran (static only), the stdlib's.
        #expect(requires.contains("main.py -> file:\(work)/lib/helper.py"))
        #expect(requires.contains("main.py -> file:\(work)/rarely_used.py"))
        #expect(evidence[work + "/rarely_used.py"] == ["static:python-import"], "never imported, so never traced")
        #expect(requires.contains { $0.hasPrefix("main.py -> ") && $0.hasSuffix("/json/__init__.py") }, "the standard library's json")
    }

    /// `discover -o /dev/null` as root renamed the graph over /dev/null, leaving the host a regular
    /// file there. A device (here the test's own node of /dev/null's numbers) or a FIFO named as an
    /// output is written to, never replaced.
    @Test(.enabled(if: getuid() == 0, "needs root to make a device node"))
    func anOutputThatIsADeviceOrAPipeIsWrittenToNotReplaced() throws {
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        #expect(mknod(dir + "/null", S_IFCHR | 0o666, dev_t(1 << 8 | 3)) == 0)
        var r = Harness.run([Harness.binary, "discover", "-o", dir + "/null", "--", "true"])
        #expect(r.status == 0, "\(r.stderr)")
        var st = stat()
        #expect(lstat(dir + "/null", &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR, "still a device")
        r = Harness.run([Harness.binary, "exec", "--report", dir + "/null", "--", "true"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(lstat(dir + "/null", &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR, "still a device")

        #expect(mkfifo(dir + "/fifo", 0o600) == 0)
        let reader = Harness.start(["sh", "-c", "cat \(dir)/fifo > \(dir)/read.json"])
        r = Harness.run([Harness.binary, "discover", "-o", dir + "/fifo", "--", "true"])
        var status: Int32 = 0
        while waitpid(reader, &status, 0) < 0 && errno == EINTR {}
        #expect(r.status == 0, "\(r.stderr)")
        #expect(lstat(dir + "/fifo", &st) == 0 && (st.st_mode & S_IFMT) == S_IFIFO, "still a FIFO")
        #expect(((try? String(contentsOfFile: dir + "/read.json", encoding: .utf8)) ?? "").contains("dgrun.graph"))
    }

    @Test func aFileReadThenRewrittenGetsTwoVersions() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        try "1\n".write(toFile: work + "/counter", atomically: true, encoding: .utf8)
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        let r = Harness.run([Harness.binary, "discover", "-o", dir + "/g.json", "--", "sh", "-c", "cat counter > /dev/null; echo 2 >> counter"], cwd: work)
        #expect(r.status == 0, "\(r.stderr)")
        let data = try #require(FileManager.default.contents(atPath: dir + "/g.json"))
        let graph = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let nodes = (graph["nodes"] as? [[String: Any]] ?? []).filter { $0["ref"] as? String == work + "/counter" }
        #expect(nodes.count == 2, "the version read and the version written: \(nodes)")
        let edges = graph["edges"] as? [[String: Any]] ?? []
        let relations = Set(edges.compactMap { e -> String? in
            guard let to = e["to"] as? String, to.hasPrefix("file:" + work + "/counter") else { return nil }
            return "\(e["relation"] as? String ?? "") \(to)"
        })
        #expect(relations == ["reads file:\(work)/counter", "writes file:\(work)/counter#2"], "\(relations)")
        // The tracer hashed the content read just before the write changed it.
        #expect((nodes.first { $0["id"] as? String == "file:\(work)/counter" }?["version"] as? String) == "sha256:\(Self.sha256("1\n"))")
        #expect((nodes.first { $0["id"] as? String == "file:\(work)/counter#2" }?["version"] as? String) == "sha256:\(Self.sha256("1\n2\n"))")
    }

    /// Replaced by a rename, or removed: the version read is still the content the task saw.
    @Test func aFileReadThenReplacedOrRemovedKeepsTheVersionRead() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        try "old config\n".write(toFile: work + "/config", atomically: true, encoding: .utf8)
        try "scratch\n".write(toFile: work + "/scratch", atomically: true, encoding: .utf8)
        let f = Self.discover(["sh", "-c", "cat config scratch > /dev/null; echo new > config.tmp; mv config.tmp config; rm scratch"], cwd: work)
        #expect(f.status == 0, "\(f.stderr)")
        let versions = f.nodesByID.compactMapValues { $0["version"] as? String }
        #expect(versions["file:\(work)/config"] == "sha256:\(Self.sha256("old config\n"))", "\(versions.filter { $0.key.contains(work) })")
        #expect(versions["file:\(work)/scratch"] == "sha256:\(Self.sha256("scratch\n"))")
    }

    @Test(.enabled(if: Harness.hasCommand("busybox"), "needs busybox-static"))
    func staticBinary() throws {
        let busybox = try #require(FileIO.realPath("/bin/busybox") ?? FileIO.realPath("/usr/bin/busybox"))
        let f = Self.discover([busybox, "cat", "/etc/hostname"])
        #expect(f.status == 0, "\(f.stderr)")
        #expect(f.has("executes", busybox))
        #expect(f.has("reads", "/etc/hostname"), "a static binary's own openat is traced")
    }

    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func threadsForksAndDirectoryFDs() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        try FileManager.default.createDirectory(atPath: work + "/sub", withIntermediateDirectories: true)
        for i in 0..<4 { try "\(i)".write(toFile: work + "/sub/t\(i)", atomically: true, encoding: .utf8) }
        let f = Self.discover(["python3", "-c", """
            import os, threading
            def read(i): open("sub/t%d" % i).read()
            ts = [threading.Thread(target=read, args=(i,)) for i in range(4)]
            [t.start() for t in ts]; [t.join() for t in ts]
            d = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
            os.close(os.open("via-dirfd", os.O_WRONLY | os.O_CREAT, dir_fd=d))
            if os.fork() == 0:
                open("from-child", "w").close(); os._exit(0)
            os.wait()
            """], cwd: work)
        #expect(f.status == 0, "\(f.stderr)")
        for i in 0..<4 { #expect(f.has("reads", work + "/sub/t\(i)"), "thread \(i)") }
        #expect(f.has("writes", work + "/sub/via-dirfd"), "relative to a directory fd")
        #expect(f.has("writes", work + "/from-child"), "a forked child is traced")
    }

    /// The tracer remembers resolved directories: a directory made, renamed or reached through a
    /// symlink during the run must still give each access its true path and existence.
    @Test func directoriesMadeRenamedAndLinkedDuringTheRun() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        let f = Self.discover(["sh", "-c", """
            test -e d/x; mkdir d; echo 1 > d/x; cat d/x
            mkdir a; echo 2 > a/f; cat a/f; mv a b; cat b/f; test -e a/f
            mkdir real; echo 3 > real/g; ln -s real link; cat link/g
            """], cwd: work)
        #expect(f.status == 0, "\(f.stderr)")
        #expect(f.has("probes", work + "/d/x"), "absent before mkdir")
        #expect(f.has("writes", work + "/d/x"))
        #expect(f.has("writes", work + "/a") && f.has("writes", work + "/b"), "the rename writes both names")
        #expect(f.has("reads", work + "/b/f"), "found under its new directory: \(f.edges.filter { $0.contains("/b") })")
        #expect(f.has("probes", work + "/a/f"), "gone after the rename: \(f.edges.filter { $0.contains("/a/") })")
        #expect(f.has("writes", work + "/real/g"))
        #expect(!f.edges.contains { $0.hasSuffix(work + "/link/g") }, "through the symlink, the real path: \(f.edges.filter { $0.contains("link") })")
    }

    /// Several serving threads answer one listener; the graph must not depend on how many, nor
    /// on which thread logged a call first (a file created, then read by another process).
    @Test func manyProcessesGiveTheSameGraphWithOneOrFourServingThreads() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        var script = ""
        for i in 0..<8 {
            script += "(for j in 1 2 3 4 5 6 7 8; do cat /etc/hostname > out\(i).$j; test -e absent\(i).$j; cat out\(i).$j > /dev/null; done) & "
        }
        script += "wait; cat out*.8 > all"
        let one = Self.discover(["sh", "-c", script], cwd: work, environment: ["DGRUN_TRACER_THREADS=1"])
        let four = Self.discover(["sh", "-c", script], cwd: work, environment: ["DGRUN_TRACER_THREADS=4"])
        #expect(one.status == 0 && four.status == 0, "\(one.stderr)\n\(four.stderr)")
        #expect(one.edges.count > 200, "\(one.edges.count) edges")
        let ours = { (f: Found) in f.edges.filter { $0.contains(work) } }
        #expect(ours(one) == ours(four), "only with one: \(ours(one).subtracting(ours(four))); only with four: \(ours(four).subtracting(ours(one)))")
        for i in 0..<8 {
            #expect(four.has("writes", work + "/out\(i).5") && four.has("probes", work + "/absent\(i).5"))
            #expect(!four.has("probes", work + "/out\(i).5"), "written before it was read: never absent")
        }
    }

    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func loopbackTCPAndUnixSocketClients() throws {
        let server = try LoopbackListener()
        defer { server.close() }
        let f = Self.discover(["python3", "-c", """
            import socket
            socket.create_connection(("127.0.0.1", \(server.port))).close()
            s = socket.socket(socket.AF_UNIX); s.bind("\\0dgrun-test-\(getpid())"); s.listen()
            c = socket.socket(socket.AF_UNIX); c.connect("\\0dgrun-test-\(getpid())")
            """])
        #expect(f.status == 0, "\(f.stderr)")
        #expect(f.has("connects", "tcp://127.0.0.1:\(server.port)"), "\(f.edges.filter { $0.hasPrefix("connects") })")
        #expect(f.has("connects", "unix:@dgrun-test-\(getpid())"))
        #expect(f.nodes["network:loopback"] != nil)
    }

    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func theTasksOwnServersAreInternalAndAnAbsentSocketIsAProbe() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        // A TCP server on an ephemeral port of 0.0.0.0 and a unix server on a relative path, each
        // reached by the task itself; and a unix socket that is not there (as glibc tries nscd's).
        let f = Self.discover(["python3", "-c", """
            import socket
            t = socket.socket(); t.bind(("0.0.0.0", 0)); t.listen(); port = t.getsockname()[1]
            socket.create_connection(("127.0.0.1", port)).close()
            u = socket.socket(socket.AF_UNIX); u.bind("srv.sock"); u.listen()
            c = socket.socket(socket.AF_UNIX); c.connect("srv.sock"); c.close()
            try:
                socket.socket(socket.AF_UNIX).connect("\(work)/absent.sock")
            except OSError:
                pass
            print(port)
            """], cwd: work)
        #expect(f.status == 0, "\(f.stderr)")
        let services = f.nodes.filter { $0.value["kind"] as? String == "service" }
        let port = try #require(services.keys.first { $0.hasPrefix("tcp://127.0.0.1:") }, "\(services.keys)")
        #expect(services[port]?["ownership"] as? String == "internal", "served by the task: \(port)")
        #expect(services["unix:" + work + "/srv.sock"]?["ownership"] as? String == "internal",
                "a relative unix path is resolved against the cwd: \(services.keys)")
        #expect(f.has("probes", work + "/absent.sock"), "\(f.edges.filter { $0.contains("absent") })")
        #expect(services["unix:" + work + "/absent.sock"] == nil, "an absent socket is no service")
    }

    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func dnsQueryToAStubResolverOnLoopback() throws {
        // A query sent to a stub resolver on 127.0.0.1:53 is decoded to the name it asks for.
        let f = Self.discover(["python3", "-c", """
            import socket, struct
            q = struct.pack(">HHHHHH", 1, 0x100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p for p in [b"example", b"test"]) + b"\\0" + struct.pack(">HH", 1, 1)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(q, ("127.0.0.1", 53))
            """])
        #expect(f.status == 0, "\(f.stderr)")
        #expect(f.has("resolves", "dns:example.test"), "\(f.edges.filter { $0.hasPrefix("resolves") })")
        #expect(f.has("resolves", "udp://127.0.0.1:53"))
    }

    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func tcpAndUDPAreToldApartByTheSocketNotThePort() throws {
        let server = try LoopbackListener()
        defer { server.close() }
        // UDP to an ordinary port, and TCP to port 53 (DNS over TCP, length-prefixed).
        let f = Self.discover(["python3", "-c", """
            import socket, struct
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"ping", ("127.0.0.1", \(server.port)))
            u.connect(("127.0.0.1", 9))
            q = struct.pack(">HHHHHH", 1, 0x100, 1, 0, 0, 0) + b"\\x07example\\x04test\\x00" + struct.pack(">HH", 1, 1)
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                t.connect(("127.0.0.1", 53)); t.sendall(struct.pack(">H", len(q)) + q)
            except OSError:
                pass
            """])
        #expect(f.status == 0, "\(f.stderr)")
        let services = f.edges.filter { $0.hasPrefix("connects") || $0.hasPrefix("resolves") }
        #expect(f.has("connects", "udp://127.0.0.1:\(server.port)"), "\(services)")
        #expect(f.has("connects", "udp://127.0.0.1:9"), "a connected UDP socket is still UDP")
        #expect(f.has("connects", "tcp://127.0.0.1:53"), "TCP to port 53 is TCP: \(services)")
        #expect(!f.has("connects", "tcp://127.0.0.1:\(server.port)"))
    }

    @Test func shebangInterpreterComesFromStaticAnalysis() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        // A branch that never runs: what it names is found statically only.
        try "#!/usr/bin/env sh\nif false; then gzip /etc/hostname; curl https://data.example.test/x; fi\nexit 0\n"
            .write(toFile: work + "/run.sh", atomically: true, encoding: .utf8)
        chmod(work + "/run.sh", 0o755)
        let f = Self.discover(["./run.sh"], cwd: work)
        #expect(f.status == 0, "\(f.stderr)")
        #expect(f.has("executes", work + "/run.sh"))
        let sh = FileIO.realPath("/bin/sh") ?? ""
        #expect(f.nodes[sh]?["kind"] as? String == "code")
        #expect((f.nodes[sh]?["evidence"] as? [String])?.contains("static:shebang") == true)
        let gzip = FileIO.realPath("/bin/gzip") ?? ""
        #expect(f.nodes[gzip]?["evidence"] as? [String] == ["static:shell-command"], "not traced: the branch never ran")
        #expect(f.nodes["/etc/hostname"]?["evidence"] as? [String] == ["static:script-literal"])
        #expect(f.nodes["tcp://data.example.test:443"] != nil)
    }

    @Test func exitStatusAndBadInput() {
        let failing = Harness.run([Harness.binary, "discover", "--format", "text", "--", "sh", "-c", "exit 3"])
        #expect(failing.status == 3)
        #expect(failing.stdout.contains("task:sh"))
        #expect(Harness.run([Harness.binary, "discover", "--format", "yaml", "--", "true"]).status == 125)
        #expect(Harness.run([Harness.binary, "discover"]).status == 125)
        let dot = Harness.run([Harness.binary, "discover", "--format", "dot", "--", "true"])
        #expect(dot.stdout.hasPrefix("digraph dgrun {"))
        let mermaid = Harness.run([Harness.binary, "discover", "--format", "mermaid", "--", "true"])
        #expect(mermaid.stdout.hasPrefix("graph LR"))
    }
}

/// `dgrun discover TASKDIR`: task.toml applied, graph saved, declarations checked.
@Suite struct DiscoverTaskTests {
    static func makeTask(_ toml: String, files: [String: String] = [:]) throws -> String {
        let dir = try #require(FileIO.realPath(Harness.makeTemporaryDirectory())) + "/report"
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        try toml.write(toFile: dir + "/task.toml", atomically: true, encoding: .utf8)
        for (name, text) in files { try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8) }
        return dir
    }

    @Test func runsTheTaskSavesTheGraphAndChecksDeclarations() throws {
        let dir = try Self.makeTask("""
            run = "mkdir -p out && cat data/a.csv extra.txt > out/report.txt && echo $GREETING > out/log.txt"
            env = { GREETING = "hello" }
            inputs = ["data/*.csv", "config.ini"]
            outputs = ["out/report.txt"]
            [sandbox]
            network = "none"
            """, files: ["data/a.csv": "x,1\n", "extra.txt": "e\n"])
        defer { Harness.removeTree((dir as NSString).deletingLastPathComponent) }
        let r = Harness.run([Harness.binary, "discover", "--format", "text", dir])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("task:report"))
        #expect((try? String(contentsOfFile: dir + "/out/log.txt", encoding: .utf8)) == "hello\n", "env from task.toml")
        #expect(FileManager.default.fileExists(atPath: dir + "/.dgrun/graph.json"))
        #expect(r.stderr.contains("inputs used but not declared in task.toml: extra.txt"), "\(r.stderr)")
        #expect(r.stderr.contains("inputs declared but not used: config.ini"))
        #expect(r.stderr.contains("outputs written but not declared in task.toml: out/log.txt"))
        #expect(r.stdout.contains("network:none"), "task.toml's network = none holds")
    }

    @Test func badTaskDirectoriesAre125() throws {
        let broken = try Self.makeTask("command = [\"true\"]\n[limits]\nmemroy = \"1g\"\n")
        defer { Harness.removeTree((broken as NSString).deletingLastPathComponent) }
        let r = Harness.run([Harness.binary, "discover", broken])
        #expect(r.status == 125)
        #expect(r.stderr.contains("task.toml: unknown key \"memroy\" in [limits]"), "\(r.stderr)")
        let empty = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(empty) }
        let none = Harness.run([Harness.binary, "discover", empty])
        #expect(none.status == 125)
        #expect(none.stderr.contains("has no task.toml"))
        #expect(Harness.run([Harness.binary, "discover", empty, "--", "true"]).status == 125)
    }
}
