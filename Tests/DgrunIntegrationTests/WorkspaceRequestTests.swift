import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Every exec option reaches every task of a workspace and the upstream tasks of `exec TASKDIR`
/// (the engine runs them in one process with the caller's whole request): one test per option class.
@Suite(.serialized) struct WorkspaceRequestTests {
    /// A workspace `up` → `down`: up writes out.txt with `upRun`, down reads it.
    static func workspace(up upRun: String, down downRun: String = "cat ../up/out.txt > copy.txt") -> String {
        let dir = Harness.makeTemporaryDirectory()
        for (name, toml) in [("up", "run = \"\(upRun)\"\noutputs = [\"out.txt\"]\n"),
                             ("down", "run = \"\(downRun)\"\ninputs = [\"../up/out.txt\"]\n")] {
            mkdir(dir + "/" + name, 0o755)
            try! toml.write(toFile: dir + "/" + name + "/task.toml", atomically: false, encoding: .utf8)
        }
        return dir
    }

    /// The same flags on the workspace and on the downstream task alone (its upstream runs first).
    static func both(_ flags: [String], up: String, down: String = "cat ../up/out.txt > copy.txt",
                     _ check: (RunResult, String) -> Void) {
        for target in ["", "/down"] {
            let ws = workspace(up: up, down: down)
            defer { Harness.removeTree(ws) }
            check(Harness.dgrun(["exec"] + flags + [ws + target]), target.isEmpty ? "workspace" : "upstream")
        }
    }

    @Test(.enabled(if: Harness.canLimit, Comment(rawValue: Harness.limitSkipReason)))
    func memoryLimitReachesEveryTask() {
        Self.both(["--memory", "32m", "--tune", "off"], up: "head -c 200m /dev/zero | tail > /dev/null && echo x > out.txt") { r, how in
            #expect(r.status == 137, "\(how): \(r.stderr)")
            #expect(r.stderr.contains("out of memory"), "\(how): \(r.stderr)")
            #expect(r.stderr.contains("down: not started"), "\(how): \(r.stderr)")
        }
    }

    @Test func timeoutReachesEveryTask() {
        let started = Clock.monotonic()
        Self.both(["--timeout", "1s"], up: "sleep 4; echo x > out.txt") { r, how in
            #expect(r.status == 124, "\(how): \(r.stderr)")
        }
        #expect(Clock.monotonic() - started < 6, "each run should stop after 1 s, not 4")
    }

