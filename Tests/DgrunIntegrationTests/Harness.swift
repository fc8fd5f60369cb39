import DgrunCgroups
import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Runs the real dgrun binary (built beside this test bundle) and collects what it did.
struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var pid: Int32

    /// The --report JSON, when one was asked for.
    var report: [String: Any] = [:]
}

enum Harness {
    static let binary: String = {
        if let path = Foundation.ProcessInfo.processInfo.environment["DGRUN_BIN"] { return path }
        let exe = FileIO.realPath("/proc/self/exe") ?? CommandLine.arguments[0]
        let dir = (exe as NSString).deletingLastPathComponent
        _ = preloadLibrary(beside: dir)
        return dir + "/dgrun"
    }()

    /// The tracer's fast-path library where dgrun finds it, beside the binary (SwiftPM cannot
    /// build it: see scripts/build-preload.sh), built from the current source once per test run,
    /// so that every traced run here goes through it as a user's would. nil without a C compiler.
    static var preloadLibrary: String? { preloadLibrary(beside: (binary as NSString).deletingLastPathComponent) }
    private static let builtPreload = Locked<[String: String?]>([:])
    static func preloadLibrary(beside dir: String) -> String? {
        builtPreload.withLock { built in
            if let done = built[dir] { return done }
            var path: String?
            if hasCommand("cc") {
                // A checkout under /tmp (a CI runner's clone, say) is hidden in the sandbox by its
                // private /tmp, so dgrun would not preload the library from there: it is built
                // under /var/tmp instead and named by DGRUN_PRELOAD, and removed at exit.
                var target = dir
                if dir == "/tmp" || dir.hasPrefix("/tmp/") {
                    var template = Array("/var/tmp/dgrun-test-preload-XXXXXX".utf8CString)
                    if let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) {
                        target = String(cString: made)
                        chmod(target, 0o755)
                        preloadDirectory.withLock { $0 = target }
                        atexit { if let dir = Harness.preloadDirectory.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: dir) } }
                    }
                }
                let r = run(["/bin/sh", repositoryRoot + "/scripts/build-preload.sh", target])
                if r.status == 0 { path = target + "/libdgrun-preload.so" } else { print("cannot build the fast-path library: \(r.stderr)") }
                if let path, target != dir { setenv("DGRUN_PRELOAD", path, 1) }
            }
            built[dir] = path
            return path
        }
    }
    private static let preloadDirectory = Locked<String?>(nil)

    static let repositoryRoot: String = {
        var parts = #filePath.split(separator: "/").map(String.init)
        parts.removeLast(3)
        return "/" + parts.joined(separator: "/")
    }()

    static var isRoot: Bool { getuid() == 0 }

    /// The dgrun binary as uid 65534 can run it: this build when that user can reach it, else a copy
    /// (with the profiles, where dgrun looks for them beside its binary) in a directory made for
    /// it, removed when the tests end. nil when no copy could be made.
    static let unprivilegedBinary: String? = {
        func reachable(_ binary: String) -> Bool {
            run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", binary, "--version"]).status == 0
        }
        guard isRoot, hasCommand("setpriv") else { return nil }
        if reachable(binary) { return binary }
        var template = Array("/var/tmp/dgrun-test-bin-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { return nil }
        let prefix = String(cString: made)
        copiedPrefix.withLock { $0 = prefix }
        atexit { if let prefix = copiedPrefix.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: prefix) } }
        let copy = run(["/bin/sh", "-c", "mkdir -p \(prefix)/bin \(prefix)/share/dgrun && cp \(binary) \(prefix)/bin/dgrun && mkdir -p \(prefix)/lib/dgrun && { ! [ -f \((binary as NSString).deletingLastPathComponent)/libdgrun-preload.so ] || cp \((binary as NSString).deletingLastPathComponent)/libdgrun-preload.so \(prefix)/lib/dgrun/; } && cp -r \(repositoryRoot)/profiles \(prefix)/share/dgrun/profiles && chmod -R a+rX \(prefix)"])
        return copy.status == 0 && reachable(prefix + "/bin/dgrun") ? prefix + "/bin/dgrun" : nil
    }()
    private static let copiedPrefix = Locked<String?>(nil)
    static let layout = CgroupLayout.detect()
    /// Whether this machine can limit, decided by the tests' own probe (a memory cgroup made,
    /// limited and removed here), not by the cgroup detection that the limit tests are testing.
    static let canLimit: Bool = isRoot && cgroupProbeFailure == nil
    static let limitSkipReason = "needs root and a writable memory cgroup (\(cgroupProbeFailure ?? "not root"))"
    static let cgroupProbeFailure: String? = {
        let base = FileIO.isDirectory("/sys/fs/cgroup/memory") ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup"
        let knob = base.hasSuffix("/memory") ? "memory.limit_in_bytes" : "memory.max"
        let probe = base + "/dgrun-test-probe-\(getpid())"
        guard mkdir(probe, 0o755) == 0 || errno == EEXIST else { return "mkdir \(probe): \(String(cString: strerror(errno)))" }
        defer { rmdir(probe) }
        do { try FileIO.write(probe + "/" + knob, "67108864") } catch { return "\(error)" }
        return nil
    }()

    /// The lanes `.ci/run` requires (DGRUN_REQUIRE_LANES=root,limits,rootless,vm): there an
    /// unavailable lane fails the run instead of being skipped.
    static let requiredLanes: Set<String> = Set((Foundation.ProcessInfo.processInfo.environment["DGRUN_REQUIRE_LANES"] ?? "")
        .split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })

    struct LaneUnavailable: Error, CustomStringConvertible { var description: String }

    /// Ends the current test as skipped with its reason, or as failed when `lane` is required.
    static func unavailable(_ lane: String, _ reason: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Never {
        if requiredLanes.contains(lane) {
            Issue.record("the \(lane) lane is required (DGRUN_REQUIRE_LANES) but cannot run: \(reason)", sourceLocation: sourceLocation)
            throw LaneUnavailable(description: reason)
        }
        print("skipped: \(reason)")
        try Test.cancel(Comment(rawValue: reason), sourceLocation: sourceLocation)
    }
    /// "v2" inside the VM lane, where the same limit tests run on a real cgroup-v2 kernel.
    static let lane = Foundation.ProcessInfo.processInfo.environment["DGRUN_TEST_LANE"] ?? "host"

    static func hasCommand(_ name: String) -> Bool {
        (Foundation.ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
            .contains { access("\($0)/\(name)", X_OK) == 0 }
    }

    static func makeTemporaryDirectory(mode: mode_t = 0o755) -> String {
        var template = Array("/tmp/dgrun-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }!
        let path = String(cString: made)
        chmod(path, mode)
        return path
    }

    static func removeTree(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// dgrun keeps the history of ad-hoc runs in $XDG_STATE_HOME: the tests' goes to a directory of
    /// their own, never the user's.
    static let isolatedState: String = {
        let dir = makeTemporaryDirectory()
        setenv("XDG_STATE_HOME", dir, 1)
        setenv("XDG_CACHE_HOME", dir, 1)
        isolatedStateDirectory.withLock { $0 = dir }
        // Removed when the tests end: one such directory was left behind per test run.
        atexit { if let dir = isolatedStateDirectory.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: dir) } }
        return dir
    }()
    private static let isolatedStateDirectory = Locked<String?>(nil)

    /// Runs `argv` with output captured in files (no pipe deadlock). `onStart` gets the pid.
    /// posix_spawn + waitpid rather than Foundation's Process, whose run loop needs a socket pair
    /// that the VM lane's guest could not create.
    @discardableResult
    static func run(_ argv: [String], cwd: String? = nil, onStart: ((Int32) -> Void)? = nil) -> RunResult {
        _ = isolatedState
        let dir = makeTemporaryDirectory()
        defer { removeTree(dir) }
        // env -C: the working directory without chdir in this multi-threaded process; env execs
        // the command, so the pid is the command's. Subprocess starts it with no blocked signals
        // and default dispositions, whatever the test runner's thread had (a blocked SIGTERM kept
        // `kill` from ending a child's sleep).
        let pid: pid_t
        do {
            pid = try Subprocess.spawn(["/usr/bin/env", "-C", cwd ?? dir] + argv, stdin: "/dev/null",
                                       stdout: dir + "/out", stderr: dir + "/err")
        } catch {
            return RunResult(status: -1, stdout: "", stderr: "could not start \(argv): \(error)", pid: -1)
        }
        onStart?(pid)
        let code = Subprocess.wait(pid)
        return RunResult(
            status: code,
            stdout: (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "",
            pid: pid)
    }

    /// Starts `argv` in the background (output discarded); the caller ends it with `stop`.
    static func start(_ argv: [String], cwd: String? = nil) -> pid_t {
        (try? Subprocess.spawn(["/usr/bin/env", "-C", cwd ?? "/"] + argv, stdin: "/dev/null",
                               stdout: "/dev/null", stderr: "/dev/null")) ?? -1
    }

    /// Ends a process started by `start`, by its id, and reaps it.
    static func stop(_ pid: pid_t) {
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// Runs `dgrun ARGS` with a --report, parsed into `report`.
    @discardableResult
    static func dgrun(_ args: [String], cwd: String? = nil, onStart: ((Int32) -> Void)? = nil) -> RunResult {
        let reportDir = makeTemporaryDirectory()
        defer { removeTree(reportDir) }
        let reportPath = reportDir + "/report.json"
        var argv = [binary]
        if args.first == "exec" {
            argv += ["exec", "--report", reportPath] + args.dropFirst()
        } else {
            argv += args
        }
        var result = run(argv, cwd: cwd, onStart: onStart)
        if let data = FileManager.default.contents(atPath: reportPath),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            result.report = object
        }
        return result
    }

    /// cgroup directories of a dgrun process (named dgrun-PID-...), anywhere below /sys/fs/cgroup.
    static func cgroups(ofDgrun pid: Int32) -> [String] {
        var found: [String] = []
        func walk(_ dir: String, depth: Int) {
            guard depth < 7 else { return }
            for name in FileIO.listDirectory(dir) {
                let path = dir + "/" + name
                guard FileIO.isDirectory(path) else { continue }
                if name.hasPrefix("dgrun-\(pid)-") { found.append(path) } else { walk(path, depth: depth + 1) }
            }
        }
        walk("/sys/fs/cgroup", depth: 0)
        return found
    }

    /// Host processes whose command line contains `marker`.
    static func processes(containing marker: String) -> [Int32] {
        FileIO.listDirectory("/proc").compactMap { Int32($0) }.filter { pid in
            guard let bytes = try? FileIO.readBytes("/proc/\(pid)/cmdline") else { return false }
            return String(decoding: bytes.map { $0 == 0 ? 32 : $0 }, as: UTF8.self).contains(marker)
        }
    }

    static func waitUntil(timeout: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }
}
