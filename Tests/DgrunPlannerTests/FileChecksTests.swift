import Foundation
import DgrunPlanner
import DgrunStore
import DgrunSystem
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The no-op check's fast path (`Planner.filesUnchanged` over the packed `FileChecks`) against
/// the full check (`Planner.plan`): on random dependency lists and hosts, the fast path says
/// "unchanged" only where the full check finds no change, blocker, refresh or hash, with the same
/// count; and it says so wherever the full check finds nothing to do.
@Suite struct FileChecksTests {
    let scratch = Scratch()

    struct Random {
        var state: UInt64
        mutating func next(_ n: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(n))
        }
    }

    func store(relocated: Bool) throws -> (Store, String) {
        let root = scratch.directory("dgrun-filechecks")
        let task = root + "/task"
        mkdir(task, 0o755)
        let relocation = relocated ? PathRelocation(taskDirectory: task, workspaceRoot: root) : nil
        return (try Store(directory: task + "/.dgrun", relocation: relocation), task)
    }

    func fingerprint(_ n: Int) -> FileFingerprint {
        FileFingerprint(size: Int64(n), mtimeNs: Int64(n) * 7, ctimeNs: Int64(n) * 11, inode: UInt64(n), device: 3)
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func theFastPathNeverSaysUnchangedWhereTheFullCheckFindsAChange(relocated: Bool, directories: Bool) throws {
        var random = Random(state: (relocated ? 7 : 11) &+ (directories ? 100 : 0))
        var fastPaths = 0, unchangedCases = 0, handles = 0
        for round in 0..<300 {
            let (store, task) = try store(relocated: relocated)
            let root = String(task.dropLast(5))
            let places = [task + "/src", task, root + "/other/out", "/usr/lib", "/proc/self", "/dev", root]
            let relations: [Dependency.Relation] = [.reads, .reads, .loads, .executes, .requires, .writes, .probes, .uses, .connects]
            var deps: [Dependency] = []
            var host = FakeHost()
            let table = DirectoryTable()
            if directories { host.directories = table }
            // With directory handles, more entries: more of them under the task and the workspace.
            let count = 1 + random.next(directories ? 40 : 12)
            let moving = round % 3 != 0   // a third of the rounds: nothing moves at all
            var recordedOf: [String: FileFingerprint] = [:]   // one file, one stat, whatever the relation
            for i in 0..<count {
                let path = places[random.next(places.count)] + "/f\(random.next(4))"
                let relation = relations[random.next(relations.count)]
                let known = recordedOf[path] ?? fingerprint(i + 1)
                recordedOf[path] = known
                let recorded = random.next(6) == 0 ? nil : known
                deps.append(Dependency(nodeID: "file:" + path, kind: random.next(8) == 0 ? "infrastructure" : "file", ref: path,
                                       relation: relation, version: "sha256:v\(i)", fingerprint: relation == .probes ? nil : recorded,
                                       traced: random.next(7) != 0))
                if relation == .probes {
                    if moving && random.next(3) == 0 { host.files[path] = fingerprint(99) }
                } else if let recorded {
                    switch moving ? random.next(5) : 0 {
                    case 0, 1, 2: host.files[path] = recorded
                    case 3: host.files[path] = fingerprint(i + 50)
                    default: break
                    }
                }
            }
            deps.append(Dependency(nodeID: "service:tcp://127.0.0.1:1", kind: "service", ref: "tcp://127.0.0.1:1", relation: .connects))
            // One row per (ref, relation, node): the store keeps the last of duplicates.
            var seen = Set<String>()
            deps = deps.reversed().filter { seen.insert($0.ref + "|" + $0.relation.rawValue).inserted }.reversed()
            try recordFinishedRun(store, task: task, dependencies: deps)

            let planner = Planner(environment: host)
            let fast = try store.withFileChecks(task: task) { checks in checks.flatMap(planner.filesUnchanged) }
            let full = planner.plan(PlanInput(taskID: task, dependencies: try store.dependencies(task: task), lastRun: nil,
                                              argv: ["x"], environmentDigest: "e"))
            let fileMoved = !full.changes.isEmpty || !full.blockers.isEmpty || !full.refreshed.isEmpty || full.hashed > 0
            if let fast {
                fastPaths += 1
                #expect(!fileMoved, "round \(round): fast path said unchanged, full check: \(full.changes) \(full.blockers)")
                var rest = PlanInput(taskID: task, dependencies: try store.nonPathDependencies(task: task), lastRun: nil,
                                     argv: ["x"], environmentDigest: "e")
                rest.verifiedFiles = fast
                #expect(planner.plan(rest).checked == full.checked, "round \(round)")
                #expect(try store.nonPathDependencies(task: task).map(\.ref) == ["tcp://127.0.0.1:1"])
            }
            // And the converse: where the full check finds nothing to do, the fast path finds it too.
            if !fileMoved {
                unchangedCases += moving ? 0 : 1
                #expect(fast != nil, "round \(round): the full check found nothing, yet the fast path fell back")
            }
            #expect(table.openCount == 0, "round \(round): directories left open")
            handles += table.everOpened
        }
        // Only a relocated store has paths under the task directory and the workspace to look up from them.
        #expect((directories && relocated) == (handles > 0), "directory handles used: \(handles)")
        #expect(fastPaths > 30 && unchangedCases > 10, "fast \(fastPaths), unchanged \(unchangedCases)")
    }

    @Test func aMalformedBlobFallsBackToTheFullCheck() throws {
        let (store, task) = try store(relocated: true)
        try recordFinishedRun(store, task: task, dependencies: [Dependency(nodeID: "file:/usr/lib/x", kind: "file", ref: "/usr/lib/x", relation: .reads,
                               fingerprint: fingerprint(1))])
        try SQLiteConnection(path: task + "/.dgrun/state.db").execute("UPDATE task SET file_checks = X'00FFFFFFFF2F'")
        let planner = Planner(environment: FakeHost(files: ["/usr/lib/x": fingerprint(1)]))
        #expect(try store.withFileChecks(task: task) { checks in checks.flatMap(planner.filesUnchanged) } == nil)
        try store.rebuildFileChecks(task: task)
        #expect(try store.withFileChecks(task: task) { checks in checks.flatMap(planner.filesUnchanged) } == 1)
    }

    /// The host's directory handles: a task's files stat'ed by name from their directory find
    /// the same as by full path, whatever happens to a file or to the directory itself.
    @Test func directoryHandlesSeeWhatFullPathsSee() throws {
        let (store, task) = try store(relocated: true)
        let src = task + "/src", other = task + "/other"
        mkdir(src, 0o755)
        mkdir(other, 0o755)
        var deps: [Dependency] = []
        for i in 0..<8 {
            let path = src + "/f\(i)"
            _ = FileManager.default.createFile(atPath: path, contents: Data("\(i)".utf8))
            _ = FileManager.default.createFile(atPath: other + "/f\(i)", contents: Data("\(i)".utf8))
            deps.append(Dependency(nodeID: "file:" + path, kind: "file", ref: path, relation: .reads,
                                   version: "sha256:v", fingerprint: Fingerprints.of(path), traced: true))
        }
        deps.append(Dependency(nodeID: "file:" + src + "/gone", kind: "file", ref: src + "/gone", relation: .probes, traced: true))
        try recordFinishedRun(store, task: task, dependencies: deps)
        let planner = Planner(environment: HostEnvironment())
        func fast() throws -> Int? { try store.withFileChecks(task: task) { checks in checks.flatMap(planner.filesUnchanged) } }
        #expect(try fast() == 9)
        // A probed name appears.
        _ = FileManager.default.createFile(atPath: src + "/gone", contents: Data())
        #expect(try fast() == nil)
        unlink(src + "/gone")
        #expect(try fast() == 9)
        // One file rewritten (another inode, the same content).
        unlink(src + "/f3")
        _ = FileManager.default.createFile(atPath: src + "/f3", contents: Data("3".utf8))
        #expect(try fast() == nil)
        try recordFinishedRun(store, task: task, dependencies: deps.map {
            var d = $0
            if d.relation != .probes { d.fingerprint = Fingerprints.of(d.ref) }
            return d
        })
        #expect(try fast() == 9)
        // The directory swapped for a link to a copy: other inodes, so changed.
        rename(src, task + "/src.old")
        symlink(other, src)
        #expect(try fast() == nil)
        // The directory gone: the inputs are missing.
        unlink(src)
        #expect(try fast() == nil)
        rename(task + "/src.old", src)
        #expect(try fast() == 9)
    }
}
