import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The monitor's counter files: parsed as bytes, the formats cgroupfs and /proc write; kept open
/// and read again from the start, each read sees the file as it is now.
@Suite struct CounterFilesTests {
    func value(_ key: StaticString, _ text: String) -> UInt64? { CounterText.parse(text) { CounterText.value(of: key, in: $0) } }

    @Test func aKeyIsAWholeWordAtALinesStart() {
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
        #expect(value("oom_kill", oom) == 3)
        #expect(value("oom", oom) == nil)
        #expect(value("under_oom", oom) == 0)
        let events = "low 0\nhigh 12\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n"
        #expect(value("high", events) == 12)
        #expect(value("max", events) == 7)
        #expect(value("oom_group_kill", events) == 0)
        #expect(value("usage_usec", "usage_usec 1234567\nuser_usec 1000\n") == 1234567)
        #expect(value("user_usec", "usage_usec 1234567\nuser_usec 1000") == 1000)  // no final newline
        #expect(value("usage_usec", "usage_usec x\n") == nil)
        #expect(value("usage_usec", "usage_usec 12x\n") == nil)
        #expect(value("usage_usec", "") == nil)
        #expect(value("usage_usec", "usage_usec") == nil)
    }

    @Test func meminfosAvailableIsItsKilobytes() {
        let meminfo = "MemTotal:        8123456 kB\nMemFree:          123456 kB\nMemAvailable:    4000000 kB\n"
        #expect(value("MemAvailable", meminfo) == 4_000_000)
        #expect(value("MemTotal", meminfo) == 8_123_456)
        #expect(value("Mem", meminfo) == nil)
    }

    @Test func aNumberAloneAndWhatIsNotOne() {
        #expect(CounterText.parse("123456\n", CounterText.number) == 123456)
        #expect(CounterText.parse("  42", CounterText.number) == 42)
        #expect(CounterText.parse("max\n", CounterText.number) == nil)
        #expect(CounterText.parse("", CounterText.number) == nil)
        #expect(CounterText.parse("18446744073709551615", CounterText.number) == UInt64.max)
        #expect(CounterText.parse("18446744073709551616", CounterText.number) == nil)  // overflows
    }

    @Test func pressuresSomeTotal() {
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=99\n"
        #expect(CounterText.parse(psi, CounterText.psiSomeTotal) == 1234)
        #expect(CounterText.parse("full avg10=0.00 total=99\nsome avg10=1.00 total=5\n", CounterText.psiSomeTotal) == 5)
        #expect(CounterText.parse("some avg10=0.00\nfull total=99\n", CounterText.psiSomeTotal) == nil)
        #expect(CounterText.parse("something total=3\n", CounterText.psiSomeTotal) == nil)
    }

    @Test func procStatsCPULine() {
        let stat = "cpu  100 2 30 4000 50 0 6 0 0 0\ncpu0 50 1 15 2000 25 0 3 0 0 0\nintr 1 2 3\n"
        #expect(CounterText.parse(stat) { CounterText.numbers(after: "cpu", in: $0) } == [100, 2, 30, 4000, 50, 0, 6, 0, 0, 0])
        #expect(CounterText.parse("cpu0 1 2\n") { CounterText.numbers(after: "cpu", in: $0) } == [])
        // And the parser agrees with this host's /proc/stat read as text.
        let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8)
        let first = text?.split(separator: "\n").first.map { $0.split(separator: " ").dropFirst().compactMap { UInt64($0) } }
        let files = CounterFiles(["/proc/stat"])
        let fields = files.read(0) { CounterText.numbers(after: "cpu", in: $0) }
        #expect(fields?.count == first?.count)
    }

    @Test func aKeptFileIsReadAsItIsNow() throws {
        let path = NSTemporaryDirectory() + "dgrun-counter-\(getpid())"
        defer { unlink(path) }
        try "7\n".write(toFile: path, atomically: false, encoding: .utf8)
        let files = CounterFiles([path, ""])
        #expect(files.read(0, CounterText.number) == 7)
        #expect(files.read(1, CounterText.number) == nil)  // a file this layout does not have
        // Rewritten in place (the same inode, as the kernel's files are): the kept descriptor sees it.
        let fd = open(path, O_WRONLY | O_TRUNC)
        #expect(fd >= 0)
        _ = "1234\n".withCString { write(fd, $0, 5) }
        close(fd)
        #expect(files.read(0, CounterText.number) == 1234)
        files.close()
        #expect(files.read(0, CounterText.number) == 1234)  // opened again
        unlink(path)
        files.close()
        #expect(files.read(0, CounterText.number) == nil)
        #expect(CounterFiles.readOnce("/nonexistent/dgrun", CounterText.number) == nil)
    }
}
