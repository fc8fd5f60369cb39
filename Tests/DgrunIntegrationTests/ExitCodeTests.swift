import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The exit-status contract of `env`, `timeout` and `chroot`.
@Suite struct ExitCodeTests {
    @Test(arguments: [0, 3, 42])
    func commandsOwnStatus(code: Int32) {
        #expect(Harness.dgrun(["exec", "--", "sh", "-c", "exit \(code)"]).status == code)
    }

    /// Every argument reaches the command as given: empty ones, spaces, quotes, a leading dash,
    /// non-ASCII. (The release binary gives the Swift runtime its argv itself: Sources/CDgrunStart.)
    @Test func theCommandGetsItsArgumentsExactly() {
        let args = ["", "two words", "'quoted'", "--memory", "ünïcødé", "-", "a=b"]
        let r = Harness.dgrun(["exec", "--", "/bin/sh", "-c", "printf '[%s]' \"$@\"", "sh"] + args)
        #expect(r.status == 0)
        #expect(r.stdout == args.map { "[\($0)]" }.joined())
    }

    @Test func notFoundIs127AndNotExecutableIs126() {
        let missing = Harness.dgrun(["exec", "--", "dgrun-no-such-command"])
        #expect(missing.status == 127)
        #expect(missing.stderr.contains("dgrun-no-such-command: command not found"))
        #expect(missing.report["exit_code"] as? Int == 127)
        let notExecutable = Harness.dgrun(["exec", "--", "/etc/hostname"])
        #expect(notExecutable.status == 126)
        #expect(notExecutable.stderr.contains("cannot execute /etc/hostname"))
    }

    @Test(arguments: [
        (["exec", "--bogus", "--", "true"], "unknown option '--bogus'"),
        (["exec", "--memroy", "1g", "--", "true"], "did you mean '--memory'"),
        (["exec", "--memory"], "needs a value"),
        (["exec", "--pids", "many", "--", "true"], "whole number"),
        ([], "USAGE"),
        (["exec", "--memory", "lots", "--", "true"], "invalid size"),
        (["exec", "--timeout", "soon", "--", "true"], "invalid duration"),
        (["exec", "--cpus", "99", "--", "true"], "out of range"),
        (["exec", "--profile", "no-such-profile", "--", "true"], "no profile named"),
        (["exec", "--net", "maybe", "--", "true"], "net"),
        (["exec"], "no task directory or command given"),
        (["exec", "--cwd", "/nonexistent", "--", "true"], "not a directory"),
        (["frobnicate"], "unknown command 'frobnicate'"),
    ])
    func badInputIs125WithAMessage(args: [String], message: String) {
        let r = Harness.dgrun(args)
        #expect(r.status == 125, "\(args): \(r.status) \(r.stderr)")
        #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
        if Harness.isRoot { #expect(Harness.cgroups(ofDgrun: r.pid).isEmpty, "no partial state") }
    }

    @Test func malformedProfileFileIs125() throws {
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        try #"{"name": "x", "network": 7}"#.write(toFile: dir + "/p.json", atomically: true, encoding: .utf8)
        let r = Harness.dgrun(["exec", "--profile", dir + "/p.json", "--", "true"])
        #expect(r.status == 125)
        #expect(r.stderr.contains("p.json") && r.stderr.contains("network"), "\(r.stderr)")
        #expect(r.report["error"] as? String != nil, "the report says what failed")
    }

    @Test func killedBySignalIs128PlusN() {
        #expect(Harness.dgrun(["exec", "--", "sh", "-c", "kill -TERM $$"]).status == 143)
        let r = Harness.dgrun(["exec", "--", "sh", "-c", "kill -KILL $$"])
        #expect(r.status == 137)
        #expect(r.report["signal"] as? Int == 9)
        #expect(r.report["oom_killed"] as? Bool == false)
    }

    @Test func timeoutIs124() {
        let start = Date()
        let r = Harness.dgrun(["exec", "--timeout", "500ms", "--", "sleep", "30"])
        #expect(r.status == 124)
        #expect(r.report["timed_out"] as? Bool == true)
        #expect(Date().timeIntervalSince(start) < 5, "SIGTERM ends sleep at once")
        // A command that ignores SIGTERM is killed after the grace period.
        let stubborn = Harness.dgrun(["exec", "--timeout", "300ms", "--", "sh", "-c", "trap '' TERM; sleep 30"])
        #expect(stubborn.status == 124)
    }

    @Test(arguments: [SIGINT, SIGTERM, SIGHUP, SIGQUIT])
    func signalsAreForwardedToEveryProcessOfTheSandbox(signal: Int32) {
        // As a CI runner cancels: the signal to dgrun's own pid. It reaches the sleeping child as
        // well as the shell waiting for it (which, for SIGINT, outwaited it before), so the run
        // ends at once, by that signal.
        let marker = "dgrun-fwd-\(signal)-\(getpid())"
        let started = Date()
        let r = Harness.dgrun(["exec", "--", "sh", "-c", "sleep 30; : \(marker)"]) { pid in
            _ = Harness.waitUntil(timeout: 5) { !Harness.processes(containing: marker).isEmpty }
            usleep(100_000)
            kill(pid, signal)
        }
        #expect(r.status == 128 + signal, "\(r.status) \(r.stderr)")
        #expect(r.report["signal"] as? Int == Int(signal), "\(r.report)")
        #expect(r.report["interrupted_by"] as? Int == Int(signal), "\(r.report)")
        #expect(Date().timeIntervalSince(started) < 10, "the run did not stop when asked")
        #expect(Harness.processes(containing: marker).isEmpty)
    }

    @Test func whatIgnoresTheSignalIsKilledAfterTheStopTimeout() {
        let marker = "dgrun-stubborn-\(getpid())"
        let started = Date()
        let r = Harness.dgrun(["exec", "--stop-timeout", "1s", "--", "sh", "-c", "trap '' INT TERM; sleep 30; : \(marker)"]) { pid in
            _ = Harness.waitUntil(timeout: 5) { !Harness.processes(containing: marker).isEmpty }
            usleep(100_000)
            kill(pid, SIGINT)
        }
        let elapsed = Date().timeIntervalSince(started)
        #expect(r.status == 137, "\(r.status) \(r.stderr)")
        #expect(r.report["interrupted_by"] as? Int == Int(SIGINT), "\(r.report)")
        #expect(elapsed > 0.9 && elapsed < 8, "killed after the 1 s stop timeout, not before: \(elapsed)")
        #expect(Harness.processes(containing: marker).isEmpty)
        #expect(Harness.dgrun(["exec", "--stop-timeout", "soon", "--", "true"]).status == 125)
    }
}
