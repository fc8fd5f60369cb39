import DgrunSystem
import Foundation
import Testing
@testable import DgrunStatic

func hasCommand(_ name: String) -> Bool {
    (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        .contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(name)") }
}

func shell(_ script: String, in dir: String) -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", script]
    p.currentDirectoryURL = URL(fileURLWithPath: dir)
    try? p.run()
    p.waitUntilExit()
    return p.terminationStatus
}

@Suite struct ElfTests {
    @Test func dynamicProgram() throws {
        let sh = try #require(FileIO.realPath("/bin/sh"))
        let elf = try #require(try ElfFile.read(path: sh))
        #expect(elf.interpreter == "/lib64/ld-linux-x86-64.so.2")
        #expect(elf.needed.contains("libc.so.6"))
        #expect(elf.buildID?.count == 40, "a GNU build-id is 20 bytes")
        #expect(!elf.isStatic)
    }

    @Test(.enabled(if: hasCommand("busybox"), "needs busybox-static"))
    func staticProgram() throws {
        let busybox = try #require(FileIO.realPath("/usr/bin/busybox") ?? FileIO.realPath("/bin/busybox"))
        let elf = try #require(try ElfFile.read(path: busybox))
        #expect(elf.isStatic)
    }

    @Test func rejectsWhatIsNotELF() {
        #expect(throws: ElfFile.ParseError.notELF) { try ElfFile.parse(Array("#!/bin/sh\necho\n".utf8)) }
        #expect(throws: ElfFile.ParseError.self) { try ElfFile.parse([0x7f, 0x45, 0x4c, 0x46, 1, 1] + [UInt8](repeating: 0, count: 60)) }
        // Truncated or garbage after a valid magic must not trap.
        var junk: [UInt8] = [0x7f, 0x45, 0x4c, 0x46, 2, 1] + [UInt8](repeating: 0xff, count: 200)
        _ = try? ElfFile.parse(junk)
        junk = Array(junk.prefix(70))
        _ = try? ElfFile.parse(junk)
    }
}

@Suite struct LdSoCacheTests {
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/etc/ld.so.cache"), "no /etc/ld.so.cache"))
    func findsLibc() throws {
        let cache = LdSoCache.load()
        let libc = try #require(cache.entries["libc.so.6"])
        #expect(libc.hasSuffix("/libc.so.6"))
        #expect(FileManager.default.fileExists(atPath: libc))
    }

    @Test func ignoresGarbage() {
        #expect(LdSoCache.parse(Array("not a cache".utf8)).entries.isEmpty)
        #expect(LdSoCache.parse(Array("glibc-ld.so.cache1.1".utf8) + [UInt8](repeating: 0xff, count: 100)).entries.isEmpty)
    }
}

@Suite struct LibraryResolverTests {
    @Test func resolvesSystemLibraries() throws {
        let libs = LibraryResolver().resolve(program: "/bin/sh")
        let libc = try #require(libs.first { $0.name == "libc.so.6" })
        #expect(libc.path?.hasSuffix("libc.so.6") == true)
        #expect(libc.via == "ld.so.cache")
        #expect(libs.allSatisfy { $0.path != nil })
    }

