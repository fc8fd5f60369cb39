import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The tracer's fast path (preload/dgrun_preload.c): the calls the preloaded library records
/// without a trap must give the graph the trapped calls give, and what bypasses the library (a
/// task that drops LD_PRELOAD, a static binary, a write made from the stub itself) must still trap.
@Suite(.enabled(if: Harness.preloadLibrary != nil, "needs cc to build the fast-path library"))
struct FastPathDiscoverTests {
    /// N of discover's "(N without a trap)", 0 when it did not say.
    static func untrapped(_ stderr: String) -> Int {
        guard let end = stderr.range(of: " without a trap)") else { return 0 }
        let digits = stderr[..<end.lowerBound].reversed().prefix(while: \.isNumber)
        return Int(String(digits.reversed())) ?? 0
    }

    /// "relation ref" of every edge, with the sandbox's own /tmp and /proc left out (but not `work`).
    static func edges(_ f: DiscoverTests.Found, work: String) -> Set<String> {
        f.edges.filter { $0.contains(" " + work + "/") || (!$0.contains(" /tmp/") && !$0.contains(" /proc/")) }
    }

    @Test func theSameGraphAsWhenEveryCallTraps() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        for d in 0..<5 {
            try FileManager.default.createDirectory(atPath: work + "/tree/d\(d)", withIntermediateDirectories: true)
            for i in 0..<40 { try "x\(i)\n".write(toFile: work + "/tree/d\(d)/f\(i).h", atomically: true, encoding: .utf8) }
        }
        try FileManager.default.createSymbolicLink(atPath: work + "/link", withDestinationPath: work + "/tree/d1")
        let script = "find tree -name '*.h' | xargs grep -l x1 | wc -l > count.txt; cat link/f3.h missing.txt 2>/dev/null; "
            + "test -e absent; ls -d link/ > /dev/null; python3 -c 'import json, os.path; os.path.realpath(\"link/f2.h\")'; true"
        let fast = DiscoverTests.discover(["sh", "-c", script], cwd: work)
        let trapped = DiscoverTests.discover(["sh", "-c", script], cwd: work, environment: ["DGRUN_PRELOAD=off"])
        #expect(fast.status == 0 && trapped.status == 0, "\(fast.stderr)\n\(trapped.stderr)")
        #expect(Self.untrapped(fast.stderr) > 200, "most calls went through the fast path: \(fast.stderr)")
        #expect(Self.untrapped(trapped.stderr) == 0, "DGRUN_PRELOAD=off traps every call: \(trapped.stderr)")
        let a = Self.edges(fast, work: work), b = Self.edges(trapped, work: work)
        #expect(a.contains("reads " + work + "/tree/d0/f0.h"))
        #expect(a.subtracting(b).isEmpty && b.subtracting(a).isEmpty,
                "only with the fast path: \(a.subtracting(b).sorted().prefix(20)); only trapped: \(b.subtracting(a).sorted().prefix(20))")
        #expect(fast.has("reads", work + "/tree/d4/f39.h") && fast.has("probes", work + "/absent") && fast.has("probes", work + "/missing.txt"))
        #expect(!fast.nodes.keys.contains { $0.hasSuffix("/libdgrun-preload.so") }, "dgrun's own library is not the task's dependency")
    }

    /// Directories resolved before a removal: kept when a regular file is removed, dropped when
    /// a link is (a path through the link names another directory after), with and without the
    /// fast path.
    @Test func aDirectoryReachedThroughARemovedLinkIsResolvedAgain() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        for d in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: work + "/" + d, withIntermediateDirectories: true)
            for f in ["one.h", "two.h"] { try "\(d)\n".write(toFile: work + "/\(d)/\(f)", atomically: true, encoding: .utf8) }
        }
        let script = "cat via/one.h a/one.h; rm temp.txt; cat via/one.h; rm via; cat via/one.h 2>/dev/null; ln -s b via; cat via/two.h"
        for environment in [[], ["DGRUN_PRELOAD=off"]] {
            try "t\n".write(toFile: work + "/temp.txt", atomically: true, encoding: .utf8)
            unlink(work + "/via")
            symlink("a", work + "/via")
            let f = DiscoverTests.discover(["sh", "-c", "{ " + script + "; } > out.txt"], cwd: work, environment: environment)
            let out = (try? String(contentsOfFile: work + "/out.txt", encoding: .utf8)) ?? ""
            #expect(f.status == 0 && out == "a\na\na\nb\n", "\(out) \(f.stderr)")
            let mine = f.edges.filter { $0.contains(work) }.sorted()
            let read = f.has("reads", work + "/a/one.h") && f.has("reads", work + "/b/two.h") && !f.has("reads", work + "/a/two.h")
            let probed = f.has("probes", work + "/via/one.h")  // once the link is gone, via/one.h is absent
            #expect(read && probed, "\(environment): \(mine)")
        }
    }

    /// More records than the ring holds between two trapped calls: the library falls back to
    /// trapping when it is full, and nothing is dropped.
    @Test func aFullRingLosesNothing() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        try FileManager.default.createDirectory(atPath: work + "/many", withIntermediateDirectories: true)
        for i in 0..<6000 { try "".write(toFile: work + "/many/\(i)", atomically: false, encoding: .utf8) }
        let f = DiscoverTests.discover(["python3", "-c", "import os\nfor i in range(6000): os.stat('many/%d' % i); os.path.exists('none/%d' % i)"], cwd: work)
        #expect(f.status == 0, "\(f.stderr)")
        let read = (0..<6000).filter { f.nodes[work + "/many/\($0)"] != nil }.count
        #expect(read == 6000, "every stat'ed file is a node: \(read) of 6000; \(f.stderr)")
        #expect(Self.untrapped(f.stderr) > 6000, "\(f.stderr)")
    }

    /// N − M of "from N traced calls (M without a trap)".
    static func trapped(_ stderr: String) -> Int? {
        guard let from = stderr.range(of: " from "), let calls = stderr.range(of: " traced calls", range: from.upperBound..<stderr.endIndex),
              let n = Int(stderr[from.upperBound..<calls.lowerBound]) else { return nil }
        return n - untrapped(stderr)
    }

    /// A command looked for along PATH: the shell's walk, execvp's (env) and make's (euidaccess)
    /// try each directory, and each miss is a probe in the graph whether it trapped or not; with
    /// the fast path the misses do not trap, so twenty more directories ahead of the command cost
    /// no more traps.
    @Test func aWalkAlongPATHIsProbedWithoutATrap() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        try FileManager.default.createDirectory(atPath: work + "/found", withIntermediateDirectories: true)
        try "#!/bin/sh\necho hi\n".write(toFile: work + "/found/hello", atomically: true, encoding: .utf8)
        chmod(work + "/found/hello", 0o755)
        // No #!: execve fails with ENOEXEC, and execvp runs it with /bin/sh, its arguments after.
        try "echo plain \"$@\"\n".write(toFile: work + "/found/plain", atomically: true, encoding: .utf8)
        chmod(work + "/found/plain", 0o755)
        let make = FileIO.exists("/usr/bin/make")
        try "all:\n\thello\n".write(toFile: work + "/Makefile", atomically: true, encoding: .utf8)
        let misses = (0..<20).map { work + "/empty\($0)" }
        for dir in misses { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        let tail = work + "/found:/usr/bin:/bin"
        let run = "hello; env hello; env plain a b" + (make ? "; make -s" : "")
        func discover(_ path: String, _ environment: [String] = []) -> DiscoverTests.Found {
            DiscoverTests.discover(["sh", "-c", "PATH=\(path); export PATH; { \(run); } > out.txt"], cwd: work, environment: environment)
        }
        let long = discover((misses + [tail]).joined(separator: ":"))
        let short = discover(tail)
        let trappedLong = discover((misses + [tail]).joined(separator: ":"), ["DGRUN_PRELOAD=off"])
        let out = (try? String(contentsOfFile: work + "/out.txt", encoding: .utf8)) ?? ""
        #expect(long.status == 0 && short.status == 0 && trappedLong.status == 0 && out.hasPrefix("hi\nhi\nplain a b\n"), "\(out) \(long.stderr)")
        for f in [long, trappedLong] {
            #expect(misses.allSatisfy { f.has("probes", $0 + "/hello") }, "\(f.edges.filter { $0.contains("/empty") }.sorted().prefix(5))")
            #expect(f.has("executes", work + "/found/hello"))
        }
        let extra = (Self.trapped(long.stderr) ?? 0) - (Self.trapped(short.stderr) ?? 0)
        #expect(extra < 10, "twenty more misses a walk (\(make ? 3 : 2) walks) trapped \(extra) more calls: \(long.stderr) \(short.stderr)")
        #expect((Self.trapped(trappedLong.stderr) ?? 0) - (Self.trapped(long.stderr) ?? 0) >= 40, "\(trappedLong.stderr)")
    }

    /// libc's own opens (setlocale's locale files, here) do not go through the open the library
    /// interposes: the library redirects libc's open functions to its own, so they are recorded
    /// without a trap, and the graph has the same files as when every call traps.
    @Test(.enabled(if: ["/usr/lib/locale/C.utf8/LC_CTYPE", "/usr/lib/locale/locale-archive"].contains { FileManager.default.fileExists(atPath: $0) },
                   "C.UTF-8 has no locale files on this host: setlocale opens nothing"))
    func libcsOwnOpensAreRecordedWithoutATrap() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        func discover(_ locale: String, _ environment: [String] = []) -> DiscoverTests.Found {
            DiscoverTests.discover(["sh", "-c", "LC_ALL=\(locale) ls / > /dev/null; LC_ALL=\(locale) ls -d /usr > /dev/null"], cwd: work,
                                   environment: environment)
        }
        let utf8 = discover("C.UTF-8"), plain = discover("C"), trapped = discover("C.UTF-8", ["DGRUN_PRELOAD=off"])
        #expect(utf8.status == 0 && plain.status == 0 && trapped.status == 0, "\(utf8.stderr)")
        let locale = { (f: DiscoverTests.Found) in Set(f.edges.filter { $0.contains("/locale") }) }
        #expect(locale(utf8) == locale(trapped), "fast: \(locale(utf8).sorted()); trapped: \(locale(trapped).sorted())")
        #expect(!locale(trapped).isEmpty, "ls opened none of the locale files: \(trapped.edges.sorted().prefix(20))")
        let extra = (Self.trapped(utf8.stderr) ?? 0) - (Self.trapped(plain.stderr) ?? 0)
        #expect(extra < 3, "the locale's \(locale(utf8).count) files trapped \(extra) calls: \(utf8.stderr) \(plain.stderr)")
    }

    /// What does not go through the library traps as before.
    @Test func whatBypassesTheLibraryStillTraps() throws {
        let work = try #require(FileIO.realPath(Harness.makeTemporaryDirectory()))
        defer { Harness.removeTree(work) }
        try "a\n".write(toFile: work + "/plain.txt", atomically: true, encoding: .utf8)
        // A write made from the stub page itself (what a task could do on purpose): the filter lets
        // only read-only calls through there, so this one traps, and is a write in the graph.
        let source = """
        #include <fcntl.h>
        #include <stdint.h>
        #include <unistd.h>
        #include <sys/syscall.h>
        typedef long (*stub_fn)(long, long, long, long, long, long);
        int main(int argc, char **argv) {
            stub_fn stub = (stub_fn)(uintptr_t)strtoull(argv[1], 0, 16);
            long fd = stub(SYS_openat, AT_FDCWD, (long)"from-stub.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644, 0);
            if (fd < 0) return 3;
            long made = write((int)fd, "w\\n", 2);
            return made == 2 ? 0 : 4;
        }
        """
        try ("#include <stdlib.h>\n" + source).write(toFile: work + "/stub.c", atomically: true, encoding: .utf8)
        let cc = Harness.run(["cc", "-O1", "-o", work + "/stub", work + "/stub.c"])
        try #require(cc.status == 0, "\(cc.stderr)")
        let script = "env -u LD_PRELOAD cat plain.txt > /dev/null; ./stub 1dc000000000"
        let f = DiscoverTests.discover(["sh", "-c", script], cwd: work)
        #expect(f.status == 0, "the stub is mapped in a preloaded process: \(f.stderr)")
        #expect(f.has("reads", work + "/plain.txt"), "a process without the library traps its calls")
        #expect(f.has("writes", work + "/from-stub.txt"), "a write from the stub traps: \(f.edges.filter { $0.contains(work) })")
        if let busybox = FileIO.realPath("/bin/busybox") ?? FileIO.realPath("/usr/bin/busybox") {
            let s = DiscoverTests.discover([busybox, "cat", work + "/plain.txt"], cwd: work)
            #expect(s.has("reads", work + "/plain.txt"), "a static binary's calls trap: \(s.stderr)")
        }
    }
}
