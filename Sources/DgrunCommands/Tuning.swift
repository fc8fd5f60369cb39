import DgrunMonitor
import DgrunRuntime
import DgrunSpec
import DgrunStore
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Where tuned limits start, from the runs a store remembers (newest first).
enum TuningFromHistory {
    static let runsConsidered = 20

    /// `samples`: a past run's stored series (for the usage schedule).
    static func plan(limits: ResourceLimits, history: [RunRecord], samples: (Int64) -> [Sample] = { _ in [] },
                     tune: Bool) -> SandboxSpec.TuningPlan {
        // Only runs that ended normally say what the task needs: an OOM-killed run's peak is the
        // limit it hit, not its need.
        let usable = history.filter { $0.status == .finished && !$0.oomKilled && $0.exitCode == 0 }.prefix(runsConsidered)
        var plan = SandboxSpec.TuningPlan(tune: tune)
        guard tune else { return plan }
        if let ceiling = limits.memoryBytes {
            plan.memoryStart = Recommender.memory(peaks: usable.compactMap { $0.memoryPeakBytes.map { UInt64($0) } }, ceiling: ceiling)
            let series = usable.prefix(3).compactMap { $0.id }.map(samples)
                .map { $0.compactMap { s in s.memoryBytes.map { (t: s.seconds, bytes: UInt64($0)) } } }
                .filter { $0.count >= 3 }
            plan.memorySchedule = Recommender.schedule(from: series, step: SandboxSpec.TuningPlan.scheduleStep).map { min($0, ceiling) }
        }
        if let cpus = limits.cpus {
            let rates = usable.compactMap { run -> Double? in
                guard let wall = run.wallSeconds, wall > 0.05 else { return nil }
                return ((run.cpuUserSeconds ?? 0) + (run.cpuSystemSeconds ?? 0)) / wall
            }
            plan.cpuQuotaStart = Recommender.cpuQuota(rates: rates, ceilingQuota: UInt64(ResourceLimits.cfsQuota(cpus: cpus)))
        }
        return plan
    }

    /// Ad-hoc runs (`exec -- CMD`) keep their history in $XDG_STATE_HOME/dgrun (default
    /// ~/.local/state/dgrun), keyed by the command line and the working directory.
    static func adHocStore() -> Store? {
        let base: String
        if let xdg = getenv("XDG_STATE_HOME"), xdg.pointee != 0 { base = String(cString: xdg) }
        else { base = (getenv("HOME").map { String(cString: $0) } ?? "/root") + "/.local/state" }
        FileSystem.makeDirectories(base + "/dgrun")
        return try? Store(directory: base + "/dgrun")
    }

    static func adHocTaskID(argv: [String], directory: String) -> String {
        let key = (argv + ["\u{0}cwd=" + directory]).joined(separator: "\u{0}")
        return "cmd:" + (ContentHash.version(ofBytes: Array(key.utf8)).map { String($0.dropFirst(7).prefix(16)) } ?? key)
    }
}

extension RunRecord {
    /// The record of a finished run, from its outcome.
    mutating func fill(from outcome: RunOutcome, finishedAt: Double) {
        status = .finished
        self.finishedAt = finishedAt
        exitCode = outcome.exitCode
        signal = outcome.signal
        oomKilled = outcome.oomKilled
        timedOut = outcome.timedOut
        wallSeconds = outcome.wallSeconds
        cpuUserSeconds = outcome.cpuUserSeconds
        cpuSystemSeconds = outcome.cpuSystemSeconds
        memoryPeakBytes = outcome.memoryPeakBytes.map { Int64($0) }
        pidsPeak = outcome.pidsPeak.map { Int64($0) }
        limitsJSON = TaskExecution.json(outcome.limits) ?? "{}"
        adjustmentsJSON = TaskExecution.json(outcome.adjustments) ?? "[]"
    }
}

extension Sample {
    static func from(_ samples: [MonitorSample], run: Int64) -> [Sample] {
        samples.map {
            Sample(runID: run, seconds: $0.seconds, memoryBytes: $0.memoryBytes.map { Int64($0) }, cpuSeconds: $0.cpuSeconds,
                   memoryPressure: $0.memoryStall, cpuPressure: $0.cpuStall, ioPressure: $0.ioStall, pids: $0.pids.map { Int64($0) })
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

enum HostMemory {
    static func available() -> UInt64? {
        guard let text = FileIO.readSmall("/proc/meminfo") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            return line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }.map { $0 * 1024 }
        }
        return nil
    }
}
