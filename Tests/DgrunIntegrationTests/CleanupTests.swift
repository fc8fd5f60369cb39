import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Nothing left behind: cgroups, processes, mounts — after a normal exit, a timeout and a kill -9.
@Suite(.serialized, .enabled(if: Harness.canLimit, "\(Harness.limitSkipReason)"))
struct CleanupTests {
    func assertNoMountsOnTheHost() {
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        #expect(!mounts.contains("dgrun"), "dgrun's mounts live in its own mount namespace")
    }

    @Test func normalExitLeavesNothing() {
        let marker = "dgrun-clean-\(getpid())-a"
        let r = Harness.dgrun(["exec", "--memory", "64m", "--", "sh", "-c", "(sleep 60; : \(marker)) & echo started"])
        #expect(r.status == 0)
        #expect(Harness.cgroups(ofDgrun: r.pid).isEmpty)
        #expect(Harness.processes(containing: marker).isEmpty, "a background child dies with the sandbox")
        assertNoMountsOnTheHost()
    }

    /// The run's cgroups are made while the init builds the mounts; an init whose mounts fail may
    /// be gone before they reach it. The failure is still the stage's, and nothing is left.
    @Test func aSetupFailureInsideTheSandboxLeavesNothing() {
        let r = Harness.dgrun(["exec", "--memory", "64m", "--tmpfs", "/proc/sys/dgrun-no-such-dir", "--", "true"])
        #expect(r.status == 125)
        #expect(r.stderr.contains("sandbox setup failed: mount a tmpfs /proc/sys/dgrun-no-such-dir"), "\(r.stderr)")
        #expect(Harness.cgroups(ofDgrun: r.pid).isEmpty)
        assertNoMountsOnTheHost()
    }

    @Test func timeoutLeavesNothing() {
        let marker = "dgrun-clean-\(getpid())-b"
        let r = Harness.dgrun(["exec", "--timeout", "300ms", "--pids", "32", "--", "sh", "-c",
                               "setsid sh -c 'sleep 60; : \(marker)' & sleep 60"])
        #expect(r.status == 124)
        #expect(Harness.cgroups(ofDgrun: r.pid).isEmpty)
        #expect(Harness.processes(containing: marker).isEmpty, "even a setsid daemon dies")
    }

    /// dgrun exits while the sandbox's init may still be tearing its namespaces down; it must not
    /// leave that init to its own parent's reaper (a container's pid 1 often reaps nothing). A
    /// subreaper that never reaps stands in for one: after 20 runs it has no child of dgrun's.
    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func noInitIsLeftToTheParentsReaper() {
        let script = """
        import ctypes, os, subprocess, sys, time
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        for _ in range(20):
            subprocess.run([sys.argv[1], "exec", "--memory", "64m", "--", "true"], check=True)
        time.sleep(0.3)
        left = []
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            left.append(pid)
        print(len(left))
        """
        let r = Harness.run(["python3", "-c", script, Harness.binary])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "inits left to the reaper: \(r.stdout)")
    }

    @Test func killNineThenNextRunCleansUp() {
        let marker = "dgrun-clean-\(getpid())-c"
        var victim: Int32 = 0
        let r = Harness.run([Harness.binary, "exec", "--memory", "64m", "--", "sh", "-c", "sleep 60; : \(marker)"]) { pid in
            victim = pid
            _ = Harness.waitUntil(timeout: 5) { !Harness.processes(containing: marker).isEmpty }
            kill(pid, SIGKILL)
        }
        #expect(r.status == 137)
        #expect(Harness.waitUntil(timeout: 3) { Harness.processes(containing: marker).isEmpty },
                "the sandbox dies with dgrun (PDEATHSIG on its init)")
        // The SIGKILLed dgrun could not remove its cgroups; the next dgrun (or one that another suite
        // runs meanwhile) removes them because their owner is dead.
        let next = Harness.dgrun(["exec", "--", "true"])
        #expect(next.status == 0)
        #expect(Harness.cgroups(ofDgrun: victim).isEmpty, "the next dgrun removed the stale cgroups")
        assertNoMountsOnTheHost()
    }
}
