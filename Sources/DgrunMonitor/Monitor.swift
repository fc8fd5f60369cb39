import CDgrunSpawn
import DgrunCgroups
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// One point of a run's series, as kept in the report and the execution record.
/// Watches a running sandbox's cgroup from a thread of its own while the launcher waits: wakes on
/// memory events (inotify on v2 memory.events), on PSI triggers, on v1 OOM and usage-threshold
/// notifications (eventfd), and otherwise samples every 10 ms in the first half second, 25 ms to the
/// first second, 50 ms in the next and 250 ms after. With tuning on, it
/// applies the LimitTuner's decisions at once and records each one.
public final class Monitor: @unchecked Sendable {
    // Touched by the monitor thread only between start() and stop(); stop() joins it first.
    private let cgroup: any LiveCgroup
    private var limits: TunedLimits
    private var bounds: TunerBounds
    private let tune: Bool
    private var follower: UsageSchedule.Follower?
    private let started: Double
    private var effectiveLimit: UInt64?
    private var samples: [UsageSample] = []
    private var adjustments: [LimitAdjustment] = []
    private var previous: CgroupSample?
    private var previousTime = 0.0
    private var previousCPU: (busy: UInt64, total: UInt64)?
    private var fds: [Int32] = []
    /// /proc/stat and /proc/meminfo, read at every tuned sample (by HostFile).
    private enum HostFile: Int { case stat, meminfo }
    private let hostFiles = CounterFiles(["/proc/stat", "/proc/meminfo"])
    private let stopFD: Int32
    private var thread: pthread_t?

    /// `effectiveLimit`: the memory limit in force at the start (the tuned soft limit, else the hard one).
    /// `schedule`: what past runs used over time (empty: no such history).
    public init(cgroup: any LiveCgroup, limits: TunedLimits, bounds: TunerBounds, tune: Bool, effectiveLimit: UInt64?,
                schedule: UsageSchedule = UsageSchedule()) {
        self.cgroup = cgroup
        follower = schedule.isEmpty ? nil : UsageSchedule.Follower(schedule)
        self.limits = limits
        self.bounds = bounds
        self.tune = tune
        self.effectiveLimit = effectiveLimit
        started = Clock.monotonic()
        stopFD = dgrun_eventfd(0, 0)
    }

    deinit {
        for fd in fds { close(fd) }
        if stopFD >= 0 { close(stopFD) }
    }

    public func start() throws(SystemError) {
        var handle = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&handle, nil, { raw in
            let monitor = Unmanaged<Monitor>.fromOpaque(raw!).takeRetainedValue()
            monitor.loop()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Monitor>.fromOpaque(context).release()
            throw SystemError("pthread_create", path: "monitor", errno: rc)
        }
        thread = handle
    }

    /// Ends the thread (one last sample first) and returns the series, downsampled, and the changes.
    public func stop() -> (samples: [UsageSample], adjustments: [LimitAdjustment]) {
        var one: UInt64 = 1
        _ = write(stopFD, &one, 8)
        if let thread { pthread_join(thread, nil) }
        thread = nil
        return (Self.downsample(samples, to: 300), adjustments)
    }

    // MARK: - the thread

    private var pollSet: [pollfd] = []

