import DgrunMonitor
import DgrunProvision
import DgrunRecord
import DgrunRuntime
import DgrunSpec
import DgrunStore
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Where tuned limits start, from the runs a store remembers (newest first).
public enum TuningFromHistory {
    static let runsConsidered = 20

    /// `series`: a past run's stored memory series (for the usage schedule).
    public static func plan(limits: ResourceLimits, history: [RunUsage], series: (Int64) -> [(t: Double, bytes: UInt64)] = { _ in [] },
                     tune: Bool) -> SandboxSpec.TuningPlan {
        // Only runs that ended normally say what the task needs: an OOM-killed run's peak is the
        // limit it hit, not its need.
        let usable = history.filter(\.succeeded).prefix(runsConsidered)
        var plan = SandboxSpec.TuningPlan(tune: tune)
        guard tune else { return plan }
        if let ceiling = limits.memoryBytes {
            plan.memoryStart = Recommender.memory(peaks: usable.compactMap { $0.memoryPeakBytes.map { UInt64($0) } }, ceiling: ceiling)
            let runs = usable.prefix(3).map { series($0.id) }.filter { $0.count >= 3 }
            plan.memorySchedule = UsageSchedule(runs: runs)
        }
        if let cpus = limits.cpus {
            let rates = usable.compactMap { run -> Double? in
                guard let wall = run.wallSeconds, wall > 0.05 else { return nil }
                return (run.cpuSeconds ?? 0) / wall
            }
            plan.cpuQuotaStart = Recommender.cpuQuota(rates: rates, ceilingQuota: UInt64(ResourceLimits.cfsQuota(cpus: cpus)))
        }
        return plan
    }

    /// The plan from a store's record of `task` (a task directory's, or the ad-hoc history's).
    public static func plan(limits: ResourceLimits, store: Store, task: String) -> SandboxSpec.TuningPlan {
        plan(limits: limits, history: (try? store.usage(task: task, limit: runsConsidered)) ?? [],
             series: { (try? store.memorySeries(run: $0)) ?? [] }, tune: true)
    }

    /// FNV-1a of the command line and directory: a history key, not a secret (and loading
    /// libcrypto for it cost every tuned run 3 ms).
    static func adHocTaskID(argv: [String], directory: String) -> String {
        // Appended by hand: joined(separator:) is generic code the runtime instantiates by name
        // on first use (~0.17 M instructions on every ad-hoc start).
        var text = ""
        for arg in argv { text += arg; text += "\u{0}" }
        text += "cwd="
        text += directory
        return "cmd:" + ShortHash.hex(text)
    }
}

/// The history of ad-hoc runs (`exec -- CMD`), in $XDG_STATE_HOME/dgrun (default
/// ~/.local/state/dgrun), keyed by the command line and the working directory. Runs with nothing to
/// tune in them are not recorded (`worthRecording`), and a marker file per key tells
/// whether there is anything to read, so that a short command never opens the store.
public struct AdHocHistory: Sendable {
    public let id: String
    public let directory: String
    public let workingDirectory: String

    public init(argv: [String], directory: String) {
        id = TuningFromHistory.adHocTaskID(argv: argv, directory: directory)
        workingDirectory = directory
        let base: String
        if let xdg = getenv("XDG_STATE_HOME"), xdg.pointee != 0 { base = String(cString: xdg) }
        else { base = (getenv("HOME").map { String(cString: $0) } ?? "/root") + "/.local/state" }
        self.directory = base + "/dgrun"
    }

    var marker: String { directory + "/has-" + String(id.dropFirst(4)) }
    public var exists: Bool { FileIO.exists(marker) }

    public func open() -> Store? {
        FileSystem.makeDirectories(directory)
        return try? Store(directory: directory)
    }

    /// A run with something to tune from: 0.1 s or more that also worked (50 ms of CPU) or held
    /// memory (16 MiB), or one that was OOM-killed or tuned. Wall time alone is not enough: on a
    /// loaded host /bin/true can take 0.1 s, and every start of it after would open the store.
    func worthRecording(_ outcome: RunOutcome) -> Bool {
        guard outcome.error == nil else { return false }
        if outcome.oomKilled || !outcome.adjustments.isEmpty { return true }
        let cpu = outcome.cpuUserSeconds + outcome.cpuSystemSeconds
        return outcome.wallSeconds >= 0.1 && (cpu >= 0.05 || (outcome.memoryPeakBytes ?? 0) >= 16 << 20)
    }

    func record(_ outcome: RunOutcome, argv: [String], in store: Store) {
        guard (try? store.registerTask(id: id, directory: workingDirectory)) != nil else { return }
        var record = RunRecord(taskID: id, status: .running, startedAt: Clock.now() - outcome.wallSeconds,
                               pid: getpid(), argv: argv, environmentDigest: "", reasons: [])
        record.fill(from: outcome, finishedAt: Clock.now())
        if (try? store.recordFinished(record, samples: outcome.samples)) != nil {
            _ = try? FileIO.write(marker, "", create: true)
        }
    }
}

/// --retry-oom N: an OOM-killed run runs again with twice the memory, up to N more times and never
/// beyond what the host has available; each attempt is reported.
enum OOMRetry {
    static func nextLimit(after limit: UInt64) -> UInt64? {
        let available = HostMemory.available() ?? 0
        let next = min(limit * 2, available)
        return next > limit ? next : nil
    }
}
