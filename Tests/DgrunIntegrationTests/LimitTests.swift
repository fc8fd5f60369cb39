import DgrunCgroups
import Foundation
import Testing

/// Cgroup limits on whatever this kernel has: the hybrid v1 layout on the host, cgroup v2 in the
/// VM lane (rootfs-scripts/vm-test.sh runs this same suite there with DGRUN_TEST_LANE=v2).
@Suite(.serialized, .enabled(if: Harness.canLimit, "\(Harness.limitSkipReason)"))
struct LimitTests {
    static let expectedDriver = Harness.layout.rawValue

    @Test func memoryBombIsOOMKilledAndReported() {
        // tail keeps a newline-free line in memory: it grows until the limit.
        let r = Harness.dgrun(["exec", "--memory", "64m", "--timeout", "60s", "--", "sh", "-c", "head -c 512m /dev/zero | tail >/dev/null"])
        #expect(r.status == 1 || r.status == 137, "sh reports tail's death or is killed itself: \(r.status)")
        #expect(r.stderr.contains("out of memory (limit 64 MiB"), "\(r.stderr)")
        #expect(r.report["oom_killed"] as? Bool == true)
        #expect(r.report["cgroup_driver"] as? String == Self.expectedDriver)
        let peak = (r.report["memory_peak_bytes"] as? NSNumber)?.intValue ?? 0
        #expect(peak >= 48 << 20 && peak <= 64 << 20, "peak \(peak)")
        let direct = Harness.dgrun(["exec", "--memory", "32m", "--timeout", "60s", "--", "tail", "/dev/zero"])
        #expect(direct.status == 137)
        #expect(direct.stderr.contains("killed: out of memory (limit 32 MiB, peak "), "\(direct.stderr)")
        #expect(direct.report["signal"] as? Int == 9)
    }

    @Test func forkBombIsCappedByPids() {
        let r = Harness.dgrun(["exec", "--pids", "16", "--timeout", "20s", "--", "sh", "-c",
                               "i=0; while [ $i -lt 64 ]; do sleep 1 & i=$((i+1)); done; wait"])
        #expect(r.stderr.contains("fork"), "forks beyond the limit fail: \(r.stderr)")
        let peak = r.report["pids_peak"] as? Int ?? 0
        #expect(peak >= 10 && peak <= 16, "pids peak \(peak)")
        #expect((r.report["limits"] as? [String: Any])?["pids"] as? Int == 16)
    }

    /// The sandbox's init stays in dgrun's cgroup: --pids counts the task's processes alone, and
    /// the run's cgroups are gone (every process of the task reaped) when dgrun has exited.
    @Test func pidsCountTheTaskAloneAndTheCgroupsGoWithTheExit() {
        let one = Harness.dgrun(["exec", "--pids", "1", "--", "true"])
        #expect(one.status == 0, "one process for a command that does not fork: \(one.stderr)")
        #expect(one.report["pids_peak"] as? Int == 1)
        let two = Harness.dgrun(["exec", "--pids", "1", "--timeout", "20s", "--", "sh", "-c", "true & wait"])
        #expect(two.stderr.contains("fork"), "its first fork fails: \(two.stderr)")
        for _ in 0..<20 {
            let r = Harness.dgrun(["exec", "--memory", "64m", "--pids", "8", "--", "sh", "-c", "sleep 30 & exit 3"])
            #expect(r.status == 3)
            #expect(Harness.cgroups(ofDgrun: r.pid).isEmpty, "removed before dgrun exited")
        }
    }

    @Test func cpuSpinnerGetsItsQuota() {
        let r = Harness.dgrun(["exec", "--cpus", "0.5", "--timeout", "3s", "--", "sh", "-c", "while :; do :; done"])
        #expect(r.status == 124)
        let cpu = (r.report["cpu_user_s"] as? Double ?? 0) + (r.report["cpu_sys_s"] as? Double ?? 0)
        let wall = r.report["wall_s"] as? Double ?? 1
        #expect(cpu / wall <= 0.55, "used \(cpu)s of CPU in \(wall)s")
        #expect(cpu / wall >= 0.2, "the spinner ran: \(cpu)s in \(wall)s")
    }

    @Test func reportHasTheContractFields() {
        let r = Harness.dgrun(["exec", "--memory", "128m", "--cpus", "1", "--pids", "64", "--", "true"])
        #expect(r.status == 0, "\(r.stderr)")
        for key in ["exit_code", "signal", "oom_killed", "timed_out", "wall_s", "cpu_user_s", "cpu_sys_s",
                    "memory_peak_bytes", "pids_peak", "cgroup_driver", "limits", "adjustments"] {
            #expect(r.report[key] != nil, "missing \(key)")
        }
        #expect(r.report["signal"] is NSNull)
        #expect(r.report["adjustments"] as? [Any] != nil)
        let limits = r.report["limits"] as? [String: Any] ?? [:]
        #expect(limits["memory_bytes"] as? Int == 128 << 20)
        #expect(limits["cpus"] as? Double == 1)
        #expect(limits["enforced_by"] as? String == "cgroup")
    }

    @Test func limitsHoldInsideTheSandboxCgroup() {
        // The sandbox sees its own cgroup as the root of its cgroup namespace.
        let r = Harness.dgrun(["exec", "--memory", "96m", "--", "cat", "/proc/self/cgroup"])
        #expect(r.status == 0)
        for line in r.stdout.split(separator: "\n") where !line.contains("name=") {
            #expect(line.hasSuffix(":/"), "\(line)")
        }
    }
}
