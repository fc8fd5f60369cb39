import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// dgrun as an ordinary user (uid 65534): namespaces through user namespaces, limits only where a
/// cgroup is delegated, otherwise a clear error or best-effort rlimits.
@Suite(.enabled(if: Harness.isRoot && Harness.hasCommand("setpriv"), "needs root (to become an unprivileged user) and setpriv"))
struct RootlessTests {
    static func asNobody(_ args: [String], cwd: String) -> RunResult {
        Harness.run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                     Harness.unprivilegedBinary!] + args, cwd: cwd)
    }

    static func withWorkdir(_ body: (String) -> Void) {
        let dir = Harness.makeTemporaryDirectory(mode: 0o777)
        defer { Harness.removeTree(dir) }
        body(dir)
    }

    static var reachable: Bool { Harness.unprivilegedBinary != nil }

    @Test(.enabled(if: reachable, "no copy of the dgrun binary could be made that uid 65534 can run"))
    func runsUnprivileged() {
        Self.withWorkdir { dir in
            let r = Self.asNobody(["exec", "--", "sh", "-c", "id -u; hostname; touch ok; echo $$"], cwd: dir)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout == "0\ndgrun\n2\n", "\(r.stdout)")
            var st = stat()
            #expect(stat(dir + "/ok", &st) == 0 && st.st_uid == 65534, "files are the user's own on the host")
            let current = Self.asNobody(["exec", "--user", "current", "--net", "none", "--", "id", "-u"], cwd: dir)
            #expect(current.stdout == "65534\n", "\(current.stderr)")
        }
    }

    @Test(.enabled(if: reachable, "no copy of the dgrun binary could be made that uid 65534 can run"))
    func limitsWithoutADelegatedCgroup() {
        Self.withWorkdir { dir in
            let refused = Self.asNobody(["exec", "--memory", "64m", "--", "true"], cwd: dir)
            #expect(refused.status == 125)
            #expect(refused.stderr.contains("--limits best-effort"), "\(refused.stderr)")
            let best = Self.asNobody(["exec", "--memory", "64m", "--pids", "50", "--limits", "best-effort", "--",
                                      "sh", "-c", "grep -E 'Max (processes|address space)' /proc/self/limits | awk '{print $(NF-2)}'"], cwd: dir)
            #expect(best.status == 0, "\(best.stderr)")
            #expect(best.stdout == "50\n\(64 << 20)\n", "\(best.stdout)")
            #expect(best.stderr.contains("best effort"))
        }
    }
}