    /// What wakes the monitor from the start: inotify on memory.events, v1 eventfds on
    /// memory.oom_control (the costlier PSI triggers and usage thresholds come after a second).
    private func armEvents() {
        pollSet = [pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)]
        if !cgroup.eventFiles.isEmpty {
            let inotify = dgrun_inotify()
            if inotify >= 0 {
                fds.append(inotify)
                for file in cgroup.eventFiles { _ = dgrun_inotify_watch_modify(inotify, file) }
                pollSet.append(pollfd(fd: inotify, events: Int16(POLLIN), revents: 0))
            }
        }
        for source in cgroup.v1EventSources { register(source) }
    }

    /// PSI triggers (and v1 usage thresholds), armed once a run has lasted a second: removing a
    /// trigger costs an RCU grace period (~9 ms measured here), more than a short task is worth;
    /// until then the 50 ms samples see the same stalls.
    private var pressureArmed = false
    private func armPressureTriggers() {
        pressureArmed = true
        armThreshold()
        for file in cgroup.pressureFiles {
            let fd = open(file, O_RDWR | O_NONBLOCK | O_CLOEXEC)
            guard fd >= 0 else { continue }
            // 50 ms stalled within 1 s wakes us; unprivileged triggers need a 2 s window.
            if !writeAll(fd, "some 50000 1000000"), !writeAll(fd, "some 100000 2000000") { close(fd); continue }
            fds.append(fd)
            pollSet.append(pollfd(fd: fd, events: Int16(POLLPRI), revents: 0))
        }
    }

    /// A v1 eventfd registration through cgroup.event_control.
    private func register(_ source: (control: String, file: String, argument: String)) {
        let event = dgrun_eventfd(0, 1)
        let watched = open(source.file, O_RDONLY | O_CLOEXEC)
        guard event >= 0, watched >= 0 else { if event >= 0 { close(event) }; if watched >= 0 { close(watched) }; return }
        let line = "\(event) \(watched)" + (source.argument.isEmpty ? "" : " \(source.argument)")
        if writeAll(source.control, line) {
            fds += [event, watched]
            pollSet.append(pollfd(fd: event, events: Int16(POLLIN), revents: 0))
        } else {
            close(event)
            close(watched)
        }
    }

    /// v1: wake when usage crosses 90% of the soft limit (each raise arms the next threshold).
    /// Registering a threshold waits for an RCU grace period (8-25 ms measured here): like the
    /// PSI triggers, only a run that has lasted a second gets them.
    private func armThreshold() {
        guard pressureArmed, tune, bounds.memoryKnob == .memorySoft, let limit = limits.memory, let ceiling = bounds.memoryCeiling,
              limit < ceiling, pollSet.count < 64, let source = cgroup.usageThreshold(limit / 10 * 9) else { return }
        register(source)
    }

    private func loop() {
        // Most runs of a tool like this are short: one that ends within the first sampling
        // interval costs a thread and nothing else (its totals come from the cgroup's counters).
        var first = pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)
        if poll(&first, 1, 50) > 0 { return }
        // Ahead of the task it watches: a raise that comes late is a stall there.
        if getuid() == 0 { setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, -10) }
        armEvents()
        previousTime = Clock.monotonic()
        previous = cgroup.sample()
        while true {
            let elapsed = Clock.monotonic() - started
            if !pressureArmed && elapsed >= 1 { armPressureTriggers() }
            // Short tasks are most tasks: sample them densely; long ones cheaply.
            let timeout = Self.interval(at: elapsed)
            for i in pollSet.indices { pollSet[i].revents = 0 }
            let ready = poll(&pollSet, nfds_t(pollSet.count), timeout)
            var stopping = false
            if ready > 0 {
                for entry in pollSet where entry.revents != 0 {
                    if entry.fd == stopFD { stopping = true }
                    drain(entry.fd, pri: entry.events == Int16(POLLPRI))
                }
                // A memory event: decide on usage alone first; the full sample can wait a moment.
                if tune, !stopping { quickMemoryCheck() }
            }
            tick()
            if stopping { return }
        }
    }

    private func tick() {
        let now = Clock.monotonic()
        let current = cgroup.sample()
        let interval = max(now - previousTime, 0.001)
        let before = previous ?? current
        func delta(_ a: UInt64?, _ b: UInt64?) -> UInt64 { (a ?? 0) >= (b ?? 0) ? (a ?? 0) - (b ?? 0) : 0 }
        func share(_ a: UInt64?, _ b: UInt64?) -> Double? {
            guard a != nil else { return nil }
            return min(1, Double(delta(a, b)) / (interval * 1e6))
        }
        var observation = Observation(seconds: now - started, memoryCurrent: current.memoryCurrent ?? 0)
        observation.highEvents = delta(current.memoryHighEvents, before.memoryHighEvents)
        observation.limitHits = delta(current.memoryMaxEvents, before.memoryMaxEvents)
        observation.memoryStall = share(current.memoryStallMicros, before.memoryStallMicros) ?? 0
        observation.cpuThrottled = share(current.cpuThrottledMicros, before.cpuThrottledMicros) ?? 0
        observation.scheduled = follower?.next(usage: observation.memoryCurrent, seconds: now - started, lookahead: Self.lookahead(at: now - started))
        if tune {
            bounds.memoryAvailable = hostFiles.read(HostFile.meminfo.rawValue, HostMemory.available(in:))
            bounds.idleCPUs = idleCPUs()
            for decision in LimitTuner.decide(observation, limits: limits, bounds: bounds) { apply(decision, at: now - started) }
        }
        // After the last process is gone (the final sample at stop) there is nothing to measure.
        if current.pids == 0 { previous = current; previousTime = now; return }
        samples.append(UsageSample(
            seconds: now - started, memoryBytes: current.memoryCurrent, memoryLimitBytes: effectiveLimit,
            cpuSeconds: current.cpuUsageMicros.map { Double($0) / 1e6 },
            memoryStall: share(current.memoryStallMicros, before.memoryStallMicros),
            cpuStall: share(current.cpuStallMicros, before.cpuStallMicros),
            ioStall: share(current.ioStallMicros, before.ioStallMicros), pids: current.pids))
        previous = current
        previousTime = now
    }

    private func quickMemoryCheck() {
        guard limits.memory != nil else { return }
        var o = Observation(seconds: Clock.monotonic() - started, memoryCurrent: cgroup.memoryUsage() ?? 0)
        o.scheduled = follower?.next(usage: o.memoryCurrent, seconds: o.seconds, lookahead: Self.lookahead(at: o.seconds))
        bounds.memoryAvailable = hostFiles.read(HostFile.meminfo.rawValue, HostMemory.available(in:))
        for decision in LimitTuner.decide(o, limits: TunedLimits(memory: limits.memory), bounds: bounds) {
            apply(decision, at: o.seconds)
        }
    }

    /// Milliseconds to the next sample. A sample costs ~0.07 ms of CPU (eleven small cgroup and
    /// proc files, kept open and parsed as bytes; perf, make -j2: 3 ms of a 0.47 s run);
    /// at 50 ms a task growing 500 MiB/s (the python job) moved 25 MiB between two, and the
    /// limit had to be that far ahead of it.
    static func interval(at elapsed: Double) -> Int32 { elapsed < 0.5 ? 10 : elapsed < 1 ? 25 : elapsed < 2 ? 50 : 250 }

    /// How far ahead of today's point in a past run the limit must cover: to the sample after
    /// next. Beyond 0.1 s, memory events (v2 memory.high, v1 usage thresholds) wake the monitor first.
    static func lookahead(at elapsed: Double) -> Double { min(UsageSchedule.lookahead, 2 * Double(interval(at: elapsed)) / 1000) }

    private func apply(_ decision: TunerDecision, at seconds: Double) {
        do throws(SystemError) {
            switch decision.action {
            case .set(let knob):
                try cgroup.set(knob, to: decision.to)
                if knob == .cpuQuota { limits.cpuQuota = decision.to } else {
                    limits.memory = decision.to
                    effectiveLimit = decision.to
                    armThreshold()
                }
            }
        } catch {
            adjustments.append(LimitAdjustment(seconds: seconds, knob: decision.knobName, from: Self.describe(decision.from, decision),
                                               to: Self.describe(decision.to, decision), reason: "\(decision.reason); NOT applied: \(error)"))
            return
        }
        adjustments.append(LimitAdjustment(seconds: seconds, knob: decision.knobName, from: Self.describe(decision.from, decision),
                                           to: Self.describe(decision.to, decision), reason: decision.reason))
    }

    static func describe(_ value: UInt64?, _ decision: TunerDecision) -> String {
        guard let value else { return "max" }
        switch decision.action {
        case .set(.cpuQuota): return (Double(value) / 100_000).fixed(2) + " CPUs"
        case .set: return "\(value >> 20) MiB"
        }
    }

    // MARK: - helpers

    private func drain(_ fd: Int32, pri: Bool) {
        if pri { return }  // PSI triggers need no read; poll again re-arms
        var buffer = [UInt8](repeating: 0, count: 4096)
        _ = read(fd, &buffer, buffer.count)
    }

    private func writeAll(_ fd: Int32, _ text: String) -> Bool {
        var bytes = Array(text.utf8)
        return write(fd, &bytes, bytes.count) == bytes.count
    }

    private func writeAll(_ path: String, _ text: String) -> Bool {
        (try? FileIO.write(path, text)) != nil
    }

    /// Idle CPUs on the host over the last interval, from /proc/stat.
    private func idleCPUs() -> Double? {
        let fields = hostFiles.read(HostFile.stat.rawValue) { CounterText.numbers(after: "cpu", in: $0) } ?? []
        guard fields.count >= 5 else { return nil }
        let total = fields.reduce(0, &+), idle = fields[3] &+ fields[4]
        defer { previousCPU = (total &- idle, total) }
        guard let last = previousCPU, total > last.total, total - idle >= last.busy else { return nil }
        let busyShare = Double((total - idle) - last.busy) / Double(total - last.total)
        return max(0, (1 - busyShare) * Double(DgrunSystem.ProcessInfo.cpuCount))
    }

    /// At most `limit` points: the one with the highest memory of each bucket.
    static func downsample(_ samples: [UsageSample], to limit: Int) -> [UsageSample] {
        guard samples.count > limit else { return samples }
        let bucket = (samples.count + limit - 1) / limit
        return stride(from: 0, to: samples.count, by: bucket).map { start in
            let slice = samples[start..<min(start + bucket, samples.count)]
            return slice.max { ($0.memoryBytes ?? 0) < ($1.memoryBytes ?? 0) } ?? slice.first!
        }
    }
}
