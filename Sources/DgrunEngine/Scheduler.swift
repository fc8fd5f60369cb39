import CDgrunSpawn
import Dispatch
import DgrunPlanner
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The memory and CPU that a workspace's tasks may use at once.
public struct ResourcePool: Sendable, Equatable {
    public var memoryBytes: Int64
    public var cpus: Double

    public init(memoryBytes: Int64, cpus: Double) {
        self.memoryBytes = memoryBytes
        self.cpus = cpus
    }

    /// The budget asked for, else the host's memory and CPUs.
    public init(_ budget: RunRequest.PoolBudget) {
        memoryBytes = budget.memoryBytes ?? Self.hostMemory()
        cpus = budget.cpus ?? Double(DgrunSystem.ProcessInfo.cpuCount)
    }

    static func hostMemory() -> Int64 {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        return pages > 0 && size > 0 ? Int64(pages) * Int64(size) : 1 << 30
    }
}

/// What the history says a task needs: memory (last peak, else its limit), CPUs, seconds.
public struct TaskNeed: Sendable, Equatable {
    public var memory: Int64
    public var cpus: Double
    public var seconds: Double
    public init(memory: Int64 = 0, cpus: Double = 1, seconds: Double = 1) {
        self.memory = memory
        self.cpus = cpus
        self.seconds = seconds
    }
}

/// Runs a set of a workspace's tasks in dependency order, in this process: each on a thread of
/// its own, several at once while the pool has room, the task with the longest recorded critical
/// path first. A task whose producer did not complete does not start. Signals to dgrun go to every
/// running sandbox (through each one's control pipe), and nothing new starts after one.
///
/// The scheduling policy is here and the running is `runTask`'s: the engine's unit tests give it
/// a fake.
public struct Scheduler: Sendable {
    public var workspace: Workspace
    public var targets: Set<Int>
    public var needs: [Int: TaskNeed]
    public var pool: ResourcePool
    public var sink: EventSink

    public init(workspace: Workspace, targets: Set<Int>, needs: [Int: TaskNeed], pool: ResourcePool, sink: @escaping EventSink) {
        self.workspace = workspace
        self.targets = targets
        self.needs = needs
        self.pool = pool
        self.sink = sink
    }

    /// Longest path (in recorded seconds) from each target to the end of the graph.
    public func criticalPaths() -> [Int: Double] {
        var critical: [Int: Double] = [:]
        func path(_ t: Int) -> Double {
            if let known = critical[t] { return known }
            let rest = workspace.consumers(of: t).filter(targets.contains).map(path).max() ?? 0
            critical[t] = (needs[t]?.seconds ?? 1) + rest
            return critical[t]!
        }
        for t in targets { _ = path(t) }
        return critical
    }

