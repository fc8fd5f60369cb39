import DgrunCgroups
import DgrunSystem
import Foundation
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
        return (exe as NSString).deletingLastPathComponent + "/dgrun"
    }()

    static let repositoryRoot: String = {
        var parts = #filePath.split(separator: "/").map(String.init)
        parts.removeLast(3)
        return "/" + parts.joined(separator: "/")
    }()

    static var isRoot: Bool { getuid() == 0 }
    static let layout = CgroupLayout.detect()
    static let canLimit: Bool = isRoot && CgroupDrivers.detect().driver != nil
    static let limitSkipReason = "needs root and a writable cgroup hierarchy (\(CgroupDrivers.detect().reason))"
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
        return dir
    }()

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
