@testable import DgrunCache
import DgrunSpec
import DgrunStore
import DgrunSystem
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The cache's pure parts: path relocation, the key's canonical encoding, manifest checks.
@Suite struct CacheUnitTests {
    let relocation = PathRelocation(taskDirectory: "/w/ws/apply", workspaceRoot: "/w/ws")

    @Test func pathsInsideTheWorkspaceAreRelativeAndComeBackAtTheNewPlace() {
        #expect(relocation.encode("/w/ws/apply") == ".")
        #expect(relocation.encode("/w/ws/apply/out/x") == "./out/x")
        #expect(relocation.encode("/w/ws/gen/out/data.txt") == "../gen/out/data.txt")
        #expect(relocation.encode("/w/ws") == "..")
        #expect(relocation.encode("/w/wsx/file") == "/w/wsx/file", "a sibling with the same prefix is outside")
        #expect(relocation.encode("/w/ws/applyx") == "../applyx")
        #expect(relocation.encode("/usr/lib/libc.so.6") == "/usr/lib/libc.so.6")
        #expect(relocation.encode("tcp://127.0.0.1:80") == "tcp://127.0.0.1:80")
        let moved = PathRelocation(taskDirectory: "/elsewhere/copy/apply", workspaceRoot: nil)
        #expect(moved.decode("./out/x") == "/elsewhere/copy/apply/out/x")
        #expect(moved.decode("../gen/out/data.txt") == "/elsewhere/copy/gen/out/data.txt")
        #expect(moved.decode(".") == "/elsewhere/copy/apply")
        #expect(moved.decode("/usr/bin/sh") == "/usr/bin/sh")
        #expect(relocation.encodeNodeID("file:/w/ws/apply/a") == "file:./a")
        #expect(moved.decodeNodeID("file:./a") == "file:/elsewhere/copy/apply/a")
        #expect(relocation.encodeNodeID("service:tcp://x:1") == "service:tcp://x:1")
        let standalone = PathRelocation(taskDirectory: "/w/t", workspaceRoot: nil)
        #expect(standalone.encode("/w/other") == "/w/other", "without a workspace, the parent is outside")
    }

    @Test func theKeyEncodingIsUnambiguousAndStable() {
        #expect(ActionKey.digest(["ab", "c"]) != ActionKey.digest(["a", "bc"]))
        #expect(ActionKey.digest(["a"]).count == 64)
        #expect(ActionKey.digest(["x", "y"]) == ActionKey.digest(["x", "y"]))
        // The encoding itself, pinned: keys are shared between machines and dgrun versions.
        let fields = ["ab", "", "0123456789é", String(repeating: "x", count: 100)]
        let encoded = fields.map { "\($0.utf8.count):\($0)\n" }.joined()
        #expect(ActionKey.digest(fields) == ContentHash.version(ofBytes: Array(encoded.utf8)).map { String($0.dropFirst(7)) })
        let t = ActionKey.taskKey(argv: ["/bin/sh", "-c", "true"], environmentDigest: "sha256:0", sandbox: ["network=auto"], taskPath: "../gen")
        #expect(t != ActionKey.taskKey(argv: ["/bin/sh", "-c", "true"], environmentDigest: "sha256:1", sandbox: ["network=auto"], taskPath: "../gen"))
    }

    @Test func inputsAreOrderedAsStringsCompare() {
        // The key's input order is pinned by String `<`: the byte sort of ASCII refs must agree
        // with it (a prefix first, "/" against "-" and "."), and other refs fall back to it.
        let ascii = ["/usr/include/a.h", "/usr/include/a", "./x", "/usr/include-x", "/usr/include.y", "/usr/include/", "", "./x/y", "/A", "/a"]
        let pairs = ascii.map { (ref: $0, version: "v" + $0) }
        #expect(ActionKey.sortedByRef(pairs).map(\.ref) == ascii.sorted())
        #expect(ActionKey.sortedByRef(pairs).map(\.version) == ascii.sorted().map { "v" + $0 })
        let other = ["/e\u{301}", "/\u{e9}x", "/ea", "/f", "/e"]
        #expect(ActionKey.sortedByRef(other.map { (ref: $0, version: "") }).map(\.ref) == other.sorted())
    }

