import DgrunStore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The directories of one test, removed when it ends: a suite holds one (`let scratch = Scratch()`),
/// and Swift Testing makes the suite, so its scratch, anew for each test.
final class Scratch {
    private var made: [String] = []

    func directory(_ prefix: String) -> String {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        made.append(dir)
        return dir
    }

    deinit { for dir in made { try? FileManager.default.removeItem(atPath: dir) } }
}

/// A finished, successful run of `task` that recorded `dependencies`, as exec records one.
func recordFinishedRun(_ store: Store, task: String, outputs: [String: String] = [:], dependencies: [Dependency]) throws {
    try store.registerTask(id: task, directory: task)
    var run = RunRecord(taskID: task, status: .running, startedAt: 1, pid: getpid(), argv: ["x"], environmentDigest: "e", reasons: [])
    let id = try store.beginRun(run, pidStartTime: nil)
    run.status = .finished
    run.finishedAt = 2
    run.exitCode = 0
    run.outputs = outputs
    try store.finishRun(run, id: id, graphJSON: "{}", dependencies: dependencies)
}
