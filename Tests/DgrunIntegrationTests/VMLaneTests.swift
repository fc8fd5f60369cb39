import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Lane 3 of the design notes: the limit, cleanup, delegation, tuning and discover suites, run
/// inside a QEMU/TCG guest whose only cgroup hierarchy is cgroup v2 (rootfs-scripts/vm-test.sh).
/// The guest sees this host's root over 9p, so it runs this very test binary and the dgrun beside it.
@Suite(.enabled(if: VMLane.unavailableReason == nil, "\(VMLane.unavailableReason ?? "")"))
struct VMLaneTests {
    @Test func limitCleanupTuningAndDiscoverSuitesPassOnCgroupV2() throws {
        let testBinary = try #require(FileIO.realPath("/proc/self/exe"))
        let r = Harness.run([Harness.repositoryRoot + "/rootfs-scripts/vm-test.sh", "--timeout", "900", "--",
                             "env", "DGRUN_TEST_LANE=v2", "DGRUN_BIN=\(Harness.binary)",
                             testBinary, "--testing-library", "swift-testing", "--filter", "DgrunIntegrationTests.LimitTests|DgrunIntegrationTests.CleanupTests|DgrunIntegrationTests.DelegationTests|DgrunIntegrationTests.TuningTests|DgrunIntegrationTests.DiscoverTests"])
        let console = r.stdout + r.stderr
        print(console.split(separator: "\n").filter { $0.contains("Test") || $0.contains("vm") }.joined(separator: "\n"))
        #expect(r.status == 0, "guest tests failed: \(console.suffix(4000))")
        #expect(console.contains("Suite LimitTests passed"), "LimitTests must run (not skip) on cgroup v2")
        #expect(console.contains("Suite CleanupTests passed"))
        #expect(console.contains("Suite DelegationTests passed"), "delegated cgroup-v2 limits, rootless")
        #expect(console.contains("Suite TuningTests passed"), "memory.high tuning on cgroup v2")
        #expect(console.contains("Suite DiscoverTests passed"), "the tracer and the graph on a cgroup-v2 kernel")
        #expect(!console.contains("skipped"), "nothing may be skipped in the v2 lane")
    }
}

enum VMLane {
    static let unavailableReason: String? = {
        if Harness.lane != "host" { return "already inside the VM lane" }
        if !Harness.isRoot { return "the VM lane runs as root (the guest shares the host root over 9p)" }
        var missing: [String] = []
        if !Harness.hasCommand("qemu-system-x86_64") { missing.append("qemu-system-x86") }
        if !Harness.hasCommand("cpio") { missing.append("cpio") }
        if !Harness.hasCommand("busybox") { missing.append("busybox-static") }
        let kernels = (try? FileManager.default.contentsOfDirectory(atPath: "/boot")) ?? []
        if !kernels.contains(where: { $0.hasPrefix("vmlinuz-") }) { missing.append("linux-image-amd64") }
        return missing.isEmpty ? nil : "cgroup-v2 VM lane needs: \(missing.joined(separator: ", ")) (apt-get install)"
    }()
}
