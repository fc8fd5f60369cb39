import DgrunEngine
import DgrunPlanner
import DgrunProvision
import DgrunRuntime
import DgrunSpec
import DgrunSystem
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The engine's policy with fakes: no sandbox, no binary. Scheduling order, the pool, the
/// critical path, blocked and failed propagation, and --retry-oom.
@Suite struct SchedulerTests {
    /// A workspace of named tasks; `edges` are producer → consumer.
    static func workspace(_ names: [String], _ edges: [(String, String)]) -> Workspace {
        let tasks = names.map { try! TaskFile.parse("command = [\"true\"]", directory: "/ws/" + $0) }
        let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        return Workspace(root: "/ws", tasks: tasks, links: edges.map {
            Workspace.Link(producer: index[$0.0]!, consumer: index[$0.1]!, ref: "/ws/\($0.0)/out")
        })
    }

    /// Records the order tasks start in and how many run at once.
    final class Recorder: @unchecked Sendable {
        let state = Locked((started: [String](), running: 0, peak: 0))
        func start(_ name: String) { state.withLock { $0.started.append(name); $0.running += 1; $0.peak = max($0.peak, $0.running) } }
        func end() { state.withLock { $0.running -= 1 } }
        var started: [String] { state.withLock { $0.started } }
        var peak: Int { state.withLock { $0.peak } }
    }

    static func ran(_ code: Int32) -> TaskResult { .ran(RunOutcome(exitCode: code), runID: nil) }

    func schedule(_ ws: Workspace, needs: [String: TaskNeed] = [:], pool: ResourcePool = ResourcePool(memoryBytes: 1 << 40, cpus: 64),
                  _ body: @escaping @Sendable (String) -> TaskResult) -> (results: [String: TaskResult], recorder: Recorder) {
        let recorder = Recorder()
        var byIndex: [Int: TaskNeed] = [:]
        for (i, task) in ws.tasks.enumerated() { byIndex[i] = needs[task.name] ?? TaskNeed() }
        let scheduler = Scheduler(workspace: ws, targets: Set(ws.tasks.indices), needs: byIndex, pool: pool, sink: { _ in })
        let results = scheduler.run { index, _ in
            let name = ws.tasks[index].name
            recorder.start(name)
            defer { recorder.end() }
            return body(name)
        }
        return (Dictionary(uniqueKeysWithValues: results.map { (ws.tasks[$0.key].name, $0.value) }), recorder)
    }

    @Test func producersRunBeforeConsumers() {
        let ws = Self.workspace(["gen", "apply", "summary", "lib"], [("gen", "apply"), ("apply", "summary"), ("lib", "apply")])
        let (results, recorder) = schedule(ws) { _ in usleep(20_000); return Self.ran(0) }
        #expect(results.values.allSatisfy { $0.completed })
        let order = recorder.started
        #expect(order.firstIndex(of: "gen")! < order.firstIndex(of: "apply")!)
        #expect(order.firstIndex(of: "lib")! < order.firstIndex(of: "apply")!)
        #expect(order.last == "summary")
    }

    @Test func failureStopsDependantsButNotOthers() {
        let ws = Self.workspace(["a", "b", "c", "d"], [("a", "b"), ("b", "c")])
        let (results, recorder) = schedule(ws) { $0 == "a" ? Self.ran(3) : Self.ran(0) }
        #expect(results["a"]!.exitStatus == 3)
        guard case .notStarted = results["b"]!, case .notStarted = results["c"]! else {
            Issue.record("b and c should not start: \(results)")
            return
        }
        #expect(results["d"]!.completed)
        #expect(!recorder.started.contains("b") && !recorder.started.contains("c"))
        let summary = WorkspaceResult(root: "/ws", results: ws.tasks.map { ($0, results[$0.name]!) })
        #expect(summary.exitStatus == 3)
    }

    @Test func blockedPropagatesAs122() {
        let ws = Self.workspace(["a", "b"], [("a", "b")])
        let (results, _) = schedule(ws) { $0 == "a" ? .blocked([Blocker(ref: "tcp://127.0.0.1:1", why: "refused", remedy: "start it")]) : Self.ran(0) }
        guard case .notStarted = results["b"]! else { Issue.record("b started after a blocked producer"); return }
        let summary = WorkspaceResult(root: "/ws", results: ws.tasks.map { ($0, results[$0.name]!) })
        #expect(summary.exitStatus == DgrunExit.blocked)
    }

    @Test func thePoolBoundsWhatRunsAtOnce() {
        let ws = Self.workspace(["a", "b", "c", "d"], [])
        let needs = Dictionary(uniqueKeysWithValues: ["a", "b", "c", "d"].map { ($0, TaskNeed(memory: 600, cpus: 1, seconds: 1)) })
        let (results, recorder) = schedule(ws, needs: needs, pool: ResourcePool(memoryBytes: 1300, cpus: 8)) { _ in
            usleep(30_000)
            return Self.ran(0)
        }
        #expect(results.values.allSatisfy { $0.completed })
        #expect(recorder.peak == 2)  // 600 + 600 fits in 1300, a third does not
    }

    @Test func aTaskLargerThanThePoolStillRunsAlone() {
        let ws = Self.workspace(["big"], [])
        let (results, _) = schedule(ws, needs: ["big": TaskNeed(memory: 10_000, cpus: 1, seconds: 1)],
                                    pool: ResourcePool(memoryBytes: 100, cpus: 1)) { _ in Self.ran(0) }
        #expect(results["big"]!.completed)
    }