    /// Runs the targets; `runTask(index, control)` runs one (on its own thread) and gets the read
    /// end of its control pipe, over which forwarded signals arrive as int32 numbers.
    ///
    /// `speculate(index)`, when given, is a task's no-op check made ahead of the dependency order,
    /// on a few threads of its own (one a CPU), in priority order. It is valid only if the task's
    /// producers stay as they are: when every producer ends up to date, its result is the task's
    /// (accepted without a thread or room in the pool); otherwise the task runs the usual way
    /// after them. A chain of up-to-date tasks is so checked on every CPU instead of one after the
    /// other, each check waiting for its producer's. A task is checked ahead or run, never both at once.
    public func run(speculate: (@Sendable (Int) -> Speculation?)? = nil,
                    _ runTask: @escaping @Sendable (Int, Int32) -> TaskResult) -> [Int: TaskResult] {
        let order = Array(targets).sorted()
        let critical = criticalPaths()
        var results: [Int: TaskResult] = [:]
        var running: [Int: Int32] = [:]  // task → the write end of its control pipe
        var usedMemory: Int64 = 0
        var usedCPUs = 0.0
        var interrupted = false

        // Finished tasks report over a pipe (their index; a speculative check, -1 - index): the
        // loop polls it and dgrun's signals together.
        var done: [Int32] = [-1, -1]
        guard dgrun_pipe(&done) == 0 else {
            for t in order { results[t] = .failed(DgrunError.launch("cannot create a pipe: \(String(cString: strerror(errno)))")) }
            return results
        }
        defer { close(done[0]); close(done[1]) }
        let finished = Locked([Int: TaskResult]())
        let signalFD = dgrun_forwarded_signalfd()
        defer { if signalFD >= 0 { close(signalFD) } }

        func name(_ t: Int) -> String { workspace.tasks[t].name }

        // The ready tasks in priority order (longest critical path first), kept as results come
        // in: recomputing and sorting every waiting task after each result made a 1,000-task
        // no-op spend 2.6 G of its 5.4 G instructions here.
        let prioritized = order.sorted { (critical[$0]!, -$0) > (critical[$1]!, -$1) }
        var rank: [Int: Int] = [:]
        for (i, t) in prioritized.enumerated() { rank[t] = i }
        var waitingOn: [Int: Int] = [:]
        for t in order { waitingOn[t] = workspace.producers(of: t).filter(targets.contains).count }
        var ready = prioritized.filter { waitingOn[$0] == 0 }
        var becameReady: [Int] = []
        func record(_ t: Int, _ result: TaskResult) {
            results[t] = result
            for c in workspace.consumers(of: t) where targets.contains(c) {
                waitingOn[c]! -= 1
                if waitingOn[c] == 0 { becameReady.append(c) }
            }
        }

        // Checks ahead. A producer comes before its consumers in `prioritized` (its critical
        // path is longer), so the checkers go in dependency order too.
        let claims = Locked(Claims(slots: Array(repeating: .open, count: workspace.tasks.count)))
        let speculated = Locked([Int: Speculation?]())
        var speculations: [Int: Speculation?] = [:]   // the checks whose completion the loop has read
        // Ready tasks out of `ready` until their check ends: rescanning them after every check
        // was quadratic (0.3 G instructions at 1,000 tasks).
        var parked: Set<Int> = []
        let checkers = DispatchGroup()
        defer {
            // Every checker is gone before the pipe it reports over is closed.
            claims.withLock { $0.stopped = true }
            checkers.wait()
        }
        var checkersStarted = 0
        if let speculate {
            let notify = done[1], queue = prioritized
            for _ in 0..<min(DgrunSystem.ProcessInfo.cpuCount, queue.count) {
                checkers.enter()
                checkersStarted += 1
                do {
                    try Threads.detach {
                        defer { checkers.leave() }
                        while let t = claims.withLock({ $0.nextToCheck(in: queue) }) {
                            let speculation = speculate(t)
                            speculated.withLock { $0[t] = speculation }
                            var code = Int32(-1 - t)
                            _ = write(notify, &code, 4)
                        }
                    }
                } catch {
                    checkersStarted -= 1
                    checkers.leave()  // fewer checkers: the loop runs what they do not check
                }
            }
        }
        func upToDate(_ t: Int) -> Bool {
            if case .upToDate = results[t] { return true }
            return false
        }

        while results.count < order.count {
            for t in becameReady {
                var low = 0, high = ready.count   // the first ready task of lower priority
                while low < high {
                    let mid = (low + high) / 2
                    if rank[ready[mid]]! < rank[t]! { low = mid + 1 } else { high = mid }
                }
                ready.insert(t, at: low)
            }
            becameReady.removeAll()
            if !interrupted {
                var i = 0
                while i < ready.count {
                    let t = ready[i]
                    let upstream = workspace.producers(of: t).filter(targets.contains)
                    if let bad = upstream.first(where: { !results[$0]!.completed }) {
                        let because = "\(name(bad)) did not complete"
                        sink(.notStarted(task: name(t), because: because))
                        ready.remove(at: i)
                        record(t, .notStarted(because))
                        continue
                    }
                    var checked = false
                    if speculate != nil, claims.withLock({ $0.slots[t] }) == .checking {
                        // Checked ahead: its result stands when every producer is up to date.
                        // Until the check ends the task waits (the check holds its lock).
                        guard let check = speculations[t] else { ready.remove(at: i); parked.insert(t); continue }
                        if let check, upstream.allSatisfy(upToDate) {
                            ready.remove(at: i)
                            check.accept()
                            record(t, check.result)
                            continue
                        }
                        checked = true   // a producer did not stay as it was: run it the usual way
                    }
                    // Ready with every producer up to date: a checker will get to it, and most
                    // likely find it up to date too, with no thread and no pipes of its own (a
                    // 1,000-task no-op started 915 threads). One whose producer ran goes now.
                    if checkersStarted > 0, !checked, upstream.allSatisfy(upToDate),
                       claims.withLock({ $0.slots[t] == .open && !$0.stopped }) {
                        ready.remove(at: i)
                        parked.insert(t)
                        continue
                    }
                    let need = needs[t] ?? TaskNeed()
                    let fits = usedMemory + need.memory <= pool.memoryBytes && usedCPUs + need.cpus <= pool.cpus + 0.001
                    guard fits || running.isEmpty else { i += 1; continue }
                    if speculate != nil, !checked, !claims.withLock({ $0.take(t) }) {
                        ready.remove(at: i)   // a checker took it just now
                        parked.insert(t)
                        continue
                    }
                    ready.remove(at: i)
                    var control: [Int32] = [-1, -1]
                    guard dgrun_pipe(&control) == 0 else {
                        record(t, .failed(DgrunError.launch("cannot create a pipe: \(String(cString: strerror(errno)))")))
                        continue
                    }
                    let notify = done[1], readEnd = control[0]
                    do {
                        try Threads.detach {
                            let result = runTask(t, readEnd)
                            close(readEnd)
                            finished.withLock { $0[t] = result }
                            var index = Int32(t)
                            _ = write(notify, &index, 4)
                        }
                        running[t] = control[1]
                        usedMemory += need.memory
                        usedCPUs += need.cpus
                    } catch {
                        close(control[0])
                        close(control[1])
                        record(t, .failed(DgrunError.launch("cannot start \(name(t)): \(error)", cause: error)))
                    }
                }
            }
            // Results recorded in this pass made others ready: those first, before waiting.
            if !becameReady.isEmpty { continue }
            if running.isEmpty && (parked.isEmpty || interrupted) {
                // Nothing runs and nothing could start: the rest waits on tasks that will never run.
                for t in order where results[t] == nil {
                    let because = interrupted ? "dgrun was interrupted" : "a task it depends on did not run"
                    sink(.notStarted(task: name(t), because: because))
                    results[t] = .notStarted(because)
                }
                break
            }
            var fds = [pollfd(fd: done[0], events: Int16(POLLIN), revents: 0),
                       pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, signalFD >= 0 ? 2 : 1, -1)
            if n < 0 { continue }
            if fds[0].revents != 0 {
                // Every report waiting in the pipe (each a 4-byte write, so whole ones).
                var codes = [Int32](repeating: 0, count: 256)
                let got = codes.withUnsafeMutableBytes { read(done[0], $0.baseAddress, $0.count) }
                for code in codes.prefix(max(0, got) / 4) {
                    if code < 0 {
                        let t = Int(-1 - code)
                        speculations[t] = speculated.withLock { $0[t] ?? nil }
                        if parked.remove(t) != nil { becameReady.append(t) }
                    } else if let control = running.removeValue(forKey: Int(code)) {
                        let t = Int(code)
                        close(control)
                        let need = needs[t] ?? TaskNeed()
                        usedMemory -= need.memory
                        usedCPUs -= need.cpus
                        record(t, finished.withLock { $0[t] } ?? .failed(DgrunError.launch("\(name(t)) ended without a result")))
                    }
                }
            }
            if signalFD >= 0, fds[1].revents != 0 {
                while case var signal = dgrun_read_signal(signalFD), signal > 0 {
                    if !interrupted { sink(.interrupted(signal: signal)) }
                    interrupted = true
                    claims.withLock { $0.stopped = true }
                    for control in running.values { _ = write(control, &signal, 4) }
                }
            }
        }
        return results
    }
}

/// A task's no-op check made ahead of its producers' results (`Scheduler.run(speculate:)`).
public struct Speculation: Sendable {
    /// The task's result, if its producers end up to date.
    public var result: TaskResult
    /// Reports it (its events): called once, when the scheduler takes the result.
    public var accept: @Sendable () -> Void
    public init(result: TaskResult, accept: @escaping @Sendable () -> Void = {}) {
        self.result = result
        self.accept = accept
    }
}

/// Which tasks the checkers took and which the loop took to run: each goes one way only.
struct Claims {
    enum Slot { case open, checking, taken }
    var slots: [Slot]
    var cursor = 0
    var stopped = false

    /// The next open task in `queue` for a checker, or nil when none is left (or dgrun stops).
    mutating func nextToCheck(in queue: [Int]) -> Int? {
        while !stopped, cursor < queue.count {
            let t = queue[cursor]
            cursor += 1
            if slots[t] == .open { slots[t] = .checking; return t }
        }
        return nil
    }

    /// Takes an open task for the loop to run; false when a checker has it.
    mutating func take(_ t: Int) -> Bool {
        if slots[t] == .checking { return false }
        slots[t] = .taken
        return true
    }
}
