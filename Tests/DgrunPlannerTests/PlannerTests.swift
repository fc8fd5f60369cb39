import Foundation
import Testing
@testable import DgrunPlanner
import DgrunStore

/// A host made of dictionaries: the planner's policy without touching the file system.
struct FakeHost: PlanEnvironment {
    var files: [String: FileFingerprint] = [:]
    var contents: [String: String] = [:]
    var down: [String: String] = [:]
    var memory: Int64? = 8 << 30
    var cpus = 4

    /// When set, directories are "opened" (an index in it) and names looked up from them, as
    /// the host does for directories with several checked files in them.
    var directories: DirectoryTable? = nil

    func fingerprint(_ path: String) -> FileFingerprint? { files[path] }
    func openDirectory(cPath: UnsafePointer<CChar>) -> Int32? { directories?.open(String(cString: cPath)) }
    func fingerprint(directory: Int32, name: UnsafePointer<CChar>) -> FileFingerprint? {
        guard let dir = directories?.path(directory) else { return nil }
        return files[(dir == "/" ? "" : dir) + "/" + String(cString: name)]
    }
    func closeDirectory(_ fd: Int32) { directories?.close(fd) }
    func contentVersion(_ path: String) -> String? { contents[path] }
    func unreachable(_ uri: String) -> String? { down[uri] }
    func memoryAvailableBytes() -> Int64? { memory }
    func cpuCount() -> Int { cpus }
}

/// The fake host's open directories: paths by handle, and how many are still open.
final class DirectoryTable: @unchecked Sendable {
    private let lock = NSLock()
    private var paths: [String] = []
    private(set) var openCount = 0
    var everOpened: Int { lock.withLock { paths.count } }
    func open(_ path: String) -> Int32 { lock.withLock { paths.append(path); openCount += 1; return Int32(paths.count - 1) } }
    func path(_ fd: Int32) -> String? { lock.withLock { paths.indices.contains(Int(fd)) ? paths[Int(fd)] : nil } }
    func close(_ fd: Int32) { lock.withLock { openCount -= 1 } }
}

func fp(_ size: Int64, _ mtime: Int64, inode: UInt64 = 1) -> FileFingerprint {
    FileFingerprint(size: size, mtimeNs: mtime, ctimeNs: mtime, inode: inode, device: 1)
}

func finishedRun(exit: Int32 = 0, argv: [String] = ["make"], env: String = "e", peak: Int64? = nil) -> RunRecord {
    var run = RunRecord(taskID: "t", status: .finished, startedAt: 1, pid: 1, argv: argv, environmentDigest: env, reasons: [])
    run.exitCode = exit
    run.memoryPeakBytes = peak
    return run
}

@Suite struct PlannerTests {
    let input = Dependency(nodeID: "file:/w/in.txt", kind: "data", ref: "/w/in.txt", relation: .reads,
                           version: "sha256:aa", fingerprint: fp(10, 100))
    let output = Dependency(nodeID: "file:/w/out.txt", kind: "data", ref: "/w/out.txt", relation: .writes,
                            version: "sha256:bb", fingerprint: fp(20, 200, inode: 2))

    func plan(_ deps: [Dependency], _ host: FakeHost, last: RunRecord? = finishedRun(), force: Bool = false,
              producers: [String: String] = [:], stale: String? = nil) -> Plan {
        Planner(environment: host).plan(PlanInput(taskID: "t", dependencies: deps, lastRun: last, staleReason: stale,
                                                  argv: ["make"], environmentDigest: "e", producers: producers, force: force))
    }

    var unchangedHost: FakeHost { FakeHost(files: ["/w/in.txt": fp(10, 100), "/w/out.txt": fp(20, 200, inode: 2)]) }

    @Test func nothingMovedIsUpToDateWithoutHashing() {
        let p = plan([input, output], unchangedHost)
        #expect(p.decision == .upToDate)
        #expect(p.hashed == 0)
        #expect(p.checked == 2)
    }

    @Test func touchedButSameContentIsUpToDateAndRemembered() {
        var host = unchangedHost
        host.files["/w/in.txt"] = fp(10, 999)
        host.contents["/w/in.txt"] = "sha256:aa"
        let p = plan([input, output], host)
        #expect(p.decision == .upToDate)
        #expect(p.hashed == 1)
        #expect(p.refreshed.map(\.nodeID) == ["file:/w/in.txt"])
    }

    @Test func changedContentRuns() {
        var host = unchangedHost
        host.files["/w/in.txt"] = fp(11, 999)
        host.contents["/w/in.txt"] = "sha256:cc"
        let p = plan([input, output], host)
        #expect(p.decision == .run)
        #expect(p.changes == [Change(ref: "/w/in.txt", relation: .reads, what: "changed")])
    }

    @Test func deletedOrEditedOutputRuns() {
        var host = unchangedHost
        host.files["/w/out.txt"] = nil
        #expect(plan([input, output], host).changes.map(\.what) == ["deleted since the task wrote it"])
        host.files["/w/out.txt"] = fp(21, 300, inode: 2)
        host.contents["/w/out.txt"] = "sha256:zz"
        #expect(plan([input, output], host).changes.map(\.what) == ["modified since the task wrote it"])
    }

