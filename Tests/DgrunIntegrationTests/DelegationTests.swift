import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// cgroup v2 with a delegated cgroup, as `systemd-run [--user] --scope -p Delegate=yes` makes one:
/// dgrun, alone in it, enables the controllers for its run, even unprivileged, and puts the cgroup
/// back as it found it. Runs in the VM lane (the host here is hybrid).
@Suite(.serialized, .enabled(if: Harness.isRoot && Harness.layout == .unified && Harness.hasCommand("setpriv"),
                             "needs root on a cgroup-v2 host (the VM lane) and setpriv"))
struct DelegationTests {
    /// A cgroup below the root, delegated to uid 65534 the way systemd delegates one.
    static func withDelegatedCgroup(_ body: (String) throws -> Void) throws {
        let dir = "/sys/fs/cgroup/deleg-test-\(getpid())"
        try #require(mkdir(dir, 0o755) == 0, "mkdir \(dir): \(String(cString: strerror(errno)))")
        defer { rmdir(dir) }
        for path in [dir, dir + "/cgroup.procs", dir + "/cgroup.subtree_control", dir + "/cgroup.threads"] {
            try #require(chown(path, 65534, 65534) == 0)
        }
        try body(dir)
    }

    @Test func unprivilegedDgrunLimitsInADelegatedCgroupAndRestoresIt() throws {
        try Self.withDelegatedCgroup { cgroup in
            let work = Harness.makeTemporaryDirectory(mode: 0o777)
            defer { Harness.removeTree(work) }
            // The shell moves itself in, then becomes dgrun: dgrun is the only process there.
            let r = Harness.run(["/bin/sh", "-c", """
                echo $$ > \(cgroup)/cgroup.procs && exec setpriv --reuid=65534 --regid=65534 --clear-groups -- \
                \(Harness.binary) exec --memory 32m --pids 20 --report \(work)/r.json -- tail /dev/zero
                """], cwd: work)
            #expect(r.status == 137, "\(r.stderr)")
            #expect(r.stderr.contains("killed: out of memory (limit 32 MiB"), "\(r.stderr)")
            let report = (try? String(contentsOfFile: work + "/r.json", encoding: .utf8)) ?? ""
            #expect(report.contains("\"enforced_by\" : \"cgroup\""), "\(report)")
            #expect(report.contains("\"cgroup_driver\" : \"v2\""))
            // Put back as found: no controllers enabled, no children, nobody inside.
            let subtree = (try? String(contentsOfFile: cgroup + "/cgroup.subtree_control", encoding: .utf8)) ?? "?"
            #expect(subtree.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "subtree_control: \(subtree)")
            let children = (try? FileManager.default.contentsOfDirectory(atPath: cgroup))?.filter {
                FileIO.isDirectory(cgroup + "/" + $0)
            } ?? []
            #expect(children.isEmpty, "\(children)")
        }
    }

    @Test func sharedCgroupIsLeftAloneWithAClearError() throws {
        try Self.withDelegatedCgroup { cgroup in
            // Another process (a sleep) shares the cgroup with dgrun: dgrun must not touch it.
            let r = Harness.run(["/bin/sh", "-c", """
                sleep 30 & other=$!
                echo $other > \(cgroup)/cgroup.procs
                sh -c 'echo $$ > \(cgroup)/cgroup.procs && exec \(Harness.binary) exec --memory 32m -- true'
                status=$?; kill $other; wait; exit $status
                """])
            #expect(r.status == 125, "\(r.stderr)")
            #expect(r.stderr.contains("other process"), "\(r.stderr)")
            let subtree = (try? String(contentsOfFile: cgroup + "/cgroup.subtree_control", encoding: .utf8)) ?? "?"
            #expect(subtree.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
        }
    }
}
