@testable import DgrunEngine
import DgrunRuntime
import Testing

/// Which ad-hoc runs are kept for tuning: a run with nothing to tune in it never makes a later
/// start open the history store.
@Suite struct AdHocHistoryTests {
    let history = AdHocHistory(argv: ["/bin/true"], directory: "/tmp")

    @Test func aSlowTrueOnALoadedHostIsNotRecorded() {
        #expect(!history.worthRecording(RunOutcome(exitCode: 0, wallSeconds: 0.3, cpuUserSeconds: 0.001, cpuSystemSeconds: 0.002,
                                                   memoryPeakBytes: 1 << 20)))
        #expect(!history.worthRecording(RunOutcome(exitCode: 0, wallSeconds: 0.05, cpuUserSeconds: 0.04, memoryPeakBytes: 64 << 20)),
                "short")
    }

    @Test func runsThatWorkedOrHeldMemoryAreRecorded() {
        #expect(history.worthRecording(RunOutcome(exitCode: 0, wallSeconds: 0.2, cpuUserSeconds: 0.04, cpuSystemSeconds: 0.02)))
        #expect(history.worthRecording(RunOutcome(exitCode: 0, wallSeconds: 0.2, memoryPeakBytes: 24 << 20)))
        #expect(history.worthRecording(RunOutcome(exitCode: 137, oomKilled: true, wallSeconds: 0.01)), "OOM-killed: always")
        #expect(!history.worthRecording(RunOutcome(exitCode: 125, wallSeconds: 1, cpuUserSeconds: 1, error: "could not start")))
    }
}
