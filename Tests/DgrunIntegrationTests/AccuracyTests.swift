import DgrunSystem
import Foundation
import Testing

/// discover against an independent tracer (strace) on real programs that are not part of this
/// repository: every file a workload opened or executed must be a node (recall 100%), and every
/// traced node must be a path the workload really touched (precision). The sandbox has its own
/// /proc, /dev and /tmp, so paths there are left out of the comparison.
@Suite(.enabled(if: Harness.hasCommand("strace"), "needs strace (apt-get install strace)"))
struct AccuracyTests {
    static let privateTrees = ["/proc/", "/dev/", "/sys/", "/tmp/"]

    struct StraceSets {
        /// Existing regular files that an open or exec succeeded on.
        var opened: Set<String> = []
        /// Every path any file syscall named, canonical where it exists.
        var touched: Set<String> = []
        /// Endpoints a connect reached (or was reaching: EINPROGRESS), as dgrun names services.
        var connected: Set<String> = []
    }

    /// `connect(3<TCP:[…]>, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("127.0.0.1")}, 16) = 0`
    /// as `tcp://127.0.0.1:80`; nil for a connect that failed, or an address it cannot read.
    static func endpoint(ofConnect line: Substring) -> String? {
        guard line.contains(" = 0") || line.contains("EINPROGRESS") else { return nil }
        func between(_ start: String, _ end: String) -> String? {
            guard let a = line.range(of: start), let b = line[a.upperBound...].range(of: end) else { return nil }
            return String(line[a.upperBound..<b.lowerBound])
        }
        let scheme = line.contains("<UDP") || line.contains("<UDPv6") ? "udp://" : "tcp://"
        if line.contains("sa_family=AF_UNIX") {
            if let abstract = between("sun_path=@\"", "\"") { return "unix:@" + abstract }
            return between("sun_path=\"", "\"").map { "unix:" + (FileIO.realPath($0) ?? $0) }
        }
        if line.contains("sa_family=AF_INET6") {
            guard let port = between("sin6_port=htons(", ")"), let text = between("inet_pton(AF_INET6, \"", "\"") else { return nil }
            var address = in6_addr()
            guard inet_pton(AF_INET6, text, &address) == 1 else { return nil }
            let bytes = withUnsafeBytes(of: address) { Array($0) }
            let words = stride(from: 0, to: 16, by: 2).map { String(Int(bytes[$0]) << 8 | Int(bytes[$0 + 1]), radix: 16) }
            return scheme + "[" + words.joined(separator: ":") + "]:" + port
        }
        guard line.contains("sa_family=AF_INET"), let port = between("sin_port=htons(", ")"),
              let address = between("inet_addr(\"", "\"") else { return nil }
        return scheme + address + ":" + port
    }

