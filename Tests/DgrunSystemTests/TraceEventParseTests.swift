import CDgrunSpawn
import DgrunSystem
import Testing

/// The tracer log's reader, on logs whose lengths say more than the log holds (found by FuzzTraceLog).
@Suite struct TraceEventParseTests {
    static func parse(_ bytes: [UInt8], excluding: String? = nil) -> [TraceEvent] {
        var bytes = bytes
        return bytes.withUnsafeMutableBufferPointer { buffer in
            var log = dgrun_trace_log()
            log.bytes = buffer.baseAddress
            log.length = buffer.count
            log.capacity = buffer.count
            return TraceEvent.parse(log, excluding: excluding)
        }
    }

    static func header(kind: Int32, pathLength: Int32, path2Length: Int32, seq: UInt64 = 0) -> [UInt8] {
        var e = dgrun_trace_event()
        e.kind = kind
        e.seq = seq
        e.nr = 257
        e.path_len = pathLength
        e.path2_len = path2Length
        return withUnsafeBytes(of: &e) { Array($0) }
    }

    @Test func aLengthPastTheEndTakesWhatIsLeft() {
        // path_len 100 with 10 bytes left, then path2_len 1: the second count went negative (a trap).
        let log = Self.header(kind: 1, pathLength: 100, path2Length: 1) + Array("/etc/hosts".utf8)
        let events = Self.parse(log)
        #expect(events.count == 1)
        #expect(events.first?.path == "/etc/hosts")
        #expect(events.first?.path2 == "")
    }

    @Test func negativeAndHugeLengthsDoNotTrap() {
        let log = Self.header(kind: 2, pathLength: -5, path2Length: .max) + Array("abc".utf8)
            + Self.header(kind: 1, pathLength: 3, path2Length: 0)
        let events = Self.parse(log)
        #expect(events.count == 1)
        #expect(events.first?.path == "")
    }

    @Test func aWellFormedLogReadsBack() {
        let log = Self.header(kind: 1, pathLength: 4, path2Length: 0, seq: 1) + Array("/etc".utf8)
            + Self.header(kind: 2, pathLength: 4, path2Length: 0, seq: 2) + Array("/bin".utf8)
        #expect(Self.parse(log).map(\.path) == ["/etc", "/bin"])
    }

    /// Serving threads log as they finish: the events come back in the order the calls were
    /// received in (equal seqs in the log's order), without the excluded path's.
    @Test func eventsAreInCallOrderWithoutTheExcludedPath() {
        let entries: [(UInt64, String)] = [(3, "/c"), (1, "/a"), (2, "/lib/x.so"), (1, "/a2"), (0, "/z"), (2, "/b")]
        let log = entries.flatMap { Self.header(kind: 1, pathLength: Int32($0.1.utf8.count), path2Length: 0, seq: $0.0) + Array($0.1.utf8) }
            + Self.header(kind: 99, pathLength: 2, path2Length: 0, seq: 0) + Array("/q".utf8)  // not a kind: skipped
        #expect(Self.parse(log).map(\.path) == ["/z", "/a", "/a2", "/lib/x.so", "/b", "/c"])
        #expect(Self.parse(log, excluding: "/lib/x.so").map(\.path) == ["/z", "/a", "/a2", "/b", "/c"])
        #expect(Self.parse(log, excluding: "/lib/x.s").count == 6)
    }
}
