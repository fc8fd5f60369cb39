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

    /// Runs `argv` with output captured in files (no pipe deadlock). `onStart` gets the pid.
    @discardableResult
    static func run(_ argv: [String], cwd: String? = nil, environment: [String: String]? = nil,
                    onStart: ((Int32) -> Void)? = nil) -> RunResult {
        let dir = makeTemporaryDirectory()
        defer { removeTree(dir) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: argv[0].hasPrefix("/") ? argv[0] : "/usr/bin/env")
        process.arguments = argv[0].hasPrefix("/") ? Array(argv.dropFirst()) : argv
        process.currentDirectoryURL = URL(fileURLWithPath: cwd ?? dir)
        if let environment { process.environment = environment }
        _ = FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        _ = FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: dir + "/out")
        process.standardError = FileHandle(forWritingAtPath: dir + "/err")
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            return RunResult(status: -1, stdout: "", stderr: "could not start \(argv): \(error)", pid: -1)
        }
        onStart?(process.processIdentifier)
        process.waitUntilExit()
        let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        return RunResult(
            status: status,
            stdout: (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "",
            pid: process.processIdentifier)
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