    @Test func theKeyCoversInputsNotOutputsAndIsTheSameAtAnotherPlace() {
        func deps(_ root: String) -> [Dependency] {
            [Dependency(nodeID: "file:\(root)/apply/in.txt", kind: "file", ref: "\(root)/apply/in.txt", relation: .reads, version: "sha256:aa"),
             Dependency(nodeID: "file:\(root)/apply/out.txt", kind: "file", ref: "\(root)/apply/out.txt", relation: .writes, version: "sha256:bb"),
             Dependency(nodeID: "file:/usr/lib/libc.so.6", kind: "library", ref: "/usr/lib/libc.so.6", relation: .loads, version: "sha256:cc extra"),
             Dependency(nodeID: "file:/proc/self/maps", kind: "file", ref: "/proc/self/maps", relation: .reads, version: nil),
             Dependency(nodeID: "file:/etc/x", kind: "file", ref: "/etc/x", relation: .probes)]
        }
        let a = ActionKey.compute(taskKey: "t", dependencies: deps("/w/ws"), relocation: relocation, version: { $0.version })
        let b = ActionKey.compute(taskKey: "t", dependencies: deps("/other/place"),
                                  relocation: PathRelocation(taskDirectory: "/other/place/apply", workspaceRoot: "/other/place"),
                                  version: { $0.version })
        #expect(a.key != nil && a.key == b.key)
        if case .key(_, let inputs) = a { #expect(inputs.map(\.ref) == ["./in.txt", "/usr/lib/libc.so.6"]); #expect(inputs.last?.version == "sha256:cc") }
        let changed = ActionKey.compute(taskKey: "t", dependencies: deps("/w/ws"), relocation: relocation,
                                        version: { $0.ref.hasSuffix("in.txt") ? "sha256:ab" : $0.version })
        #expect(changed.key != a.key)
        let missing = ActionKey.compute(taskKey: "t", dependencies: deps("/w/ws"), relocation: relocation,
                                        version: { $0.ref.hasSuffix("in.txt") ? nil : $0.version })
        #expect(missing == .missing("/w/ws/apply/in.txt"))
    }

    @Test func manifestPathsThatLeaveTheTaskAreRefused() throws {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", ".dgrun/state.db", "a\0b"] {
            #expect(throws: DgrunError.self, "\(bad)") { try OutputsManifest.checkPath(bad) }
        }
        for good in ["out/data.txt", "a", ".hidden", "a/b/c..d"] { try OutputsManifest.checkPath(good) }
        let digest = String(repeating: "a", count: 64)
        #expect(throws: DgrunError.self) {
            try OutputsManifest(key: "k", entries: [.init(path: "x", type: "file", mode: 0o644, digest: "zz", size: 1)]).validated()
        }
        #expect(throws: DgrunError.self) {
            try OutputsManifest(key: "k", entries: [.init(path: "x", type: "device")]).validated()
        }
        _ = try OutputsManifest(key: "k", entries: [.init(path: "x", type: "file", mode: 0o644, digest: digest, size: 1),
                                                    .init(path: "l", type: "link", target: "/etc/shadow")]).validated()
    }

    /// The LRU scan after a store runs at most once an interval: the first store over the limit
    /// prunes, the next within the minute does not scan, one after the interval does.
    @Test func pruningAfterAStoreIsAmortised() throws {
        var template = Array("/tmp/dgrun-cacheunit-XXXXXX".utf8CString)
        let base = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        defer { if let pid = try? Subprocess.spawn(["/bin/rm", "-rf", base]) { var status: Int32 = 0; waitpid(pid, &status, 0) } }
        let cache = LocalCache(directory: base + "/cache")
        _ = try cache.storeBlob(bytes: Array("one\n".utf8))
        cache.pruneIfDue(maxBytes: 0)
        #expect(cache.stats().blobs == 0, "the first store over the limit prunes")
        _ = try cache.storeBlob(bytes: Array("two\n".utf8))
        cache.pruneIfDue(maxBytes: 0)
        #expect(cache.stats().blobs == 1, "within the interval: no scan")
        cache.pruneIfDue(maxBytes: 0, interval: 0)
        #expect(cache.stats().blobs == 0, "past the interval: pruned again")
    }

    @Test func aRestoreNeverWritesThroughALinkedDirectoryNorOutsideTheTask() throws {
        var template = Array("/tmp/dgrun-cacheunit-XXXXXX".utf8CString)
        let base = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        defer { if let pid = try? Subprocess.spawn(["/bin/rm", "-rf", base]) { var status: Int32 = 0; waitpid(pid, &status, 0) } }
        let task = base + "/task", outside = base + "/outside"
        mkdir(task, 0o755); mkdir(outside, 0o755)
        let cache = LocalCache(directory: base + "/cache")
        let blob = try cache.storeBlob(bytes: Array("hello\n".utf8))
        symlink(outside, task + "/out")
        let manifest = OutputsManifest(key: "k", entries: [.init(path: "out/x", type: "file", mode: 0o644, digest: blob.digest, size: blob.size)])
        #expect(throws: OutputFiles.RestoreError.self) { try OutputFiles.restore(manifest, into: task, from: cache) }
        #expect(!FileIO.exists(outside + "/x"), "nothing written through the link")
        unlink(task + "/out")
        let restored = try OutputFiles.restore(manifest, into: task, from: cache)
        let text = try FileIO.read(task + "/out/x")
        #expect(restored.files == 1 && text == "hello\n")
        // A truncated blob is refused, and the output stays as it was.
        try FileSystem.writeAtomically(cache.blobPath(blob.digest), "hel")
        unlink(task + "/out/x")
        do {
            _ = try OutputFiles.restore(manifest, into: task, from: cache)
            Issue.record("a truncated blob was restored")
        } catch {
            guard case .corrupt = error else { Issue.record("\(error)"); return }
        }
        #expect(!FileIO.exists(task + "/out/x"), "no half-written output")
        #expect(FileIO.listDirectory(task + "/out").isEmpty, "no temporary left behind")
    }
}
