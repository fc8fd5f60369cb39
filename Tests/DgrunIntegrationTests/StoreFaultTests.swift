import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The state store under faults: many dgruns at once on a fresh store, and dgrun killed with
/// SIGKILL at random points. Judged with SQLite's own integrity check (python3's sqlite3, not
/// dgrun's store code) and by counting the runs recorded. CI runs 20 kills and 10 at once;
/// DGRUN_FAULT_RUNS=200 DGRUN_FAULT_CONCURRENCY=50 runs the full version.
@Suite(.serialized, .enabled(if: Harness.hasCommand("python3"), "needs python3's sqlite3 to check the store"))
struct StoreFaultTests {
    static let runs = Int(Foundation.ProcessInfo.processInfo.environment["DGRUN_FAULT_RUNS"] ?? "") ?? 20
    static let concurrency = Int(Foundation.ProcessInfo.processInfo.environment["DGRUN_FAULT_CONCURRENCY"] ?? "") ?? 10

    static func task(in dir: String, name: String) -> String {
        let task = dir + "/" + name
        mkdir(task, 0o755)
        try! "run = \"echo $$ > out.txt; sleep 0.05\"\noutputs = [\"out.txt\"]\n".write(toFile: task + "/task.toml", atomically: false, encoding: .utf8)
        return task
    }

    /// integrity_check, and the count of runs by status.
    static func inspect(_ task: String) -> (integrity: String, statuses: [String: Int]) {
        let r = Harness.run(["python3", "-c", """
            import sqlite3
            db = sqlite3.connect("file:\(task)/.dgrun/state.db?mode=ro", uri=True)
            print(db.execute("PRAGMA integrity_check").fetchone()[0])
            for status, n in db.execute("SELECT status, count(*) FROM run GROUP BY status"): print(status, n)
            """])
        let lines = r.stdout.split(separator: "\n").map(String.init)
        var statuses: [String: Int] = [:]
        for line in lines.dropFirst() {
            let parts = line.split(separator: " ")
            if parts.count == 2 { statuses[String(parts[0])] = Int(parts[1]) }
        }
        return (lines.first ?? "no store: \(r.stderr)", statuses)
    }

    /// Starts `dgrun ARGS` in the background (output discarded).
    static func spawn(_ args: [String]) -> pid_t {
        (try? Subprocess.spawn([Harness.binary] + args, stdin: "/dev/null", stdout: "/dev/null", stderr: "/dev/null")) ?? -1
    }

    @Test func manyDgrunsAtOnceOnAFreshStoreAndOnSeveralTasks() {
        let ws = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(ws) }
        let same = Self.task(in: ws, name: "same")
        let others = (0..<3).map { Self.task(in: ws, name: "other\($0)") }
        // Half on one task that never ran (its store is created by whichever comes first), half
        // spread over the others.
        let pids = (0..<Self.concurrency).map { i in
            Self.spawn(["exec", "--force", "--no-deps", i % 2 == 0 ? same : others[i / 2 % others.count]])
        }
        let statuses = pids.map { Subprocess.wait($0) }
        #expect(statuses.allSatisfy { $0 == 0 }, "every exec succeeds: \(statuses)")
        let inspected = Self.inspect(same)
        #expect(inspected.integrity == "ok")
        #expect(inspected.statuses == ["finished": (Self.concurrency + 1) / 2], "no run lost: \(inspected.statuses)")
        var total = 0
        for task in others {
            let other = Self.inspect(task)
            #expect(other.integrity == "ok")
            #expect(Set(other.statuses.keys).isSubset(of: ["finished"]), "\(other.statuses)")
            total += other.statuses["finished"] ?? 0
        }
        #expect(total == Self.concurrency / 2)
    }

    @Test func killedAtRandomPointsTheStoreStaysWholeAndEveryRunIsAccountedFor() {
        let ws = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(ws) }
        let task = Self.task(in: ws, name: "victim")
        var generator = SystemRandomNumberGenerator()
        var killed = 0
        for _ in 0..<Self.runs {
            let pid = Self.spawn(["exec", "--force", task])
            // From before the store is opened to after the run is recorded (a run takes ~60 ms).
            usleep(UInt32.random(in: 0...150_000, using: &generator))
            if kill(pid, SIGKILL) == 0 { killed += 1 }
            _ = Subprocess.wait(pid)
        }
        // The next dgrun settles what the killed ones left: nothing stays "running".
        let final = Harness.dgrun(["exec", "--force", task])
        #expect(final.status == 0, "\(final.stderr)")
        let inspected = Self.inspect(task)
        #expect(inspected.integrity == "ok")
        #expect(inspected.statuses["running"] == nil, "\(inspected.statuses)")
        #expect(Set(inspected.statuses.keys).isSubset(of: ["finished", "abandoned"]), "\(inspected.statuses)")
        let recorded = inspected.statuses.values.reduce(0, +)
        #expect(recorded >= 1 && recorded <= Self.runs + 1, "\(inspected.statuses)")
        // The state is usable: the task is up to date after its last finished run.
        let again = Harness.dgrun(["exec", task])
        #expect(again.status == 0 && again.stderr.contains("up to date"), "\(again.stderr)")
        #expect(Harness.processes(containing: task).isEmpty, "a killed dgrun's sandbox outlived it")
        print("store faults: \(Self.runs) runs, \(killed) killed, recorded \(inspected.statuses)")
    }
}