    /// A program that finds its library through $ORIGIN, and one whose library is missing.
    @Test(.enabled(if: hasCommand("cc"), "needs a C compiler"))
    func originRunpathAndMissing() throws {
        let dir = try #require(FileIO.realPath(NSTemporaryDirectory())) + "/dgrun-elf-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir + "/lib", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let built = shell("""
            printf 'int f(void){return 1;}' > f.c && printf 'int g(void){return 2;}' > g.c &&
            printf 'int f(void); int main(void){return f();}' > m.c &&
            cc -shared -fPIC -o lib/libf.so f.c && cc -shared -fPIC -o libg.so g.c &&
            cc -o app m.c -Llib -lf -Wl,-rpath,'$ORIGIN/lib' &&
            cc -o app-old m.c -Llib -lf -Wl,--disable-new-dtags,-rpath,'$ORIGIN/lib' &&
            cc -shared -fPIC -o lib/libh.so f.c -Wl,--no-as-needed -L. -lg && printf 'int main(void){return 0;}' > n.c &&
            cc -o needs-h n.c -Wl,--no-as-needed -Llib -lh -Wl,-rpath,'$ORIGIN/lib'
            """, in: dir)
        try #require(built == 0)
        let app = LibraryResolver().resolve(program: dir + "/app")
        #expect(app.first { $0.name == "libf.so" }?.path == dir + "/lib/libf.so")
        #expect(app.first { $0.name == "libf.so" }?.via == "runpath")
        let old = LibraryResolver().resolve(program: dir + "/app-old")
        #expect(old.first { $0.name == "libf.so" }?.via == "rpath")
        // libh.so needs libg.so, which lies outside every search path: missing, and said so.
        let needsH = LibraryResolver().resolve(program: dir + "/needs-h")
        let g = try #require(needsH.first { $0.name == "libg.so" })
        #expect(g.path == nil)
        #expect(g.neededBy == dir + "/lib/libh.so")
        // LD_LIBRARY_PATH finds it.
        let withPath = LibraryResolver(environment: ["LD_LIBRARY_PATH=\(dir)"]).resolve(program: dir + "/needs-h")
        #expect(withPath.first { $0.name == "libg.so" }?.via == "ld_library_path")
    }

    @Test func expandsTokens() {
        let r = LibraryResolver(cache: LdSoCache())
        #expect(r.expand("$ORIGIN/../lib", origin: "/opt/app/bin") == "/opt/app/bin/../lib")
        #expect(r.expand("${ORIGIN}/x:$LIB", origin: "/o") == "/o/x:lib/x86_64-linux-gnu")
    }
}

@Suite struct ShebangTests {
    @Test(arguments: [
        ("#!/bin/sh\necho", Shebang(interpreter: "/bin/sh", argument: nil, envProgram: nil)),
        ("#! /bin/bash -e\n", Shebang(interpreter: "/bin/bash", argument: "-e", envProgram: nil)),
        ("#!/usr/bin/env python3\nimport os", Shebang(interpreter: "/usr/bin/env", argument: "python3", envProgram: "python3")),
        ("#!/usr/bin/env -S node --harmony\n", Shebang(interpreter: "/usr/bin/env", argument: "-S node --harmony", envProgram: "node")),
        ("#!/usr/bin/env -i LANG=C perl -w\n", Shebang(interpreter: "/usr/bin/env", argument: "-i LANG=C perl -w", envProgram: "perl")),
        ("#!/bin/sh\r\n", Shebang(interpreter: "/bin/sh", argument: nil, envProgram: nil)),
    ])
    func parses(text: String, expected: Shebang) {
        #expect(Shebang.parse(Array(text.utf8)) == expected)
    }

    @Test func notAScript() {
        #expect(Shebang.parse(Array("echo hi\n".utf8)) == nil)
        #expect(Shebang.parse(Array("#!\n".utf8)) == nil)
        #expect(Shebang.parse([0x7f, 0x45]) == nil)
    }

    @Test func resolvesEnvProgramOnPath() {
        #expect(Shebang.resolve(program: "sh", searchPath: "/nonexistent:/usr/bin:/bin") == FileIO.realPath("/usr/bin/sh") ?? FileIO.realPath("/bin/sh"))
        #expect(Shebang.resolve(program: "dgrun-no-such-interpreter", searchPath: "/usr/bin:/bin") == nil)
    }
}

@Suite struct DebianPackagesTests {
    /// A dpkg database of two packages, one listed but no longer installed.
    func database() throws -> String {
        let dir = TemporaryRoot.directory("dpkg")
        mkdir(dir + "/info", 0o755)
        try FileIO.write(dir + "/info/libfoo1:amd64.list", "/.\n/usr\n/usr/lib/x86_64-linux-gnu/libfoo.so.1\n", create: true)
        try FileIO.write(dir + "/info/tool.list", "/bin/tool\n/usr/share/doc/tool/README\n", create: true)
        try FileIO.write(dir + "/info/gone.list", "/usr/bin/gone\n", create: true)
        try FileIO.write(dir + "/status", """
            Package: libfoo1
            Status: install ok installed
            Architecture: amd64
            Version: 1.2-3

            Package: tool
            Status: install ok installed
            Version: 4:0.9

            Package: gone
            Status: deinstall ok config-files
            Version: 1

            """, create: true)
        return dir
    }

    @Test func ownersComeFromTheListsWithMergedUsrAliasesAndAnIndexThatFollowsTheDatabase() throws {
        let db = try database()
        let cache = db + "/cache"
        let owners = DebianPackages.owners(of: ["/usr/lib/x86_64-linux-gnu/libfoo.so.1", "/usr/bin/tool", "/usr/bin/gone", "/etc/none"],
                                           database: db, cacheDirectory: cache)
        #expect(owners == ["/usr/lib/x86_64-linux-gnu/libfoo.so.1": "deb:libfoo1=1.2-3", "/usr/bin/tool": "deb:tool=4:0.9"])
        #expect(FileIO.exists(cache + "/dpkg-index"))
        // The index answers the next time; a change to the database rebuilds it.
        let again = DebianPackages.owners(of: ["/usr/bin/tool"], database: db, cacheDirectory: cache)
        #expect(again == ["/usr/bin/tool": "deb:tool=4:0.9"])
        // The list form: one answer a path, in order, from the index read in place.
        #expect(DebianPackages.owners(ofPaths: ["/etc/none", "/usr/bin/tool", "/usr/lib/x86_64-linux-gnu/libfoo.so.1", "/usr/bin/tool"],
                                      database: db, cacheDirectory: cache)
                == [nil, "deb:tool=4:0.9", "deb:libfoo1=1.2-3", "deb:tool=4:0.9"])
        usleep(10_000)
        try FileIO.write(db + "/status", (try FileIO.read(db + "/status")).replacing("4:0.9", with: "4:1.0"))
        #expect(DebianPackages.owners(of: ["/usr/bin/tool"], database: db, cacheDirectory: cache) == ["/usr/bin/tool": "deb:tool=4:1.0"])
    }
}

/// dgrun's dpkg index cache read back: counts the file cannot hold are a miss (the index is
/// rebuilt), never a trap (a negative name count made an invalid range, a huge pair count
/// overflowed count * 12).
@Suite struct DpkgIndexTests {
    static func index(_ counts: String, names: [String] = [], pairs: [(UInt64, UInt32)] = []) -> [UInt8] {
        var bytes = Array("dgrun-dpkg-index 1\n1 2 \(counts)\n".utf8)
        for name in names { bytes += Array((name + "\n").utf8) }
        for (h, o) in pairs {
            withUnsafeBytes(of: h.littleEndian) { bytes += $0 }
            withUnsafeBytes(of: o.littleEndian) { bytes += $0 }
        }
        return bytes
    }

    @Test(arguments: ["3 -1", "-1 0", "1537228672809129302 0", "\(Int.max) \(Int.max)"])
    func impossibleCountsAreAMiss(counts: String) {
        #expect(DebianPackages.Index.parse(ReadOnlyBytes(Self.index(counts)), stamp: nil) == nil)
    }

    @Test func aWellFormedIndexReadsBack() throws {
        let bytes = ReadOnlyBytes(Self.index("1 1", names: ["bash=5.2"], pairs: [(42, 0)]))
        let index = try #require(DebianPackages.Index.parse(bytes, stamp: nil))
        #expect(Array(index.names) == ["bash=5.2"] && index.hashes == [42])
        #expect(DebianPackages.Index.parse(bytes, stamp: .init(status: 1, info: 2)) != nil)
        #expect(DebianPackages.Index.parse(bytes, stamp: .init(status: 1, info: 3)) == nil, "another dpkg database")
    }

    /// The lookup of many paths in hash order finds what a search of the records finds, duplicates,
    /// equal hashes, misses before, between and after the records included.
    @Test func manyPathsAtOnceAreLookedUpAsOneByOne() throws {
        func h(_ path: String) -> UInt64 { path.utf8.reduce(ShortHash.seed) { ShortHash.step($0, $1) } }
        let listed = (0..<300).map { "/usr/include/h\($0).h" }
        var pairs = listed.enumerated().map { (h($0.element), UInt32($0.offset % 3)) }
        pairs.append((h(listed[7]), 2))  // the same hash twice: the first record's owner, as one lookup finds
        pairs.append((h("/damaged"), 9))  // past the names
        pairs.sort { $0.0 < $1.0 }
        let bytes = ReadOnlyBytes(Self.index("\(pairs.count) 3", names: ["a=1", "b=2", "c=3"], pairs: pairs))
        let index = try #require(DebianPackages.Index.parse(bytes, stamp: nil))
        var asked = listed.shuffled() + (0..<50).map { "/usr/include/none\($0).h" } + ["/damaged", listed[7], listed[7], ""]
        asked.shuffle()
        // What one lookup a path finds, from the records themselves: the first with its hash,
        // when it names one of the three packages.
        let expected = asked.map { path -> Int? in pairs.first { $0.0 == h(path) }.flatMap { $0.1 < 3 ? Int($0.1) : nil } }
        #expect(index.ownerIndices(of: asked) == expected)
        #expect(asked.map(index.ownerIndex(of:)) == expected)
        #expect(index.ownerIndices(of: []) == [])
    }

    /// A record naming a package the file does not list (a damaged cache) owns nothing: checked
    /// at the lookup, not by reading every record at load.
    @Test func anOwnerPastTheNamesIsNoOwner() throws {
        let path = "/usr/bin/bash"
        var h = ShortHash.seed
        for byte in path.utf8 { h = ShortHash.step(h, byte) }
        let index = try #require(DebianPackages.Index.parse(ReadOnlyBytes(Self.index("1 1", names: ["bash=5.2"], pairs: [(h, 7)])), stamp: nil))
        #expect(index.owner(of: path) == nil)
        let good = try #require(DebianPackages.Index.parse(ReadOnlyBytes(Self.index("1 1", names: ["bash=5.2"], pairs: [(h, 0)])), stamp: nil))
        #expect(good.owner(of: path) == "bash=5.2")
    }

    /// The names of a mapped index are its lines, decoded when asked for: the same as those
    /// written, empty, non-ASCII and last ones included.
    @Test func aMappedIndexNamesWhatWasWritten() throws {
        let names = ["a=1", "", "libü=2:3.4-5", "zlib1g=1:1.2.13"]
        let index = try #require(DebianPackages.Index.parse(ReadOnlyBytes(Self.index("0 \(names.count)", names: names)), stamp: nil))
        #expect(index.names.count == names.count)
        #expect(Array(index.names) == names)
        #expect(index.names[3] == "zlib1g=1:1.2.13" && index.names[1] == "")
    }
}