    /// Runs `command` under `strace -f -y` in `cwd`. Relative paths are resolved against the
    /// directory fd strace prints (`openat(3</usr/include>, "linux", ...)`) or `cwd`.
    static func strace(_ command: [String], cwd: String) -> StraceSets {
        let log = cwd + "/.strace.log"
        defer { unlink(log) }
        Harness.run(["strace", "-f", "-yy", "-qq", "-s", "4096", "-e", "trace=%file,%process,connect", "-o", log] + command, cwd: cwd)
        var sets = StraceSets()
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") {
            guard let open = line.firstIndex(of: "(") else { continue }
            let name = line[..<open].split(separator: " ").last.map(String.init) ?? ""
            if name == "connect" {
                if let endpoint = endpoint(ofConnect: line) { sets.connected.insert(endpoint) }
                continue
            }
            guard let quote = line[open...].firstIndex(of: "\"") else { continue }
            let rest = line[line.index(after: quote)...]
            guard let end = rest.firstIndex(of: "\"") else { continue }
            var path = String(rest[..<end])
            if !path.hasPrefix("/") {
                // A directory fd: `N</path>` before the quoted name.
                let before = line[line.index(after: open)..<quote]
                if let lt = before.firstIndex(of: "<"), let gt = before.lastIndex(of: ">"), lt < gt {
                    path = String(before[before.index(after: lt)..<gt]) + "/" + path
                } else {
                    path = cwd + "/" + path
                }
            }
            // The sandbox's /proc, /dev, /tmp are its own; /proc/self here would be this test.
            if privateTrees.contains(where: { path.hasPrefix($0) }) { continue }
            let real = FileIO.realPath(path) ?? path
            // A call that does not follow the last link touches the link itself.
            let slash = path.lastIndex(of: "/") ?? path.startIndex
            let parent = FileIO.realPath(String(path[..<slash]).isEmpty ? "/" : String(path[..<slash]))
            sets.touched.formUnion([path, real] + (parent.map { [$0 + String(path[slash...])] } ?? []))
            let succeeded = !line.contains(" = -1 ") && !line.hasSuffix("<unfinished ...>")
            if succeeded, ["open", "openat", "openat2", "creat", "execve", "execveat"].contains(name),
               !line.contains("O_DIRECTORY"), !privateTrees.contains(where: { real.hasPrefix($0) }) {
                var st = stat()
                if stat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { sets.opened.insert(real) }
            }
        }
        return sets
    }

    /// (every file node, the nodes with traced evidence that exist now, the service refs).
    static func discovered(_ command: [String], cwd: String) -> (all: Set<String>, traced: Set<String>, services: Set<String>, status: Int32) {
        let graphPath = cwd + "/.graph.json"
        defer { unlink(graphPath) }
        let r = Harness.run([Harness.binary, "discover", "--net", "host", "-o", graphPath, "--"] + command, cwd: cwd)
        guard let data = FileManager.default.contents(atPath: graphPath),
              let graph = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return ([], [], [], r.status) }
        var all: Set<String> = [], traced: Set<String> = [], services: Set<String> = []
        for node in graph["nodes"] as? [[String: Any]] ?? [] {
            if node["kind"] as? String == "service", let ref = node["ref"] as? String { services.insert(ref) }
            guard let ref = node["ref"] as? String, ref.hasPrefix("/") else { continue }
            all.insert(ref)
            let evidence = node["evidence"] as? [String] ?? []
            if evidence.contains(where: { $0.hasPrefix("traced:") }), FileManager.default.fileExists(atPath: ref) { traced.insert(ref) }
        }
        return (all, traced, services, r.status)
    }

    static func check(_ name: String, _ command: [String], prepare: (String) throws -> Void = { _ in }) throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        try prepare(work)
        let reference = strace(command, cwd: work)
        let found = discovered(command, cwd: work)
        #expect(found.status == 0, "\(name): discover failed")
        #expect(reference.opened.count >= 3, "\(name): strace saw the workload")
        let missed = reference.opened.subtracting(found.all)
        #expect(missed.isEmpty, "\(name): recall below 100%, missed \(missed.sorted())")
        let private_ = found.traced.filter { path in privateTrees.contains { path.hasPrefix($0) } || path.hasPrefix(work + "/.") }
        let invented = found.traced.subtracting(reference.touched).subtracting(private_)
        let precision = 1 - Double(invented.count) / Double(max(1, found.traced.count))
        #expect(precision >= 0.99, "\(name): precision \(precision), never touched: \(invented.sorted().prefix(20))")
        let unseen = reference.connected.subtracting(found.services)
        #expect(unseen.isEmpty, "\(name): endpoints connected to but not service nodes: \(unseen.sorted())")
        print("accuracy \(name): strace opened \(reference.opened.count) files, \(missed.count) missed; \(found.traced.count) traced nodes, "
              + "precision \(precision); \(reference.connected.count) endpoints connected, \(unseen.count) not service nodes")
    }

    @Test(.enabled(if: Harness.hasCommand("cc"), "needs gcc"))
    func compiler() throws {
        try Self.check("gcc", ["cc", "-O2", "-c", "prog.c", "-o", "prog.o"]) { work in
            try "#include <stdio.h>\n#include <math.h>\nint main(void) { printf(\"%f\\n\", sqrt(2.0)); return 0; }\n"
                .write(toFile: work + "/prog.c", atomically: true, encoding: .utf8)
        }
    }

    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func interpreter() throws {
        try Self.check("python3", ["python3", "-c", "import json, sqlite3, decimal, email.parser; print(json.dumps([1]))"])
    }

    @Test func shellPipeline() throws {
        try Self.check("pipeline", ["sh", "-c", "find /usr/include/linux -name '*.h' | sort | head -40 | xargs cat | wc -l > count.txt"])
    }

    @Test(.enabled(if: Harness.hasCommand("make") && Harness.hasCommand("cc"), "needs make and gcc"))
    func buildTool() throws {
        // -B: every target is made on each of the two runs (strace's, then discover's).
        try Self.check("make", ["make", "-B", "-s", "-j2"]) { work in
            for i in 0..<4 {
                try "int f\(i)(int x) { return x * \(i); }\n".write(toFile: work + "/f\(i).c", atomically: true, encoding: .utf8)
            }
            try "int f0(int); int main(void) { return f0(0); }\n".write(toFile: work + "/main.c", atomically: true, encoding: .utf8)
            try "app: main.o f0.o f1.o f2.o f3.o\n\tcc -o app $^\n%.o: %.c\n\tcc -O2 -c $< -o $@\n"
                .write(toFile: work + "/Makefile", atomically: true, encoding: .utf8)
        }
    }

    /// A network client: curl fetching from a python http.server on loopback. Every endpoint it
    /// connected to must be a service node, as well as every file it opened a node.
    @Test(.enabled(if: Harness.hasCommand("curl") && Harness.hasCommand("python3"), "needs curl and python3"))
    func networkClient() throws {
        let served = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(served) }
        try "hello\n".write(toFile: served + "/page.txt", atomically: true, encoding: .utf8)
        let port = ProvisionTests.freePort()
        let server = Harness.start(["python3", "-m", "http.server", "--bind", "127.0.0.1", String(port)], cwd: served)
        defer { Harness.stop(server) }
        for _ in 0..<100 where !ProvisionTests.accepts(port) { usleep(50_000) }
        try Self.check("curl", ["curl", "-sf", "-o", "page.txt", "http://127.0.0.1:\(port)/page.txt"])
    }

    @Test(.enabled(if: Harness.hasCommand("busybox"), "needs busybox-static"))
    func staticBinary() throws {
        let busybox = try #require(FileIO.realPath("/bin/busybox") ?? FileIO.realPath("/usr/bin/busybox"))
        try Self.check("busybox", [busybox, "sh", "-c", "cat /etc/hostname /etc/os-release > out.txt; ls /usr/share > list.txt"])
    }
}
