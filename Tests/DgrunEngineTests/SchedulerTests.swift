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

/// Checks ahead (`run(speculate:)`): a chain's no-op checks run at once, and a result stands only
/// when every producer ended up to date.
@Suite struct SpeculationTests {
    static let upToDate = TaskResult.upToDate(checked: 1, hashed: 0)

    /// `stale` tasks are not up to date (the check ahead says nil, the run says ran); the others
    /// are, except that a task run the usual way after a producer that ran runs too when `rippling`
    /// (the producer rewrote what it reads).
    func schedule(_ ws: Workspace, stale: Set<String>, blocked: Set<String> = [], rippling: Bool = false)
        -> (results: [String: TaskResult], ran: [String], accepted: [String]) {
        let ran = Locked([String]()), accepted = Locked([String]())
        let scheduler = Scheduler(workspace: ws, targets: Set(ws.tasks.indices), needs: [:],
                                  pool: ResourcePool(memoryBytes: 1 << 40, cpus: 64), sink: { _ in })
        let results = scheduler.run(speculate: { index in
            let name = ws.tasks[index].name
            guard !stale.contains(name), !blocked.contains(name) else { return nil }
            return Speculation(result: Self.upToDate) { accepted.withLock { $0.append(name) } }
        }) { index, _ in
            let name = ws.tasks[index].name
            ran.withLock { $0.append(name) }
            if blocked.contains(name) { return .blocked([Blocker(ref: "/in", why: "missing", remedy: "restore it")]) }
            let producerRan = ws.producers(of: index).contains { p in ran.withLock { $0.contains(ws.tasks[p].name) } }
            return stale.contains(name) || (rippling && producerRan) ? SchedulerTests.ran(0) : Self.upToDate
        }
        return (Dictionary(uniqueKeysWithValues: results.map { (ws.tasks[$0.key].name, $0.value) }),
                ran.withLock { $0 }, accepted.withLock { $0 })
    }

    static func chain(_ n: Int) -> Workspace {
        let names = (0..<n).map { "t\($0)" }
        return SchedulerTests.workspace(names, (1..<n).map { (names[$0 - 1], names[$0]) })
    }

    @Test func aChainOfUpToDateTasksIsAcceptedInOrder() {
        let (results, ran, accepted) = schedule(Self.chain(50), stale: [])
        #expect(results.count == 50)
        #expect(results.values.allSatisfy { if case .upToDate = $0 { true } else { false } })
        // Each task is either checked ahead (and accepted in dependency order) or run the usual way, once.
        #expect(Set(ran).isDisjoint(with: accepted))
        #expect(ran.count + accepted.count == 50)
        let order = accepted.map { Int($0.dropFirst())! }
        #expect(order == order.sorted(), "accepted out of dependency order: \(order)")
    }

    @Test func everythingAfterAStaleTaskRunsTheUsualWayAfterIt() {
        let (results, ran, accepted) = schedule(Self.chain(20), stale: ["t7"], rippling: true)
        #expect(ran.contains("t7"))
        // Downstream of t7 no check ahead stands: each goes the usual way after its producer.
        let downstream = (8..<20).map { "t\($0)" }
        #expect(Set(downstream).isSubset(of: Set(ran)), "\(ran)")
        #expect(Set(downstream).isDisjoint(with: accepted))
        let ranOrder = ran.filter { Int($0.dropFirst())! >= 7 }
        #expect(ranOrder == ["t7"] + downstream)
        #expect(results.values.allSatisfy { $0.completed })
        guard case .ran = results["t19"]! else { Issue.record("t19: \(results["t19"]!)"); return }
    }

    /// A producer that ran is followed by its consumer's check the usual way; when that consumer
    /// is still up to date, nothing changed for the tasks after it and their checks ahead stand.
    @Test func aConsumerFoundUpToDateAfterItsProducerRanLetsTheChecksAfterItStand() {
        let (results, ran, accepted) = schedule(Self.chain(12), stale: ["t4"])
        #expect(ran.contains("t4") && ran.contains("t5"), "t5 is checked again after t4 ran: \(ran)")
        #expect(!accepted.contains("t5"))
        #expect(Set((6..<12).map { "t\($0)" }).isSubset(of: Set(accepted + ran)))
        guard case .upToDate = results["t11"]! else { Issue.record("t11: \(results["t11"]!)"); return }
    }

    @Test func aBlockedTaskInAChainStopsWhatFollowsAs122() {
        let ws = Self.chain(6)
        let (results, _, accepted) = schedule(ws, stale: [], blocked: ["t2"])
        guard case .blocked = results["t2"]! else { Issue.record("t2: \(results["t2"]!)"); return }
        for name in ["t3", "t4", "t5"] {
            guard case .notStarted = results[name]! else { Issue.record("\(name) started after a blocked producer: \(results[name]!)"); return }
            #expect(!accepted.contains(name))
        }
        let summary = WorkspaceResult(root: "/ws", results: ws.tasks.map { ($0, results[$0.name]!) })
        #expect(summary.exitStatus == DgrunExit.blocked)
    }

    /// Independent up-to-date tasks are all found so by the checkers: no task thread at all.
    @Test func independentUpToDateTasksStartNoTaskThread() {
        let ws = SchedulerTests.workspace((0..<40).map { "i\($0)" }, [])
        let (results, ran, accepted) = schedule(ws, stale: [])
        #expect(results.count == 40 && ran.isEmpty, "\(ran)")
        #expect(accepted.count == 40)
    }

    /// Nothing up to date (a first run): every check ahead says nil and every task runs, within the pool.
    @Test func aFirstRunRunsEverythingTheUsualWay() {
        let names = (0..<12).map { "f\($0)" }
        let ws = SchedulerTests.workspace(names, [("f0", "f1"), ("f1", "f2")])
        let (results, ran, accepted) = schedule(ws, stale: Set(names))
        #expect(Set(ran) == Set(names) && ran.count == names.count)
        #expect(accepted.isEmpty)
        #expect(results.values.allSatisfy { $0.completed })
        #expect(ran.firstIndex(of: "f0")! < ran.firstIndex(of: "f1")! && ran.firstIndex(of: "f1")! < ran.firstIndex(of: "f2")!)
    }

    /// Before: a failed task with two or more tasks after it left the loop waiting for nothing.
    @Test func aFailedTaskWithALongTailEnds() {
        let ws = Self.chain(5)
        let scheduler = Scheduler(workspace: ws, targets: Set(ws.tasks.indices), needs: [:],
                                  pool: ResourcePool(memoryBytes: 1 << 40, cpus: 64), sink: { _ in })
        let results = scheduler.run { index, _ in index == 0 ? SchedulerTests.ran(1) : SchedulerTests.ran(0) }
        #expect(results.count == 5)
        #expect((1..<5).allSatisfy { if case .notStarted = results[$0]! { true } else { false } })
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
