import Foundation
import Testing

/// `--rootfs` with the busybox root filesystem that rootfs-scripts/ builds.
@Suite(.enabled(if: Harness.hasCommand("busybox"), "needs a static busybox (apt-get install busybox-static)"))
struct RootfsTests {
    @Test func runsInABusyboxRoot() throws {
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        let build = Harness.run([Harness.repositoryRoot + "/rootfs-scripts/build-busybox-rootfs.sh", dir + "/root"])
        try #require(build.status == 0, "\(build.stderr)")
        let r = Harness.dgrun(["exec", "--rootfs", dir + "/root", "--", "/bin/sh", "-c",
                               "grep ^ID= /etc/os-release; test -e /usr/bin/swift && echo host-visible || echo host-hidden; touch /etc/x 2>/dev/null || echo ro; touch /tmp/y && echo tmp-ok; pwd"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "ID=dgrun-busybox\nhost-hidden\nro\ntmp-ok\n/\n", "\(r.stdout)")
        let missing = Harness.dgrun(["exec", "--rootfs", dir + "/nope", "--", "/bin/true"])
        #expect(missing.status == 125)
        #expect(missing.stderr.contains("--rootfs"))
    }
}