    @Test func theLongestCriticalPathStartsFirst() {
        // One CPU: one task at a time, so the start order is the priority order.
        let ws = Self.workspace(["short", "long1", "long2"], [("long1", "long2")])
        let needs = ["short": TaskNeed(seconds: 1), "long1": TaskNeed(seconds: 5), "long2": TaskNeed(seconds: 5)]
        let scheduler = Scheduler(workspace: ws, targets: [0, 1, 2], needs: [0: needs["short"]!, 1: needs["long1"]!, 2: needs["long2"]!],
                                  pool: ResourcePool(memoryBytes: 1 << 30, cpus: 1), sink: { _ in })
        #expect(scheduler.criticalPaths() == [0: 1, 1: 10, 2: 5])
        let (_, recorder) = schedule(ws, needs: needs, pool: ResourcePool(memoryBytes: 1 << 30, cpus: 1)) { _ in Self.ran(0) }
        #expect(recorder.started.first == "long1")
    }

    @Test func upToDateTasksCountAsComplete() {
        let ws = Self.workspace(["a", "b"], [("a", "b")])
        let (results, _) = schedule(ws) { $0 == "a" ? .upToDate(checked: 3, hashed: 0) : Self.ran(0) }
        #expect(results["b"]!.completed)
    }
}

/// --retry-oom with a fake launcher: each OOM kill runs again with twice the memory.
@Suite struct RetryTests {
    final class FakeLauncher: SandboxLauncher, @unchecked Sendable {
        let limits = Locked([UInt64]())
        let killsBeforeSuccess: Int
        init(killsBeforeSuccess: Int) { self.killsBeforeSuccess = killsBeforeSuccess }
        func launch(_ spec: SandboxSpec, control: Int32) throws(DgrunError) -> RunOutcome {
            let attempt = limits.withLock { $0.append(spec.limits.memoryBytes ?? 0); return $0.count }
            if attempt <= killsBeforeSuccess {
                return RunOutcome(exitCode: 137, signal: 9, oomKilled: true, wallSeconds: 0.5)
            }
            return RunOutcome(exitCode: 0, wallSeconds: 0.5)
        }
    }

    static func engine(_ launcher: FakeLauncher, events: Locked<[String]>) -> Engine {
        Engine(sink: { event in if case .retryingOOM(_, let from, let to, _, _) = event { events.withLock { $0.append("\(from)→\(to)") } } },
               provisioner: Provisioner(executable: "/nonexistent", driver: nil, warn: { _ in }), launcher: launcher)
    }

    @Test func retriesDoubleTheMemoryAndAreReported() throws {
        guard let available = HostMemory.available(), available > 1 << 30 else { return }
        let launcher = FakeLauncher(killsBeforeSuccess: 2)
        let events = Locked([String]())
        var spec = SandboxSpec(argv: ["x"], environment: [], workingDirectory: "/")
        spec.limits.memoryBytes = 64 << 20
        var retried = 0
        let outcome = try Self.engine(launcher, events: events).launchRetryingOOM(spec, retries: 3) { _ in retried += 1 }
        #expect(outcome.exitCode == 0)
        #expect(launcher.limits.withLock { $0 } == [64 << 20, 128 << 20, 256 << 20])
        #expect(retried == 2)
        #expect(outcome.adjustments.map(\.knob) == ["memory.max", "memory.max"])
        #expect(events.withLock { $0 }.count == 2)
    }

    @Test func retriesStopAtTheBound() throws {
        let launcher = FakeLauncher(killsBeforeSuccess: 5)
        var spec = SandboxSpec(argv: ["x"], environment: [], workingDirectory: "/")
        spec.limits.memoryBytes = 64 << 20
        let outcome = try Self.engine(launcher, events: Locked([])).launchRetryingOOM(spec, retries: 1)
        #expect(outcome.oomKilled && outcome.exitCode == 137)
        #expect(launcher.limits.withLock { $0.count } <= 2)
    }

    @Test func noRetryWithoutAMemoryLimit() throws {
        let launcher = FakeLauncher(killsBeforeSuccess: 5)
        let spec = SandboxSpec(argv: ["x"], environment: [], workingDirectory: "/")
        let outcome = try Self.engine(launcher, events: Locked([])).launchRetryingOOM(spec, retries: 3)
        #expect(outcome.oomKilled)
        #expect(launcher.limits.withLock { $0.count } == 1)
    }
}

/// The one merge of flags and task.toml: a flag wins, the task fills the rest.
@Suite struct RequestMergeTests {
    @Test func flagsWinOverTaskToml() throws {
        let task = try TaskFile.parse("""
            command = ["make"]
            env = { A = "task" }
            [limits]
            memory = "512m"
            cpus = 2
            timeout = "10m"
            [sandbox]
            network = "host"
            """, directory: "/w/t")
        var request = RunRequest()
        request.limits.memoryBytes = 64 << 20
        request.timeoutSeconds = 1
        request.network = SandboxProfile.Network.none
        try request.setEnvironment("A=flag")
        let merged = request.applying(task)
        #expect(merged.command == ["make"])
        #expect(merged.limits.memoryBytes == 64 << 20 && merged.limits.cpus == 2)
        #expect(merged.timeoutSeconds == 1)
        #expect(merged.network == SandboxProfile.Network.none)
        #expect(merged.environment == ["A=task", "A=flag"])  // the later one wins in the spec
        #expect(merged.workingDirectory == "/w/t")
        #expect(RunRequest().applying(task).limits.memoryBytes == 512 << 20)
    }
}
