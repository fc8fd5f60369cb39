import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The start time read from /proc/PID/stat (what names dgrun's cgroups and tells a stale one):
/// the byte parser agrees with the plain reading of field 22, including for a process whose
/// name has spaces and parentheses in it.
@Suite struct ProcessInfoTests {
    func reference(_ pid: Int32) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    @Test func startTimeIsField22() throws {
        #expect(ProcessInfo.startTime(of: getpid()) != nil)
        #expect(ProcessInfo.startTime(of: getpid()) == reference(getpid()))
        #expect(ProcessInfo.startTime(of: 1) == reference(1))
        #expect(ProcessInfo.startTime(of: Int32.max) == nil)
    }

    @Test func aNameWithParenthesesAndSpacesDoesNotShiftTheFields() throws {
        // A child renamed (prctl PR_SET_NAME) to ") 7 8 (", which it waits under.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        child.arguments = ["-c", "import ctypes,time; ctypes.CDLL(None).prctl(15, b') 7 8 (', 0, 0, 0); time.sleep(10)"]
        try child.run()
        // SIGKILL: the test process may have blocked SIGTERM, and the child inherits the mask.
        defer { kill(child.processIdentifier, SIGKILL); child.waitUntilExit() }
        let pid = child.processIdentifier
        for _ in 0..<100 {
            if let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8), comm.hasPrefix(") 7 8 (") { break }
            usleep(20_000)
        }
        let comm = try String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)
        try #require(comm.hasPrefix(") 7 8 ("), "the child did not rename itself: \(comm)")
        #expect(ProcessInfo.startTime(of: pid) == reference(pid))
        #expect(ProcessInfo.startTime(of: pid) != nil)
    }
}
