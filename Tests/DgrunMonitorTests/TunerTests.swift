import Testing
@testable import DgrunMonitor
import DgrunSpec
@testable import DgrunCgroups

/// The tuning policy on synthetic series: no cgroup, no kernel.
@Suite struct RecommenderTests {
    @Test func weightedPercentileFavoursRecentRuns() {
        #expect(Recommender.weightedPercentile([5]) == 5)
        #expect(Recommender.weightedPercentile([]) == nil)
        #expect(Recommender.weightedPercentile([100, 100, 100]) == 100)
        // An old outlier weighs less than a recent one.
        let oldSpike = Recommender.weightedPercentile([100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 400], percentile: 0.9)
        let newSpike = Recommender.weightedPercentile([400, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100], percentile: 0.9)
        #expect(oldSpike == 100)
        #expect(newSpike == 400)
    }

    @Test func memoryStartsAbovePastPeaksAndBelowTheCeiling() {
        let mib: UInt64 = 1 << 20
        let start = Recommender.memory(peaks: [112 * mib, 110 * mib, 111 * mib], ceiling: 400 * mib)
        #expect(start.map { $0 > 112 * mib && $0 < 150 * mib } == true, "\(String(describing: start.map { $0 >> 20 }))")
        #expect(Recommender.memory(peaks: [900 * mib], ceiling: 400 * mib) == 400 * mib)
        #expect(Recommender.memory(peaks: [], ceiling: 400 * mib) == nil)
        #expect(Recommender.memory(peaks: [1 * mib], ceiling: 400 * mib) == Recommender.memoryFloor)
    }

    @Test func cpuStartsFromPastUse() {
        #expect(Recommender.cpuQuota(rates: [1.0, 1.0], ceilingQuota: 300_000) == 120_000)
        #expect(Recommender.cpuQuota(rates: [3.0], ceilingQuota: 200_000) == 200_000)
        #expect(Recommender.cpuQuota(rates: [0.01], ceilingQuota: 200_000) == 100_000, "one thread's burst is never throttled")
        #expect(Recommender.cpuQuota(rates: [0.01], ceilingQuota: 50_000) == 50_000, "nor above the ceiling")
    }
}

@Suite struct ScheduleTests {
    let mib: UInt64 = 1 << 20

    /// Two past runs of a phase change: 60 MiB, then 180 MiB from about 1.2 s.
    var phaseRuns: [[(t: Double, bytes: UInt64)]] {
        [stride(from: 0.1, through: 2.4, by: 0.05).map { (t: $0, bytes: ($0 < 1.2 ? 60 : 180) * mib) },
         stride(from: 0.1, through: 2.5, by: 0.05).map { (t: $0, bytes: ($0 < 1.25 ? 60 : 180) * mib) }]
    }

    @Test func scheduleStartsFromWhatPastRunsUsedFirst() {
        #expect(UsageSchedule(runs: phaseRuns).start == 60 * mib + 3 * mib + 2 * mib, "5% and 2 MiB above")
        #expect(UsageSchedule().start == nil)
        var none = UsageSchedule.Follower(UsageSchedule())
        #expect(none.next(usage: 10 * mib, seconds: 0.1) == nil)
    }

