import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// CI must not stay green because its privileged lanes quietly did not run: each lane named in
/// DGRUN_REQUIRE_LANES (set by .ci/run) is checked here by its own probe.
@Suite struct LaneTests {
    @Test func everyRequiredLaneCanRun() throws {
        if Harness.requiredLanes.isEmpty { try Harness.unavailable("", "no lane is required (DGRUN_REQUIRE_LANES is unset)") }
        for lane in Harness.requiredLanes.sorted() {
            let problem: String?
            switch lane {
            case "root": problem = Harness.isRoot ? nil : "not running as root"
            case "limits": problem = Harness.canLimit ? nil : Harness.limitSkipReason
            case "rootless": problem = HostileTests.nobodyReachable ? nil : "uid 65534 cannot run the dgrun binary (setpriv missing, or the build is not reachable)"
            case "vm": problem = VMLane.unavailableReason
            case "fuzz": problem = nil  // run, and required, by scripts/test.sh itself (scripts/fuzz.sh --check)
            default: problem = "unknown lane \"\(lane)\" (known: root, limits, rootless, vm, fuzz)"
            }
            #expect(problem == nil, "the \(lane) lane is required but cannot run: \(problem ?? "")")
        }
    }
}