    @Test func networkNoneReachesEveryTask() throws {
        // A listener on the host's loopback: reachable with the host network, not from --net none.
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(server) }
        var address = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(server, $0, length) } }
        listen(server, 16)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(server, $0, &length) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let probe = "(exec 3<>/dev/tcp/127.0.0.1/\(port)) 2>/dev/null && echo reached > out.txt || echo blocked > out.txt"
        guard Harness.hasCommand("bash") else { return }
        for target in ["", "/down"] {
            let ws = Self.workspace(up: "bash -c '\(probe)'")
            defer { Harness.removeTree(ws) }
            let r = Harness.dgrun(["exec", "--net", "none", ws + target])
            #expect(r.status == 0, "\(r.stderr)")
            #expect((try? String(contentsOfFile: ws + "/up/out.txt", encoding: .utf8)) == "blocked\n", "\(target): \(r.stderr)")
        }
    }

    @Test func bindsReachEveryTask() throws {
        let shared = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(shared) }
        try "from the host\n".write(toFile: shared + "/in.txt", atomically: false, encoding: .utf8)
        // /tmp is private in the sandbox: the file is there only through --ro.
        Self.both(["--ro", shared], up: "cat \(shared)/in.txt > out.txt") { r, how in
            #expect(r.status == 0, "\(how): \(r.stderr)")
        }
    }

    @Test func environmentReachesEveryTask() {
        Self.both(["-e", "DGRUN_TEST_VALUE=42"], up: "test \\\"$DGRUN_TEST_VALUE\\\" = 42 && echo x > out.txt") { r, how in
            #expect(r.status == 0, "\(how): \(r.stderr)")
        }
    }

    @Test func profileReachesEveryTask() {
        // strict: a new session and a cleared environment.
        Self.both(["--profile", "strict", "-e", "KEEP=1"], up: "test -z \\\"$DGRUN_LEAK\\\" && echo x > out.txt") { r, how in
            #expect(r.status == 0, "\(how): \(r.stderr)")
        }
    }

    @Test(.enabled(if: Harness.canLimit, Comment(rawValue: Harness.limitSkipReason)))
    func tuningOffReachesEveryTask() throws {
        let ws = Self.workspace(up: "echo x > out.txt")
        defer { Harness.removeTree(ws) }
        let report = ws + "/report.json"
        let r = Harness.dgrun(["exec", "--memory", "64m", "--tune", "off", "--report", report, ws + "/down"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any]
        let limits = json?["limits"] as? [String: Any]
        #expect(limits?["memory_bytes"] as? Int == 64 << 20)
        #expect((json?["adjustments"] as? [Any])?.isEmpty == true)
    }

    @Test func aBadValueFailsBeforeAnythingStarts() {
        let ws = Self.workspace(up: "echo x > out.txt")
        defer { Harness.removeTree(ws) }
        for flags in [["--cpus", "x"], ["--memory", "lots"], ["--timeout", "soon"], ["--pids", "0"], ["--pool-cpus", "x"]] {
            let r = Harness.dgrun(["exec"] + flags + [ws])
            #expect(r.status == 125, "\(flags): \(r.stderr)")
            #expect(r.stderr.contains(flags[0]), "\(flags): \(r.stderr)")
            #expect(!FileIO.exists(ws + "/up/.dgrun"), "\(flags) left state behind")
        }
    }

    @Test func discoverJSONOnStdoutIsOnlyTheGraph() throws {
        let r = Harness.dgrun(["discover", "--format", "json", "--", "sh", "-c", "echo chatty; echo more chat"])
        #expect(r.status == 0, "\(r.stderr)")
        let graph = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        #expect(graph?["schema"] as? String == "dgrun.graph/1")
        #expect(r.stderr.contains("chatty"))
        // With -o FILE the task's stdout stays on stdout.
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        let o = Harness.dgrun(["discover", "-o", dir + "/g.json", "--", "sh", "-c", "echo chatty"])
        #expect(o.stdout == "chatty\n", "\(o.stderr)")
    }

    @Test func aSignalToDgrunStopsEveryRunningTaskWithinTheStopTimeout() throws {
        // Two independent tasks, one of which ignores the signal: both stop (the stubborn one
        // killed after --stop-timeout), both are recorded as interrupted, nothing is left.
        let ws = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(ws) }
        let marker = "dgrun-ws-cancel-\(getpid())"
        for (name, run) in [("polite", "sleep 30; : \(marker)"), ("stubborn", "trap '' INT TERM; sleep 31; : \(marker)")] {
            mkdir(ws + "/" + name, 0o755)
            try "run = \"\(run)\"\n".write(toFile: ws + "/" + name + "/task.toml", atomically: false, encoding: .utf8)
        }
        let started = Date()
        let r = Harness.dgrun(["exec", "--stop-timeout", "1s", ws]) { pid in
            _ = Harness.waitUntil(timeout: 10) { Harness.processes(containing: marker).count >= 2 }
            usleep(200_000)
            kill(pid, SIGINT)
        }
        #expect(Date().timeIntervalSince(started) < 10, "the workspace run did not stop when asked")
        #expect(r.status != 0, "\(r.stderr)")
        #expect(Harness.waitUntil(timeout: 2) { Harness.processes(containing: marker).isEmpty })
        for name in ["polite", "stubborn"] {
            let history = Harness.dgrun(["history", ws + "/" + name])
            #expect(history.stdout.contains("interrupted"), "\(name): \(history.stdout) \(history.stderr)")
            let status = Harness.dgrun(["status", ws + "/" + name])
            #expect(!status.stdout.contains("up to date"), "\(name): \(status.stdout)")
        }
    }
}
