import DgrunStore
import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `dgrun exec TASKDIR|WORKSPACE` on a real multi-task pipeline (examples/pipeline: generate data,
/// build a shared library, build a tool against it, run the tool on the data, summarise).
@Suite(.serialized) struct WorkspaceTests {
    /// Without root (or a writable cgroup) the tasks' [limits] fall back to rlimits.
    static var limitFlags: [String] { Harness.canLimit ? [] : ["--limits", "best-effort"] }

    /// A fresh copy of examples/pipeline, without any state or outputs.
    static func pipeline() -> String {
        let dir = Harness.makeTemporaryDirectory()
        Harness.run(["cp", "-R", Harness.repositoryRoot + "/examples/pipeline/.", dir])
        Harness.run(["sh", "-c", "rm -rf */.dgrun */out"], cwd: dir)
        return dir
    }

    /// Which tasks ran and which were up to date, from dgrun's stderr lines ("dgrun: NAME: running: ...").
    static func outcome(_ stderr: String) -> (ran: Set<String>, upToDate: Set<String>) {
        var ran: Set<String> = [], upToDate: Set<String> = []
        for line in stderr.split(separator: "\n") where line.hasPrefix("dgrun: ") {
            let parts = line.dropFirst(7).split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            if parts[1].hasPrefix(" running") { ran.insert(String(parts[0])) }
            if parts[1].hasPrefix(" up to date") { upToDate.insert(String(parts[0])) }
        }
        return (ran, upToDate)
    }

    func exec(_ dir: String, _ extra: [String] = []) -> RunResult {
        Harness.run([Harness.binary, "exec"] + Self.limitFlags + extra + [dir])
    }

    @Test(.enabled(if: Harness.hasCommand("cc"), "needs a C compiler (gcc)"))
    func rerunsOnlyWhatDependsOnAChange() throws {
        let ws = Self.pipeline()
        defer { Harness.removeTree(ws) }
        let all: Set = ["gen", "lib", "tool", "apply", "summary"]

        var r = exec(ws)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(Self.outcome(r.stderr).ran == all)
        #expect(FileIO.exists(ws + "/summary/out/summary.txt"))

        r = exec(ws)
        #expect(r.status == 0)
        #expect(Self.outcome(r.stderr).ran.isEmpty, "\(r.stderr)")
        #expect(Self.outcome(r.stderr).upToDate == all)

        // A new input of gen: gen and everything downstream of its data, not the library or tool.
        try "rows 3000\nseed 7\n".write(toFile: ws + "/gen/params.txt", atomically: false, encoding: .utf8)
        r = exec(ws)
        #expect(Self.outcome(r.stderr).ran == ["gen", "apply", "summary"], "\(r.stderr)")
        #expect(Self.outcome(r.stderr).upToDate == ["lib", "tool"])

        // Touching without changing content re-runs nothing (stat moved, hash did not).
        Harness.run(["touch", ws + "/gen/params.txt", ws + "/lib/score.c"])
        r = exec(ws)
        #expect(Self.outcome(r.stderr).ran.isEmpty, "\(r.stderr)")

        // A deleted output re-runs its producer, and only it when it comes back the same.
        unlink(ws + "/gen/out/data.txt")
        r = exec(ws, ["--cache", "off"])
        #expect(Self.outcome(r.stderr).ran == ["gen"], "\(r.stderr)")
        #expect(r.stderr.contains("deleted since the task wrote it"))
        // With the cache (the default), it comes back from there: nothing runs (issue 12).
        unlink(ws + "/gen/out/data.txt")
        r = exec(ws)
        #expect(Self.outcome(r.stderr).ran.isEmpty, "\(r.stderr)")
        #expect(r.stderr.contains("gen: restored from cache"), "\(r.stderr)")

        // A rebuilt shared library re-runs the tool linked against it and the task that loads it.
        try "int score(int id, int value) { return (value * 37 + id) % 997; }\n"
            .write(toFile: ws + "/lib/score.c", atomically: false, encoding: .utf8)
        r = exec(ws)
        #expect(Self.outcome(r.stderr).ran == ["lib", "tool", "apply", "summary"], "\(r.stderr)")
        #expect(r.stderr.contains("libscore.so"))

        // A single task of the workspace brings what it reads up to date first.
        try "rows 2000\nseed 5\n".write(toFile: ws + "/gen/params.txt", atomically: false, encoding: .utf8)
        r = exec(ws + "/apply")
        #expect(r.status == 0)
        #expect(Self.outcome(r.stderr).ran == ["gen", "apply"], "\(r.stderr)")
        let status = Harness.run([Harness.binary, "status", ws])
        #expect(status.status == 1, "summary is stale now: \(status.stdout)")
        #expect(status.stdout.contains("summary: stale"))
        let explain = Harness.run([Harness.binary, "explain", ws + "/summary"])
        #expect(explain.stdout.contains("apply/out/scores.txt"), "\(explain.stdout)")

        let history = Harness.run([Harness.binary, "history", "--json", ws + "/gen"])
        let runs = try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(runs.count == 5, "four runs and one restore")
        #expect(runs.allSatisfy { $0["status"] as? String == "finished" && $0["exit_code"] as? Int == 0 })
        #expect(runs.filter { $0["restored_from"] as? String == "local cache" }.count == 1, "\(history.stdout)")
        #expect((runs.first?["outputs"] as? [String: String])?.keys.contains(ws + "/gen/out/data.txt") == true)
    }

    /// Only a service the task needed from outside can block it. Without HOME (as under CI) python
    /// asks glibc for the home directory and glibc tries nscd's socket, which is absent here; a
    /// task's own servers are gone once it ends. Neither may block the next exec.
    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func absentSocketsAndTheTasksOwnServersDoNotBlock() throws {
        let task = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(task) }
        try """
        run = "python3 serve.py && echo ran >> ran.log"
        [sandbox]
        network = "host"
        """.write(toFile: task + "/task.toml", atomically: false, encoding: .utf8)
        try """
        import os, socket
        os.path.expanduser("~")
        t = socket.socket(); t.bind(("127.0.0.1", 0)); t.listen()
        socket.create_connection(t.getsockname()).close()
        u = socket.socket(socket.AF_UNIX); u.bind("srv.sock"); u.listen()
        socket.socket(socket.AF_UNIX).connect("srv.sock")
        os.unlink("srv.sock")
        try:
            socket.socket(socket.AF_UNIX).connect("/run/dgrun-test-absent.sock")
        except OSError:
            pass
        """.write(toFile: task + "/serve.py", atomically: false, encoding: .utf8)
        let withoutHome = ["-u", "HOME", Harness.binary, "exec"] + Self.limitFlags + [task]
        var r = Harness.run(withoutHome)
        #expect(r.status == 0, "\(r.stderr)")
        r = Harness.run(withoutHome)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("up to date"), "\(r.stderr)")
        #expect(try String(contentsOfFile: task + "/ran.log", encoding: .utf8) == "ran\n")
    }

    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func unavailableServiceOrMissingInputBlocksBeforeAnythingStarts() throws {
        let task = Harness.makeTemporaryDirectory()
        let external = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(task); Harness.removeTree(external) }
        var listener = try LoopbackListener(host: "127.0.0.2")
        let port = listener.port
        try "42\n".write(toFile: external + "/reference.txt", atomically: false, encoding: .utf8)
        try """
        run = "python3 -c \\"import socket; socket.create_connection(('127.0.0.2', \(port)), 2).close()\\" && cat \(external)/reference.txt >> ran.log"
        inputs = ["\(external)/reference.txt"]
        [sandbox]
        network = "host"
        """.write(toFile: task + "/task.toml", atomically: false, encoding: .utf8)

        var r = exec(task)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(exec(task).status == 0)
        #expect(try String(contentsOfFile: task + "/ran.log", encoding: .utf8) == "42\n")

        listener.close()
        r = exec(task)
        #expect(r.status == 122, "\(r.stderr)")
        #expect(r.stderr.contains("tcp://127.0.0.2:\(port)"))
        #expect(r.stderr.contains("nothing was started"))
        #expect(try String(contentsOfFile: task + "/ran.log", encoding: .utf8) == "42\n", "the task must not have started")
        let status = Harness.run([Harness.binary, "status", task])
        #expect(status.status == 122)
        #expect(status.stdout.contains("unavailable"))

        listener = try LoopbackListener(port: port, host: "127.0.0.2")
        defer { listener.close() }
        #expect(exec(task).status == 0)

        unlink(external + "/reference.txt")
        r = exec(task)
        #expect(r.status == 122)
        #expect(r.stderr.contains(external + "/reference.txt"), "\(r.stderr)")
        #expect(try String(contentsOfFile: task + "/ran.log", encoding: .utf8) == "42\n")

        // Blocked runs are in the history, with what blocked them.
        let history = Harness.run([Harness.binary, "history", task])
        #expect(history.stdout.contains("blocked"))
    }

    /// A chain of `n` tasks, each appending its number to its producer's out.txt (bench/scale.sh's shape).
    static func chain(_ n: Int) throws -> String {
        let ws = Harness.makeTemporaryDirectory()
        for i in 0..<n {
            let dir = ws + "/t\(i)"
            mkdir(dir, 0o755)
            let toml = i == 0 ? "run = \"echo 0 > out.txt\"\noutputs = [\"out.txt\"]\n"
                : "run = \"cat ../t\(i - 1)/out.txt > out.txt; echo \(i) >> out.txt\"\ninputs = [\"../t\(i - 1)/out.txt\"]\noutputs = [\"out.txt\"]\n"
            try toml.write(toFile: dir + "/task.toml", atomically: false, encoding: .utf8)
        }
        return ws
    }

    /// dgrun's lines about tasks, in order (the closing summary line aside).
    static func taskLines(_ stderr: String) -> [String] {
        stderr.split(separator: "\n").map(String.init).filter { $0.hasPrefix("dgrun: t") }
    }

    /// The chain's no-op checks every task ahead, at once: the same events in the same (dependency)
    /// order as one after another, exit 0. A stale task in the middle runs, then everything after
    /// it, in order, with the same outputs as a first run.
    /// The change and modification times and the size of each task's store files.
    static func storeStamps(_ ws: String, tasks n: Int) -> [String] {
        (0..<n).flatMap { t in
            ["state.db", "state.db-wal", "state.db-shm"].map { name in
                let path = ws + "/t\(t)/.dgrun/" + name
                var st = stat()
                guard stat(path, &st) == 0 else { return path + " missing" }
                return "\(path) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec) \(st.st_size)"
            }
        }
    }

    @Test func aChainNoOpAndAStaleTaskInTheMiddle() throws {
        let n = 12
        let ws = try Self.chain(n)
        defer { Harness.removeTree(ws) }
        var r = exec(ws, ["--cache", "off"])
        #expect(r.status == 0, "\(r.stderr)")
        let expected = (0..<n).map(String.init).joined(separator: "\n") + "\n"
        #expect(try String(contentsOfFile: ws + "/t\(n - 1)/out.txt", encoding: .utf8) == expected)

        var stamps: [String] = []
        for round in 0..<3 {
            if round == 1 { stamps = Self.storeStamps(ws, tasks: n); usleep(20_000) }
            r = exec(ws)
            #expect(r.status == 0, "\(r.stderr)")
            let lines = Self.taskLines(r.stderr)
            #expect(lines.count == n, "\(r.stderr)")
            for (i, line) in lines.enumerated() { #expect(line.hasPrefix("dgrun: t\(i): up to date ("), "\(r.stderr)") }
        }
        // Issue 13: a no-op writes nothing: no file of any task's store changed, its WAL's index included.
        #expect(Self.storeStamps(ws, tasks: n) == stamps)

        // t5's command changes: it and everything after it run, each after its producer.
        try "run = \"cat ../t4/out.txt > out.txt; echo five >> out.txt\"\ninputs = [\"../t4/out.txt\"]\noutputs = [\"out.txt\"]\n"
            .write(toFile: ws + "/t5/task.toml", atomically: false, encoding: .utf8)
        r = exec(ws, ["--cache", "off"])
        #expect(r.status == 0, "\(r.stderr)")
        let outcome = Self.outcome(r.stderr)
        #expect(outcome.upToDate == Set((0..<5).map { "t\($0)" }), "\(r.stderr)")
        #expect(outcome.ran == Set((5..<n).map { "t\($0)" }), "\(r.stderr)")
        let running = Self.taskLines(r.stderr).filter { $0.contains(": running") }.map { $0.dropFirst(8).prefix { $0 != ":" } }
        #expect(running == (5..<n).map { Substring("\($0)") }, "in dependency order: \(r.stderr)")
        let changed = (0..<n).map { $0 == 5 ? "five" : String($0) }.joined(separator: "\n") + "\n"
        #expect(try String(contentsOfFile: ws + "/t\(n - 1)/out.txt", encoding: .utf8) == changed)
        r = exec(ws)
        #expect(r.status == 0 && Self.outcome(r.stderr).upToDate.count == n, "\(r.stderr)")
    }

    /// More tasks than the stores dgrun may keep open under a descriptor limit it cannot raise
    /// (128, soft and hard: room for 16): the first run and the no-op complete, every task's
    /// output right. Every store open at once failed at the usual 1,024 with 1,000 tasks.
    @Test func aWorkspaceLargerThanItsDescriptorLimitAllows() throws {
        let n = 40
        let ws = try Self.chain(n)
        defer { Harness.removeTree(ws) }
        let command = ([Harness.binary, "exec"] + Self.limitFlags + ["--cache", "off", ws]).map { "'\($0)'" }.joined(separator: " ")
        var r = Harness.run(["/bin/sh", "-c", "ulimit -n 128 && exec " + command])
        #expect(r.status == 0, "\(r.stderr)")
        let expected = (0..<n).map(String.init).joined(separator: "\n") + "\n"
        #expect(try String(contentsOfFile: ws + "/t\(n - 1)/out.txt", encoding: .utf8) == expected)
        r = Harness.run(["/bin/sh", "-c", "ulimit -n 128 && exec " + command])
        #expect(r.status == 0 && Self.outcome(r.stderr).upToDate.count == n, "\(r.stderr)")
    }

    /// dgrun raises its own soft descriptor limit for its stores; the command gets the one dgrun was given.
    @Test func theCommandGetsTheDescriptorLimitDgrunWasGiven() throws {
        let command = ([Harness.binary, "exec"] + Self.limitFlags + ["--", "/bin/sh", "-c", "ulimit -Sn"]).map { "'\($0)'" }.joined(separator: " ")
        let r = Harness.run(["/bin/sh", "-c", "ulimit -Sn 512 && exec " + command])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "512\n", "\(r.stdout) \(r.stderr)")
    }

    /// A task in the middle of a chain that is blocked (an input nobody produces is gone): 122,
    /// the tasks before it up to date, the tasks after it not started, as without checks ahead.
    @Test func aBlockedTaskInAChain() throws {
        let ws = try Self.chain(6)
        defer { Harness.removeTree(ws) }
        try "seed\n".write(toFile: ws + "/t3/seed.txt", atomically: false, encoding: .utf8)
        try "run = \"cat ../t2/out.txt seed.txt > out.txt\"\ninputs = [\"../t2/out.txt\", \"seed.txt\"]\noutputs = [\"out.txt\"]\n"
            .write(toFile: ws + "/t3/task.toml", atomically: false, encoding: .utf8)
        var r = exec(ws)
        #expect(r.status == 0, "\(r.stderr)")
        unlink(ws + "/t3/seed.txt")
        r = exec(ws)
        #expect(r.status == 122, "\(r.stderr)")
        #expect(Self.outcome(r.stderr).upToDate == ["t0", "t1", "t2"], "\(r.stderr)")
        #expect(r.stderr.contains("dgrun: t3: blocked"), "\(r.stderr)")
        for i in 4..<6 { #expect(r.stderr.contains("dgrun: t\(i): not started"), "\(r.stderr)") }
    }

    @Test func concurrentExecsKeepTheStoreConsistent() throws {
        let task = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(task) }
        try "run = \"sleep 0.2; date +%s%N >> runs.log\"\n".write(toFile: task + "/task.toml", atomically: false, encoding: .utf8)
        let group = DispatchGroup()
        let results = ResultBox()
        for _ in 0..<4 {
            DispatchQueue.global().async(group: group) {
                results.append(Harness.run([Harness.binary, "exec", "--force"] + Self.limitFlags + [task]))
            }
        }
        group.wait()
        #expect(results.all.allSatisfy { $0.status == 0 }, "\(results.all.map(\.stderr))")
        let store = try Store(directory: task + "/.dgrun", relocation: PathRelocation(taskDirectory: task, workspaceRoot: nil))
        #expect(try store.consistencyProblems().isEmpty)
        let runs = try store.runs(task: task)
        #expect(runs.count == 4)
        #expect(runs.allSatisfy { $0.status == .finished })
        // They took turns: each run ended before the next began.
        let ordered = runs.sorted { $0.startedAt < $1.startedAt }
        for (a, b) in zip(ordered, ordered.dropFirst()) { #expect(a.finishedAt! <= b.startedAt + 0.001) }
        let lines = try String(contentsOfFile: task + "/runs.log", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 4)
    }

    @Test func killNineDuringARunLeavesTheStoreConsistent() throws {
        let task = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(task) }
        let marker = "dgrun-kill9-\(getpid())"
        try "run = \"if [ -e slow ]; then sleep 30; fi; echo done > out.txt # \(marker)\"\n"
            .write(toFile: task + "/task.toml", atomically: false, encoding: .utf8)
        try "".write(toFile: task + "/slow", atomically: false, encoding: .utf8)
        let killer = Thread {
            _ = Harness.waitUntil(timeout: 20) { !Harness.processes(containing: marker).isEmpty }
            for pid in Harness.processes(containing: "exec") where Harness.processes(containing: task).contains(pid) {
                kill(pid, SIGKILL)
            }
        }
        killer.start()
        let first = Harness.run([Harness.binary, "exec"] + Self.limitFlags + [task])
        #expect(first.status == 128 + SIGKILL)
        #expect(Harness.waitUntil(timeout: 10) { Harness.processes(containing: marker).isEmpty }, "the sandbox died with dgrun")

        let store = try Store(directory: task + "/.dgrun", relocation: PathRelocation(taskDirectory: task, workspaceRoot: nil))
        #expect(try store.consistencyProblems().isEmpty)
        #expect(try store.runs(task: task).first?.status == .running)
        #expect(try store.dependencies(task: task).isEmpty, "a killed run records no dependencies")

        unlink(task + "/slow")
        let second = Harness.run([Harness.binary, "exec"] + Self.limitFlags + [task])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stderr.contains("recorded as abandoned"))
        let runs = try store.runs(task: task)
        #expect(runs.map(\.status) == [.finished, .abandoned])
        #expect(Harness.run([Harness.binary, "exec"] + Self.limitFlags + [task]).stderr.contains("up to date"))
    }

    @Test func badInputIsRejectedWithoutState() throws {
        let ws = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(ws) }
        mkdir(ws + "/a", 0o755)
        try "run = \"true\"\nbogus = 1\n".write(toFile: ws + "/a/task.toml", atomically: false, encoding: .utf8)
        var r = exec(ws)
        #expect(r.status == 125)
        #expect(r.stderr.contains("unknown key \"bogus\""))
        #expect(!FileIO.exists(ws + "/a/.dgrun"))
        r = exec(ws + "/nonexistent")
        #expect(r.status == 125)
        let empty = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(empty) }
        r = exec(empty)
        #expect(r.status == 125)
        #expect(r.stderr.contains("neither a task directory"))

        // A cycle between two tasks is named.
        try "run = \"cat ../b/out.txt > out.txt\"\ninputs = [\"../b/out.txt\"]\noutputs = [\"out.txt\"]\n"
            .write(toFile: ws + "/a/task.toml", atomically: false, encoding: .utf8)
        mkdir(ws + "/b", 0o755)
        try "run = \"cat ../a/out.txt > out.txt\"\ninputs = [\"../a/out.txt\"]\noutputs = [\"out.txt\"]\n"
            .write(toFile: ws + "/b/task.toml", atomically: false, encoding: .utf8)
        r = exec(ws)
        #expect(r.status == 125)
        #expect(r.stderr.contains("cycle"))
    }
}

/// Results gathered from several threads.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [RunResult] = []
    func append(_ r: RunResult) { lock.lock(); items.append(r); lock.unlock() }
    var all: [RunResult] { lock.lock(); defer { lock.unlock() }; return items }
}

/// A TCP listener on a loopback address: the kernel completes connections into its backlog, so no
/// thread needs to accept them. Closing it makes the port refuse connections. Suites that stop a
/// service each use an address of their own (127.0.0.2, .3): tests run in parallel, and a port one
/// of them just freed may be handed to another's listener.
struct LoopbackListener {
    let fd: Int32
    let port: UInt16
    let host: String

    init(port requested: UInt16 = 0, host: String = "127.0.0.1") throws {
        self.host = host
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = requested.bigEndian
        address.sin_addr.s_addr = inet_addr(host)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else { throw SystemError("bind/listen", path: "\(host):\(requested)", errno: errno) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = UInt16(bigEndian: address.sin_port)
    }

    func close() { _ = Glibc.close(fd) }
}
