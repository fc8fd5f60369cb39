import DgrunSystem
import Testing
@testable import DgrunSpec

@Suite struct ByteSizeTests {
    @Test(arguments: [
        ("512m", UInt64(512) << 20), ("2g", UInt64(2) << 30), ("1.5G", UInt64(3) << 29),
        ("64MiB", UInt64(64) << 20), ("100k", UInt64(100) << 10), ("4096", UInt64(4096)), ("1gb", UInt64(1) << 30),
    ])
    func parses(text: String, bytes: UInt64) throws {
        #expect(try ByteSize.parse(text) == bytes)
    }

    @Test(arguments: ["", "m", "12q", "-5m", "1..2g", "ten"])
    func rejects(text: String) {
        #expect(throws: DgrunError.self) { try ByteSize.parse(text) }
    }

    @Test func describes() {
        #expect(ByteSize.describe(64 << 20) == "64 MiB")
        #expect(ByteSize.describe(1536 << 20) == "1.5 GiB")
        #expect(ByteSize.describe(12) == "12 B")
    }
}

@Suite struct DurationTests {
    @Test(arguments: [("90", 90.0), ("30s", 30), ("500ms", 0.5), ("10m", 600), ("1.5h", 5400), ("1d", 86400)])
    func parses(text: String, seconds: Double) throws {
        #expect(try DurationText.parse(text) == seconds)
    }

    @Test(arguments: ["", "0", "-1s", "5x", "s"])
    func rejects(text: String) {
        #expect(throws: DgrunError.self) { try DurationText.parse(text) }
    }

    /// `timeout = "1e300s"` parsed, and `dgrun exec` trapped converting it to Int64 milliseconds.
    @Test(arguments: ["1e300s", "1e20", "36501d", "1e308d"])
    func rejectsWhatNoTimerHolds(text: String) throws {
        #expect(throws: DgrunError.self) { try DurationText.parse(text) }
        #expect(throws: DgrunError.self) { try TaskFile.parse("command = [\"true\"]\n[limits]\ntimeout = \"\(text)\"\n", directory: "/w/t") }
    }

    @Test func theLongestDurationFitsTheLauncher() throws {
        #expect(try DurationText.parse("36500d") == DurationText.maxSeconds)
        #expect(DurationText.maxSeconds * 1000 < Double(Int64.max))
    }
}

@Suite struct ResourceLimitTests {
    @Test func validatesRanges() throws {
        #expect(throws: DgrunError.self) { try ResourceLimits(memoryBytes: 1 << 20).validated(hostCPUs: 2) }
        #expect(throws: DgrunError.self) { try ResourceLimits(cpus: 3).validated(hostCPUs: 2) }
        #expect(throws: DgrunError.self) { try ResourceLimits(cpus: 0).validated(hostCPUs: 2) }
        #expect(throws: DgrunError.self) { try ResourceLimits(pids: 0).validated(hostCPUs: 2) }
        let ok = ResourceLimits(memoryBytes: 64 << 20, cpus: 1.5, pids: 10)
        #expect(try ok.validated(hostCPUs: 2) == ok)
    }

    @Test func cpuQuota() {
        #expect(ResourceLimits.cfsQuota(cpus: 1.5) == 150_000)
        #expect(ResourceLimits.cfsQuota(cpus: 0.001) == 1000)
    }
}

@Suite struct CapabilityTests {
    @Test func namesResolve() throws {
        #expect(try Capabilities.number(of: "CAP_NET_BIND_SERVICE") == 10)
        #expect(try Capabilities.number(of: "sys_admin") == 21)
        #expect(try Capabilities.mask(["CAP_CHOWN", "CAP_KILL"]) == (1 << 0 | 1 << 5))
        #expect(throws: DgrunError.self) { try Capabilities.number(of: "CAP_MAKE_COFFEE") }
    }
}