    @Test func aSlowerRunIsFollowedByItsUsageNotByTheClock() {
        var f = UsageSchedule.Follower(UsageSchedule(runs: phaseRuns))
        // Today the phase change comes at 1.6 s, not 1.2 s: the limit waits for it...
        for t in stride(from: 0.1, to: 1.6, by: 0.05) { #expect(f.next(usage: 60 * mib, seconds: t) == 65 * mib) }
        // ...and goes to the next level as soon as usage starts to rise.
        #expect(f.next(usage: 100 * mib, seconds: 1.6) == 180 * mib + 9 * mib + 2 * mib)
        #expect(f.next(usage: 180 * mib, seconds: 1.65) == 191 * mib)
    }

    @Test func aDipInTheMiddleOfAPastRunIsNotItsEnd() {
        // 100 MiB for two seconds; today it dips to 50 MiB at 0.5 s: history still says 100 ahead.
        let flat = stride(from: 0.1, through: 2.0, by: 0.05).map { (t: $0, bytes: 100 * mib) }
        var f = UsageSchedule.Follower(UsageSchedule(runs: [flat]))
        #expect(f.next(usage: 100 * mib, seconds: 0.1) == UsageSchedule.withMargin(100 * mib))
        #expect(f.next(usage: 50 * mib, seconds: 0.5) == UsageSchedule.withMargin(100 * mib))
    }

    @Test func aFallFromAPeakIsFollowedAtOnce() {
        // A spike: 50 MiB, 300 MiB from 0.8 to 1.1 s, 50 MiB again.
        let spike = stride(from: 0.1, through: 2.0, by: 0.05).map { (t: $0, bytes: ($0 >= 0.8 && $0 < 1.1 ? 300 : 50) * mib) }
        var f = UsageSchedule.Follower(UsageSchedule(runs: [spike]))
        #expect(f.next(usage: 50 * mib, seconds: 0.1) == 54 * mib + 512 * 1024)
        #expect(f.next(usage: 120 * mib, seconds: 0.85) == 317 * mib, "rising: to the past peak")
        #expect(f.next(usage: 300 * mib, seconds: 0.9) == 317 * mib)
        #expect(f.next(usage: 50 * mib, seconds: 1.15) == 54 * mib + 512 * 1024, "past the peak, not held at it until the clock says so")
        // A fall mid-run that history never saw is not the end: it still says 50 MiB ahead...
        #expect(f.next(usage: 2 * mib, seconds: 1.5) == 54 * mib + 512 * 1024)
        // ...but past the end of what history recorded (the processes exiting), the limit follows usage.
        #expect(f.next(usage: 2 * mib, seconds: 2.0) == UsageSchedule.withMargin(2 * mib))
        // A run that starts below history does not skip the peak ahead of it.
        var low = UsageSchedule.Follower(UsageSchedule(runs: [spike]))
        #expect(low.next(usage: 20 * mib, seconds: 0.1) == 54 * mib + 512 * 1024)
        #expect(low.next(usage: 120 * mib, seconds: 0.85) == 317 * mib)
    }

    @Test func followingTheScheduleLowersButNeverBelowUsage() {
        let bounds = TunerBounds(memoryCeiling: 1024 * mib, cpuCeilingQuota: nil, memoryAvailable: nil, idleCPUs: nil, memoryKnob: .memoryHigh)
        var o = Observation(seconds: 3, memoryCurrent: 50 * mib)
        o.scheduled = 60 * mib
        let down = LimitTuner.decide(o, limits: TunedLimits(memory: 200 * mib), bounds: bounds)
        #expect(down.first?.to == 60 * mib, "the past says usage falls here")
        o.memoryCurrent = 150 * mib
        let held = LimitTuner.decide(o, limits: TunedLimits(memory: 200 * mib), bounds: bounds)
        #expect(held.first?.to == 159 * mib + 512 * 1024, "no lower than usage plus 5% and 2 MiB")
        o.memoryCurrent = 50 * mib
        o.highEvents = 2
        #expect(LimitTuner.decide(o, limits: TunedLimits(memory: 60 * mib), bounds: bounds).first?.to == 75 * mib, "pressure still raises")
        o.highEvents = 0
        o.scheduled = 62 * mib
        #expect(LimitTuner.decide(o, limits: TunedLimits(memory: 60 * mib), bounds: bounds).isEmpty, "small moves are noise")
        // A small task: usage wobbling between 1 and 4 MiB does not move a 5 MiB limit.
        for usage in [1, 3, 2, 4, 1] as [UInt64] {
            var small = Observation(seconds: 1, memoryCurrent: usage * mib)
            small.scheduled = 3 * mib
            #expect(LimitTuner.decide(small, limits: TunedLimits(memory: 5 * mib + mib / 2), bounds: bounds).isEmpty, "\(usage) MiB")
        }
    }
}

@Suite struct LimitTunerTests {
    let mib: UInt64 = 1 << 20
    var v2: TunerBounds { TunerBounds(memoryCeiling: 1024 * mib, cpuCeilingQuota: 200_000, memoryAvailable: 8192 * mib, idleCPUs: 1.5, memoryKnob: .memoryHigh) }

    /// Runs the policy over a series, applying its decisions like the monitor does.
    func simulate(_ series: [Observation], start: TunedLimits, bounds: TunerBounds) -> (TunedLimits, [TunerDecision]) {
        var limits = start
        var all: [TunerDecision] = []
        for o in series {
            for d in LimitTuner.decide(o, limits: limits, bounds: bounds) {
                all.append(d)
                switch d.action {
                case .set(.cpuQuota): limits.cpuQuota = d.to
                case .set: limits.memory = d.to
                }
            }
        }
        return (limits, all)
    }

    func steady(_ bytes: UInt64, count: Int) -> [Observation] {
        (0..<count).map { Observation(seconds: Double($0) * 0.25, memoryCurrent: bytes) }
    }

    @Test func steadyUsageBelowTheLimitChangesNothing() {
        let (limits, decisions) = simulate(steady(100 * mib, count: 40), start: TunedLimits(memory: 150 * mib), bounds: v2)
        #expect(decisions.isEmpty)
        #expect(limits.memory == 150 * mib)
    }

    @Test func rampIsFollowedBeforeItStalls() {
        let ramp = (0..<40).map { Observation(seconds: Double($0) * 0.25, memoryCurrent: UInt64(50 + $0 * 10) * mib) }
        let (limits, decisions) = simulate(ramp, start: TunedLimits(memory: 100 * mib), bounds: v2)
        #expect(!decisions.isEmpty)
        #expect(limits.memory! >= 440 * mib, "the limit stays ahead of usage: \(limits.memory! >> 20) MiB")
        #expect(decisions.allSatisfy { $0.to > ($0.from ?? 0) }, "it never lowers")
        #expect(decisions.allSatisfy { $0.to <= 1024 * mib }, "never past the ceiling")
    }

