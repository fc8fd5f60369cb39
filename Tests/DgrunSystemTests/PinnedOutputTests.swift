import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `discover -o FILE`, `--report FILE`: a regular file is replaced atomically, but a device or a
/// FIFO is written to. (bench/discover.sh's `-o /dev/null` once renamed a regular file holding the
/// graph over the host's /dev/null.)
@Suite struct PinnedOutputTests {
    static func temporaryDirectory() throws -> String {
        var template = Array((NSTemporaryDirectory() + "/dgrun-pinned-XXXXXX").utf8CString)
        let made = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) })
        return String(cString: made)
    }

    static func type(_ path: String) -> mode_t {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : 0
    }

    @Test func aFIFOIsWrittenToNotReplaced() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/graph.fifo"
        try #require(mkfifo(fifo, 0o600) == 0)
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)  // so that the writer's open does not wait
        try #require(reader >= 0)
        defer { close(reader) }
        try PinnedOutput(fifo).write("{\"schema\": 1}\n")
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(reader, &buffer, buffer.count)
        #expect(n > 0 && String(decoding: buffer.prefix(max(0, n)), as: UTF8.self) == "{\"schema\": 1}\n")
        #expect(Self.type(fifo) == S_IFIFO, "still a FIFO")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["graph.fifo"], "no temporary file left")
    }

    @Test(.enabled(if: getuid() == 0, "needs root to make a device node"))
    func aDeviceIsWrittenToNotReplaced() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let null = dir + "/null"
        try #require(mknod(null, S_IFCHR | 0o666, dev_t(0x103)) == 0)  // 1:3, as /dev/null
        try PinnedOutput(null).write("graph\n")
        #expect(Self.type(null) == S_IFCHR, "a device stays a device")
    }

    @Test func aRegularFileIsReplaced() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "old".write(toFile: dir + "/out.json", atomically: false, encoding: .utf8)
        try PinnedOutput(dir + "/out.json").write("new")
        #expect(try String(contentsOfFile: dir + "/out.json", encoding: .utf8) == "new")
        #expect(Self.type(dir + "/out.json") == S_IFREG)
    }

    /// A link planted at an output path is replaced, never written through, even when it points
    /// at a device (as root, a link to a disk's device would otherwise be written); only dgrun's
    /// own stream names (/dev/stdout, /proc/self/fd/N) are followed.
    @Test func aLinkToADeviceIsReplacedNotWrittenThrough() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try #require(symlink("/dev/null", dir + "/out.json") == 0)
        try FileSystem.writeAtomically(dir + "/out.json", "new")
        #expect(Self.type(dir + "/out.json") == S_IFREG)
        #expect(try String(contentsOfFile: dir + "/out.json", encoding: .utf8) == "new")
        #expect(Self.type("/dev/null") == S_IFCHR)
    }
}

/// ShortHash's hex names files that outlive one dgrun (the BPF cache, task locks, history ids):
/// its digits stay String(radix: 16)'s.
@Suite struct ShortHashHexTests {
    @Test(arguments: [UInt64(0), 1, 9, 10, 15, 16, 0xff, 0x100, 0xdead_beef, 0x0123_4567_89ab_cdef, .max, .max >> 4, 1 << 63])
    func digitsAreThoseOfRadix16(value: UInt64) {
        #expect(ShortHash.hex(value: value) == String(value, radix: 16))
    }

    @Test func theByteAndTextFormsAgree() {
        let text = "cmd:/bin/true\u{0}/work"
        #expect(ShortHash.hex(text) == String(ShortHash.value(Array(text.utf8)), radix: 16))
        #expect(ShortHash.hex(Array(text.utf8)) == ShortHash.hex(text))
    }
}