    @Test func missingInputBlocksUnlessAnotherTaskProducesIt() {
        var host = unchangedHost
        host.files["/w/in.txt"] = nil
        let blocked = plan([input, output], host)
        #expect(blocked.decision == .blocked)
        #expect(blocked.blockers.map(\.ref) == ["/w/in.txt"])
        let provisioned = plan([input, output], host, producers: ["/w/in.txt": "gen"])
        #expect(provisioned.decision == .run)
        #expect(provisioned.changes.first?.what == "missing; task gen produces it")
    }

    @Test func forceRunsButNeverPastABlocker() {
        #expect(plan([input, output], unchangedHost, force: true).decision == .run)
        var host = unchangedHost
        host.down["tcp://127.0.0.1:5432"] = "connect: Connection refused"
        let service = Dependency(nodeID: "service:tcp://127.0.0.1:5432", kind: "service", ref: "tcp://127.0.0.1:5432", relation: .connects)
        let p = plan([input, output, service], host, force: true)
        #expect(p.decision == .blocked)
        #expect(p.blockers.first?.ref == "tcp://127.0.0.1:5432")
    }

    @Test func staticOnlyServicesAndUDPDoNotBlock() {
        var host = unchangedHost
        host.down["tcp://example.org:443"] = "no"
        host.down["udp://127.0.0.53:53"] = "no"
        let guessed = Dependency(nodeID: "s1", kind: "service", ref: "tcp://example.org:443", relation: .connects, traced: false)
        let udp = Dependency(nodeID: "s2", kind: "service", ref: "udp://127.0.0.53:53", relation: .resolves)
        #expect(plan([input, output, guessed, udp], host).decision == .upToDate)
    }

    @Test func probeThatAppearsRunsUnlessTheTaskWritesIt() {
        let probe = Dependency(nodeID: "file:/w/config.local", kind: "data", ref: "/w/config.local", relation: .probes)
        var host = unchangedHost
        #expect(plan([input, output, probe], host).decision == .upToDate)
        host.files["/w/config.local"] = fp(1, 1, inode: 9)
        #expect(plan([input, output, probe], host).changes.map(\.relation) == [.probes])
        let ownProbe = Dependency(nodeID: "file:/w/out.txt", kind: "data", ref: "/w/out.txt", relation: .probes)
        #expect(plan([input, output, ownProbe], unchangedHost).decision == .upToDate)
    }

    @Test func kernelFilesAreNotHostState() {
        let proc = Dependency(nodeID: "file:/proc/meminfo", kind: "infrastructure", ref: "/proc/meminfo", relation: .reads)
        let dev = Dependency(nodeID: "file:/dev/null", kind: "data", ref: "/dev/null", relation: .writes)
        let p = plan([input, output, proc, dev], unchangedHost)
        #expect(p.decision == .upToDate)
        #expect(p.checked == 2)
    }

    @Test func historyDecides() {
        #expect(plan([input, output], unchangedHost, last: nil).reasons == ["no previous run"])
        #expect(plan([input, output], unchangedHost, last: finishedRun(exit: 2)).decision == .run)
        #expect(plan([input, output], unchangedHost, last: finishedRun(argv: ["make", "-j2"])).reasons == ["the command changed"])
        #expect(plan([input, output], unchangedHost, last: finishedRun(env: "other")).reasons == ["the environment changed"])
        #expect(plan([input, output], unchangedHost, stale: "input x was rewritten by gen").decision == .run)
        var untraced = PlanInput(taskID: "t", dependencies: [], lastRun: finishedRun(), argv: ["make"], environmentDigest: "e")
        untraced.hasRecordedGraph = false
        #expect(Planner(environment: unchangedHost).plan(untraced).reasons == ["the last run recorded no dependencies"])
    }

    @Test func notEnoughMemoryForLastPeakBlocks() {
        var host = unchangedHost
        host.memory = 100 << 20
        let p = plan([input, output], host, last: finishedRun(peak: 1 << 30))
        #expect(p.decision == .blocked)
        #expect(p.blockers.first?.ref == "host:memory")
    }

    @Test func checksGoByPriorityThenCost() {
        var host = FakeHost()
        var big = Dependency(nodeID: "big", kind: "data", ref: "/big", relation: .reads, version: "sha256:1", costBytes: 1 << 30)
        var small = Dependency(nodeID: "small", kind: "data", ref: "/small", relation: .reads, version: "sha256:1", costBytes: 10)
        var important = Dependency(nodeID: "imp", kind: "data", ref: "/imp", relation: .reads, version: "sha256:1", costBytes: 1 << 31)
        important.priority = 5
        big.fingerprint = fp(1, 1); small.fingerprint = fp(1, 1); important.fingerprint = fp(1, 1)
        for path in ["/big", "/small", "/imp"] { host.files[path] = fp(2, 2) ; host.contents[path] = "sha256:2" }
        let p = plan([big, small, important], host)
        #expect(p.changes.map(\.ref) == ["/imp", "/small", "/big"])
    }
}