    @Test func pressureOrHighEventsRaiseMemoryHigh() {
        var stalled = Observation(seconds: 1, memoryCurrent: 50 * mib)
        stalled.memoryStall = 0.3
        #expect(LimitTuner.decide(stalled, limits: TunedLimits(memory: 100 * mib), bounds: v2).first?.action == .set(.memoryHigh))
        var throttled = Observation(seconds: 1, memoryCurrent: 50 * mib)
        throttled.highEvents = 3
        let d = LimitTuner.decide(throttled, limits: TunedLimits(memory: 100 * mib), bounds: v2)
        #expect(d.first?.to == 125 * mib)
        #expect(d.first?.reason.contains("memory.high") == true)
    }

    @Test func spikeToTheCeilingSnapsToIt() {
        var spike = Observation(seconds: 1, memoryCurrent: 900 * mib)
        spike.highEvents = 1
        #expect(LimitTuner.decide(spike, limits: TunedLimits(memory: 800 * mib), bounds: v2).first?.to == 1024 * mib)
        #expect(LimitTuner.decide(spike, limits: TunedLimits(memory: 1024 * mib), bounds: v2).isEmpty, "nothing above the ceiling")
    }

    @Test func v1TunesItsSoftLimitTheSameWay() {
        var bounds = v2
        bounds.memoryKnob = .memorySoft
        let near = Observation(seconds: 1, memoryCurrent: 95 * mib)
        let d = LimitTuner.decide(near, limits: TunedLimits(memory: 100 * mib), bounds: bounds)
        #expect(d.first?.action == .set(.memorySoft))
        #expect(d.first.map { $0.to > 100 * mib } == true)
    }

    @Test func noRoomOnTheHostMeansNoRaise() {
        var bounds = v2
        bounds.memoryAvailable = 0
        var o = Observation(seconds: 1, memoryCurrent: 95 * mib)
        o.highEvents = 1
        #expect(LimitTuner.decide(o, limits: TunedLimits(memory: 100 * mib), bounds: bounds).isEmpty)
    }

    @Test func throttledCPUIsRaisedOnlyWithIdleCPUs() {
        var o = Observation(seconds: 1, memoryCurrent: 0)
        o.cpuThrottled = 0.4
        let raised = LimitTuner.decide(o, limits: TunedLimits(cpuQuota: 50_000), bounds: v2)
        #expect(raised.first?.action == .set(.cpuQuota))
        #expect(raised.first?.to == 100_000)
        var busy = v2
        busy.idleCPUs = 0.1
        #expect(LimitTuner.decide(o, limits: TunedLimits(cpuQuota: 50_000), bounds: busy).isEmpty)
        #expect(LimitTuner.decide(o, limits: TunedLimits(cpuQuota: 200_000), bounds: v2).isEmpty, "at the ceiling")
    }
}

@Suite struct MonitorSeriesTests {
    @Test func shortTasksAreSampledDenselyAndTheScheduleCoversTwoSamples() {
        #expect([0.2, 0.7, 1.5, 3].map(Monitor.interval(at:)) == [10, 25, 50, 250])
        #expect(Monitor.lookahead(at: 0.2) == 0.02)
        #expect(Monitor.lookahead(at: 0.7) == 0.05)
        #expect(Monitor.lookahead(at: 3) == UsageSchedule.lookahead, "beyond 0.1 s memory events wake the monitor first")
        // A past run growing 500 MiB/s, sampled every 10 ms: looking two samples ahead, the limit is
        // 10 MiB (and the margin) above today's 100 MiB, not the 50 MiB of a 0.1 s look-ahead.
        let mib: UInt64 = 1 << 20
        let ramp = stride(from: 0.0, through: 0.6, by: 0.01).map { (t: $0, bytes: UInt64($0 * 500) * mib) }
        var f = UsageSchedule.Follower(UsageSchedule(runs: [ramp]))
        let near = f.next(usage: 100 * mib, seconds: 0.2, lookahead: 0.02) ?? 0
        #expect(near >= UsageSchedule.withMargin(100 * mib) && near <= UsageSchedule.withMargin(112 * mib), "\(near >> 20) MiB")
        var slow = UsageSchedule.Follower(UsageSchedule(runs: [ramp]))
        #expect((slow.next(usage: 100 * mib, seconds: 0.2) ?? 0) >= UsageSchedule.withMargin(140 * mib))
    }

    @Test func downsamplingKeepsEachBucketsPeak() {
        let samples = (0..<1000).map { UsageSample(seconds: Double($0), memoryBytes: UInt64($0 % 7 == 0 ? 1000 : $0)) }
        let reduced = Monitor.downsample(samples, to: 100)
        #expect(reduced.count <= 100)
        #expect(reduced.map { $0.memoryBytes ?? 0 }.max() == 1000)
    }

    @Test func psiTotalsAreRead() {
        #expect(CgroupSample.psiSomeTotal("some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=99") == 1234)
        #expect(CgroupSample.psiSomeTotal(nil) == nil)
    }
}
