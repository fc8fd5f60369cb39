import DgrunPlanner
import DgrunSpec
import DgrunStore
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The memory and CPU that a workspace's tasks may use at once.
struct ResourcePool {
    struct Budget: Sendable {
        var memoryBytes: Int64?
        var cpus: Double?
    }
    var memoryBytes: Int64
    var cpus: Double

    init(_ budget: Budget) {
        memoryBytes = budget.memoryBytes ?? Self.hostMemory()
        cpus = budget.cpus ?? Double(DgrunSystem.ProcessInfo.cpuCount)
    }

    static func hostMemory() -> Int64 {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        return pages > 0 && size > 0 ? Int64(pages) * Int64(size) : 1 << 30
    }
}

/// Runs a workspace's tasks in dependency order, each as its own `dgrun exec --no-deps TASKDIR`
/// (so each plans itself, skips when up to date, and records its run), several at once when the
/// pool has room, the task with the longest recorded critical path first.
struct Scheduler {
    var workspace: Workspace
    var targets: Set<Int>
    var exec: Exec
    var force: Bool

    enum Result { case ok, failed(Int32), blocked, notStarted }

    /// What the history says a task needs: memory (last peak, else its limit), CPUs, seconds.
    struct Need { var memory: Int64; var cpus: Double; var seconds: Double }

    func need(of task: TaskFile) -> Need {
        var need = Need(memory: 0, cpus: task.cpus ?? 1, seconds: 1)
        if let memory = task.memory, let bytes = try? ByteSize.parse(memory) { need.memory = Int64(bytes) }
        let dir = TaskExecution.stateDirectory(for: task, stateOption: exec.state)
        if FileIO.exists(dir + "/" + Store.fileName), let store = try? Store(directory: dir),
           let last = try? store.lastFinishedRun(task: task.directory) {
            if let peak = last.memoryPeakBytes { need.memory = peak }
            if let wall = last.wallSeconds, wall > 0 {
                need.seconds = wall
                let used = ((last.cpuUserSeconds ?? 0) + (last.cpuSystemSeconds ?? 0)) / wall
                if task.cpus == nil { need.cpus = max(0.1, min(used, Double(DgrunSystem.ProcessInfo.cpuCount))) }
            }
        }
        return need
    }

    func run() -> Int32 {
        let pool = ResourcePool(exec.pool)
        let order = Array(targets).sorted()
        let needs = Dictionary(uniqueKeysWithValues: order.map { ($0, need(of: workspace.tasks[$0])) })
        // Longest path (in recorded seconds) from each task to the end of the graph.
        var critical: [Int: Double] = [:]
        func criticalPath(_ t: Int) -> Double {
            if let known = critical[t] { return known }
            let rest = workspace.consumers(of: t).filter(targets.contains).map(criticalPath).max() ?? 0
            critical[t] = (needs[t]?.seconds ?? 1) + rest
            return critical[t]!
        }
        for t in order { _ = criticalPath(t) }

        var results: [Int: Result] = [:]
        var running: [pid_t: Int] = [:]
        var usedMemory: Int64 = 0
        var usedCPUs = 0.0
        var interrupted = false
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGCHLD, SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        while results.count < order.count {
            // Tasks whose producers are done: started in critical-path order while the pool has room.
            if !interrupted {
                let ready = order.filter { t in
                    results[t] == nil && !running.values.contains(t)
                        && workspace.producers(of: t).filter(targets.contains).allSatisfy { results[$0] != nil }
                }.sorted { (critical[$0]!, -$0) > (critical[$1]!, -$1) }
                for t in ready {
                    let upstream = workspace.producers(of: t).filter(targets.contains)
                    if let bad = upstream.first(where: { if case .ok = results[$0]! { return false } else { return true } }) {
                        CLI.write(2, "dgrun: \(workspace.tasks[t].name): not started: \(workspace.tasks[bad].name) did not complete\n")
                        results[t] = .notStarted
                        continue
                    }
                    let n = needs[t]!
                    let fits = usedMemory + n.memory <= pool.memoryBytes && usedCPUs + n.cpus <= pool.cpus + 0.001
                    guard fits || running.isEmpty else { continue }
                    do {
                        let pid = try Subprocess.spawn(childArguments(for: workspace.tasks[t]))
                        running[pid] = t
                        usedMemory += n.memory
                        usedCPUs += n.cpus
                    } catch {
                        CLI.write(2, "dgrun: \(workspace.tasks[t].name): cannot start: \(error)\n")
                        results[t] = .failed(125)
                    }
                }
            }
            if running.isEmpty {
                // Nothing runs and nothing could start: the rest waits on tasks that will never run.
                for t in order where results[t] == nil { results[t] = .notStarted }
                break
            }
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid > 0, let t = running.removeValue(forKey: pid) {
                let n = needs[t]!
                usedMemory -= n.memory
                usedCPUs -= n.cpus
                let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                results[t] = code == 0 ? .ok : code == blockedExitStatus ? .blocked : .failed(code)
                continue
            }
            var timeout = timespec(tv_sec: 0, tv_nsec: 100_000_000)
            let signal = sigtimedwait(&signals, nil, &timeout)
            if signal == SIGINT || signal == SIGTERM || signal == SIGHUP {
                interrupted = true
                // Each child dgrun forwards it into its sandbox and records the run's end.
                for child in running.keys { kill(child, signal) }
            }
        }
        return summarize(results)
    }

    func childArguments(for task: TaskFile) -> [String] {
        var argv = [FileIO.realPath("/proc/self/exe") ?? CommandLine.arguments[0], "exec", "--no-deps"]
        if force { argv.append("--force") }
        if let state = exec.state { argv += ["--state", Exec.absolute(state)] }
        if exec.limits != .enforce { argv += ["--limits", exec.limits.rawValue] }
        return argv + [task.directory]
    }

    func summarize(_ results: [Int: Result]) -> Int32 {
        var failed: [(String, Int32)] = [], blocked: [String] = [], notStarted: [String] = []
        var ok = 0
        for (t, result) in results.sorted(by: { $0.key < $1.key }) {
            switch result {
            case .ok: ok += 1
            case .failed(let code): failed.append((workspace.tasks[t].name, code))
            case .blocked: blocked.append(workspace.tasks[t].name)
            case .notStarted: notStarted.append(workspace.tasks[t].name)
            }
        }
        var line = "dgrun: workspace \(workspace.root): \(ok) of \(results.count) tasks complete"
        if !failed.isEmpty { line += "; failed: " + failed.map { "\($0.0) (exit \($0.1))" }.joined(separator: ", ") }
        if !blocked.isEmpty { line += "; blocked: " + blocked.joined(separator: ", ") }
        if !notStarted.isEmpty { line += "; not started: " + notStarted.joined(separator: ", ") }
        CLI.write(2, line + "\n")
        if let first = failed.first { return first.1 }
        return blocked.isEmpty && notStarted.isEmpty ? 0 : blockedExitStatus
    }
}
