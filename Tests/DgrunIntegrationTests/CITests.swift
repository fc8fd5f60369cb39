import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `dgrun ci` in a real-looking CI: the environment and the files GitHub Actions and GitLab give a
/// step, in a temp directory, for a workspace with a task that passes, one that fails, one that is
/// blocked and one that is up to date; the JUnit file read by xmllint against the schema and by a
/// Python JUnit parser.
@Suite(.serialized) struct CITests {
    static let schema = Harness.repositoryRoot + "/Tests/Fixtures/junit-jenkins-subset.xsd"
    /// The CI variables of the machine running the tests must not leak into the CI under test.
    static let clean = ["-u", "GITHUB_ACTIONS", "-u", "GITLAB_CI", "-u", "BUILDKITE", "-u", "CI", "-u", "GITHUB_STEP_SUMMARY",
                        "-u", "GITHUB_OUTPUT", "-u", "DGRUN_DOTENV"]

    /// A CI checkout: DIR/ws (pass, fail, blocked, stable) and DIR/ext (what blocked reads).
    struct Checkout {
        let dir: String
        var ws: String { dir + "/ws" }

        init() throws {
            dir = Harness.makeTemporaryDirectory()
            for task in ["pass", "fail", "blocked", "stable"] {
                try FileManager.default.createDirectory(atPath: dir + "/ws/" + task, withIntermediateDirectories: true)
            }
            try FileManager.default.createDirectory(atPath: dir + "/ext", withIntermediateDirectories: true)
            try "42\n".write(toFile: dir + "/ext/ref.txt", atomically: false, encoding: .utf8)
            try "one\n".write(toFile: dir + "/ws/pass/input.txt", atomically: false, encoding: .utf8)
            // input.txt is read but not declared: a warning.
            try "run = \"echo reading; cat input.txt > out.txt\"\noutputs = [\"out.txt\"]\n"
                .write(toFile: dir + "/ws/pass/task.toml", atomically: false, encoding: .utf8)
            try "run = \"echo compiling; echo 'error: a.c:3: expected x, got: y (100%)' >&2; exit 3\"\n"
                .write(toFile: dir + "/ws/fail/task.toml", atomically: false, encoding: .utf8)
            try "run = \"cat \(dir)/ext/ref.txt > copy.txt\"\ninputs = [\"\(dir)/ext/ref.txt\"]\noutputs = [\"copy.txt\"]\n"
                .write(toFile: dir + "/ws/blocked/task.toml", atomically: false, encoding: .utf8)
            try "run = \"echo stable > s.txt\"\noutputs = [\"s.txt\"]\n".write(toFile: dir + "/ws/stable/task.toml", atomically: false, encoding: .utf8)
        }

        func ci(_ env: [String], _ args: [String]) -> RunResult {
            // A cache of its own: another test's checkout of the same tasks would be restored from
            // the shared one (as another CI job's would) instead of running.
            Harness.run(["/usr/bin/env"] + CITests.clean + env + [Harness.binary, "ci", "--cache", dir + "/cache"] + args + [ws], cwd: dir)
        }

        func read(_ name: String) -> String { (try? String(contentsOfFile: dir + "/" + name, encoding: .utf8)) ?? "" }

        /// Run 1 makes the state; then the input of pass changes and blocked's file is gone.
        func prepare() {
            let first = ci([], [])
            #expect(first.status == 1, "fail fails on the first run too: \(first.stdout)\(first.stderr)")
            try? "two\n".write(toFile: dir + "/ws/pass/input.txt", atomically: false, encoding: .utf8)
            unlink(dir + "/ext/ref.txt")
        }
    }

    @Test func githubActions() throws {
        let checkout = try Checkout()
        defer { Harness.removeTree(checkout.dir) }
        checkout.prepare()
        let d = checkout.dir
        try "earlier step\n".write(toFile: d + "/summary.md", atomically: false, encoding: .utf8)
        let r = checkout.ci(["GITHUB_ACTIONS=true", "CI=true", "GITHUB_WORKSPACE=\(d)", "GITHUB_STEP_SUMMARY=\(d)/summary.md",
                             "GITHUB_OUTPUT=\(d)/output", "RUNNER_TEMP=\(d)"],
                            ["--junit", d + "/junit.xml", "--json", d + "/ci.json"])
        #expect(r.status == 1, "a task failed: \(r.stdout)\(r.stderr)")
        let out = r.stdout

        // Each task's log in its own group, whole.
        #expect(out.contains("::group::❌ fail: failed with exit status 3"))
        #expect(out.contains("compiling\nerror: a.c:3: expected x, got: y (100%)\n"), "\(out)")
        #expect(out.contains("::group::✅ pass: ran (exit 0)"))
        #expect(out.contains("::group::⛔ blocked: blocked by 1 missing or unavailable dependency"))
        #expect(out.contains("::group::✔️ stable: up to date"))
        #expect(out.components(separatedBy: "::group::").count - 1 == 4)
        #expect(out.components(separatedBy: "::endgroup::").count - 1 == 4)
        #expect(out.components(separatedBy: "::stop-commands::dgrun-").count - 1 == 4, "task output cannot issue workflow commands")

        // Annotations, escaped as the runner unescapes them, worst first.
        let annotations = out.split(separator: "\n").filter { $0.hasPrefix("::error") || $0.hasPrefix("::warning") || $0.hasPrefix("::notice") }
        #expect(annotations.count >= 3, "\(out)")
        let failed = try #require(annotations.first)
        #expect(failed.hasPrefix("::error file=ws/fail/task.toml,title=dgrun%3A fail failed (exit 3)::failed with exit status 3%0A%0Alast lines of its log:%0A"))
        #expect(failed.hasSuffix("compiling%0Aerror: a.c:3: expected x, got: y (100%25)"), "\(failed)")
        let blocked = annotations[1]
        #expect(blocked.hasPrefix("::error file=ws/blocked/task.toml,title=dgrun%3A blocked blocked::"))
        #expect(blocked.contains("%0A- \(d)/ext/ref.txt: missing"))
        #expect(blocked.contains("%0A  fix: "))
        #expect(annotations.contains { $0.hasPrefix("::warning file=ws/pass/task.toml,title=dgrun%3A pass%3A undeclared inputs or outputs::") && $0.contains("input.txt") })
        // Which layers were active is said either way (confine never is, yet).
        #expect(annotations.contains { ($0.hasPrefix("::notice title=dgrun%3A sandbox layers::") || $0.hasPrefix("::warning title=dgrun%3A sandbox layers not active::"))
            && $0.contains("not active: confine") })

        // The step summary: appended, a row per task, the graph.
        let summary = checkout.read("summary.md")
        #expect(summary.hasPrefix("earlier step\n## dgrun ci: ws\n"))
        #expect(summary.contains("**4 tasks**: 1 failed, 1 blocked, 1 ran, 1 up to date · exit status 1"))
        #expect(summary.contains("| fail | ❌ failed (exit 3) | the last run failed (exit status 3) |"), "\(summary)")
        #expect(summary.contains("| blocked | ⛔ blocked | \(d)/ext/ref.txt: missing"))
        #expect(summary.contains("| pass | ✅ ran | reads \(d)/ws/pass/input.txt: changed |"))
        #expect(summary.contains("| stable | ✔️ up to date | nothing it used changed"))
        #expect(summary.contains("⚠️ confine — not active"))
        #expect(summary.contains("```mermaid\ngraph LR\n"))

        // Outputs for later steps.
        let outputs = checkout.read("output")
        for line in ["tasks=4", "failed=1", "blocked=1", "ran=1", "up_to_date=1", "not_started=0", "exit_status=1"] {
            #expect(outputs.contains(line + "\n"), "\(line) in \(outputs)")
        }
        #expect(outputs.range(of: "cache_key=(sha256|fnv64):[0-9a-f]+\n", options: .regularExpression) != nil)

        // The JSON summary and the task logs' directory, removed afterwards.
        let json = try JSONSerialization.jsonObject(with: Data(checkout.read("ci.json").utf8)) as! [String: Any]
        #expect(json["exit_status"] as? Int == 1)
        #expect((json["tasks"] as? [[String: Any]])?.count == 4)
        #expect(!FileIO.listDirectory(d).contains { $0.hasPrefix("dgrun-ci-logs-") })

        try Self.checkJUnit(d + "/junit.xml", workspace: "ws")
    }

    @Test func gitlab() throws {
        let checkout = try Checkout()
        defer { Harness.removeTree(checkout.dir) }
        checkout.prepare()
        let d = checkout.dir
        let r = checkout.ci(["GITLAB_CI=true", "CI=true", "DGRUN_DOTENV=\(d)/dgrun.env"], ["--junit", d + "/junit.xml"])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        let esc = "\\x1B\\[0K"  // as a regular expression
        // Passed tasks collapsed; the failed and blocked ones open.
        #expect(r.stdout.range(of: "\(esc)section_start:[0-9]+:dgrun_pass\\[collapsed=true\\]\r\(esc)✅ pass", options: .regularExpression) != nil, "\(r.stdout)")
        #expect(r.stdout.range(of: "\(esc)section_start:[0-9]+:dgrun_stable\\[collapsed=true\\]\r\(esc)✔️ stable", options: .regularExpression) != nil)
        #expect(r.stdout.range(of: "\(esc)section_start:[0-9]+:dgrun_fail\r\(esc)❌ fail", options: .regularExpression) != nil)
        #expect(r.stdout.range(of: "\(esc)section_start:[0-9]+:dgrun_blocked\r\(esc)⛔ blocked", options: .regularExpression) != nil)
        #expect(r.stdout.components(separatedBy: "\u{1B}[0Ksection_end:").count - 1 == 4)
        #expect(!r.stdout.contains("::error"), "no GitHub commands outside GitHub")
        let dotenv = checkout.read("dgrun.env")
        #expect(dotenv.contains("DGRUN_FAILED=1\n") && dotenv.contains("DGRUN_BLOCKED=1\n") && dotenv.contains("DGRUN_EXIT_STATUS=1\n"), "\(dotenv)")
        try Self.checkJUnit(d + "/junit.xml", workspace: "ws")
    }

    @Test func theCacheKeyIsTheSameForTheSameWorkAtAnotherPath() throws {
        // Two checkouts of the same passing task under different names: the same action keys, the
        // same cache_key in $GITHUB_OUTPUT; a changed input moves it.
        var keys: [String] = []
        for content in ["one\n", "one\n", "two\n"] {
            let dir = Harness.makeTemporaryDirectory()
            defer { Harness.removeTree(dir) }
            try FileManager.default.createDirectory(atPath: dir + "/ws/pass", withIntermediateDirectories: true)
            try content.write(toFile: dir + "/ws/pass/input.txt", atomically: false, encoding: .utf8)
            try "run = \"cat input.txt > out.txt\"\ninputs = [\"input.txt\"]\noutputs = [\"out.txt\"]\n"
                .write(toFile: dir + "/ws/pass/task.toml", atomically: false, encoding: .utf8)
            let output = dir + "/output"
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            let r = Harness.run(["/usr/bin/env"] + Self.clean + ["GITHUB_ACTIONS=true", "GITHUB_OUTPUT=" + output,
                                Harness.binary, "ci", "--cache", dir + "/cache", dir + "/ws"], cwd: dir)
            #expect(r.status == 0, "\(r.stderr)")
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            keys.append(text.split(separator: "\n").first { $0.hasPrefix("cache_key=") }.map(String.init) ?? "none")
        }
        #expect(keys[0].hasPrefix("cache_key=sha256:") && keys[0] == keys[1], "\(keys)")
        #expect(keys[2] != keys[0], "\(keys)")
    }

    @Test func singleTaskKeepsTheExecContract() throws {
        let checkout = try Checkout()
        defer { Harness.removeTree(checkout.dir) }
        let fail = Harness.run(["/usr/bin/env"] + Self.clean + [Harness.binary, "ci", checkout.ws + "/fail"])
        #expect(fail.status == 3, "the task's own status: \(fail.stdout)")
        _ = Harness.run(["/usr/bin/env"] + Self.clean + [Harness.binary, "ci", checkout.ws + "/blocked"])
        unlink(checkout.dir + "/ext/ref.txt")
        let blocked = Harness.run(["/usr/bin/env"] + Self.clean + [Harness.binary, "ci", checkout.ws + "/blocked"])
        #expect(blocked.status == 122, "\(blocked.stdout)")
    }

    @Test func badInputIsExit125() throws {
        let checkout = try Checkout()
        defer { Harness.removeTree(checkout.dir) }
        let unknown = checkout.ci([], ["--jnuit", "x.xml"])
        #expect(unknown.status == 125)
        #expect(unknown.stderr.contains("unknown option '--jnuit'; did you mean '--junit'?"), "\(unknown.stderr)")
        try "run = \"true\"\n[ci]\nrequire = [\"limits\", \"cgroups\"]\n".write(toFile: checkout.ws + "/stable/task.toml", atomically: false, encoding: .utf8)
        let malformed = checkout.ci([], [])
        #expect(malformed.status == 125)
        #expect(malformed.stdout.contains("stable/task.toml: line 3, column 1: ci.require: unknown layer \"cgroups\""), "\(malformed.stdout)")
        #expect(!FileIO.exists(checkout.ws + "/pass/.dgrun"), "nothing started, no state")
        let help = Harness.run([Harness.binary, "ci", "--help"])
        #expect(help.status == 0 && help.stdout.contains("EXAMPLES:") && help.stdout.contains("--require <layers>") && help.stdout.contains("--memory <size>"))
    }

    @Test func requireConfineIsRefusedBeforeAnythingStarts() throws {
        let checkout = try Checkout()
        defer { Harness.removeTree(checkout.dir) }
        let r = checkout.ci(["GITHUB_ACTIONS=true", "GITHUB_STEP_SUMMARY=\(checkout.dir)/summary.md"], ["--require", "confine", "--json", checkout.dir + "/ci.json"])
        #expect(r.status == 125, "\(r.stdout)")
        #expect(r.stdout.contains("::error title=dgrun ci%3A nothing was started::required sandbox layers are not available on this runner; nothing was started:%0A  - confine (confinement (Landlock)): dgrun does not implement confinement (Landlock) yet"), "\(r.stdout)")
        #expect(checkout.read("summary.md").contains("**dgrun failed before starting anything (exit 125):**"))
        let json = try JSONSerialization.jsonObject(with: Data(checkout.read("ci.json").utf8)) as! [String: Any]
        let confine = (json["layers"] as? [[String: Any]])?.first { $0["name"] as? String == "confine" }
        #expect(confine?["state"] as? String == "unavailable")
        for task in ["pass", "fail", "blocked", "stable"] {
            #expect(!FileIO.exists(checkout.ws + "/" + task + "/.dgrun"), "\(task): no state written")
        }
    }

    @Test func buildkiteGroupsAndAnnotates() throws {
        let checkout = try Checkout()
        defer { Harness.removeTree(checkout.dir) }
        let d = checkout.dir
        // A buildkite-agent on PATH that keeps what it was given.
        try FileManager.default.createDirectory(atPath: d + "/bin", withIntermediateDirectories: true)
        try "#!/bin/sh\necho \"$@\" > \(d)/annotate.args\ncat > \(d)/annotate.md\n".write(toFile: d + "/bin/buildkite-agent", atomically: false, encoding: .utf8)
        chmod(d + "/bin/buildkite-agent", 0o755)
        let path = d + "/bin:" + (Foundation.ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let r = checkout.ci(["BUILDKITE=true", "CI=true", "PATH=\(path)"], [])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stdout.contains("\n+++ ❌ fail: failed with exit status 3"), "\(r.stdout)")
        #expect(r.stdout.contains("\n--- ✅ pass: ran (exit 0)"))
        #expect(checkout.read("annotate.args") == "annotate --style error --context dgrun\n")
        #expect(checkout.read("annotate.md").contains("| fail | ❌ failed (exit 3) |"))
    }

    // MARK: - a runner without a delegated cgroup

    static func asNobody(_ args: [String], cwd: String) -> RunResult {
        Harness.run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "/usr/bin/env"] + clean
                    + [Harness.binary] + args, cwd: cwd)
    }

    /// The layers uid 65534 gets here, from `dgrun ci` on a directory with no task (it starts nothing).
    static let nobodyLimits: String? = {
        guard Harness.isRoot, Harness.hasCommand("setpriv") else { return nil }
        let dir = Harness.makeTemporaryDirectory(mode: 0o777)
        defer { Harness.removeTree(dir) }
        _ = asNobody(["ci", "--require", "none", "--json", dir + "/layers.json", dir], cwd: dir)
        guard let data = FileManager.default.contents(atPath: dir + "/layers.json"),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let layers = object["layers"] as? [[String: Any]] else { return nil }
        return layers.first { $0["name"] as? String == "limits" }?["state"] as? String
    }()

    @Test(.enabled(if: nobodyLimits != nil && nobodyLimits != "active",
                   "needs root, setpriv, a dgrun binary uid 65534 can run, and no cgroup delegated to uid 65534"))
    func requireLimitsWithoutADelegatedCgroupStartsNothing() throws {
        let checkout = try Checkout()
        defer { Harness.removeTree(checkout.dir) }
        Harness.run(["chmod", "-R", "a+rwX", checkout.dir])
        let d = checkout.dir
        let r = Self.asNobody(["ci", "--require", "limits", "--json", d + "/ci.json", checkout.ws], cwd: d)
        #expect(r.status == 125, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("required sandbox layers are not available on this runner; nothing was started"))
        #expect(r.stdout.contains("- limits (the run's own cgroup (limits enforced and measured)): no writable cgroup"))
        #expect(r.stdout.contains("fix: run dgrun as root (sudo), or inside a delegated cgroup"))
        for task in ["pass", "fail", "blocked", "stable"] {
            #expect(!FileIO.exists(checkout.ws + "/" + task + "/.dgrun"), "\(task): no state written")
        }
        #expect(!FileIO.exists(checkout.ws + "/pass/out.txt"), "nothing ran")
        // Without --require, it runs and says that limits were not active.
        let weaker = Self.asNobody(["ci", "--format", "github", checkout.ws + "/stable"], cwd: d)
        #expect(weaker.status == 0, "\(weaker.stdout)\(weaker.stderr)")
        #expect(weaker.stdout.contains("::warning title=dgrun%3A sandbox layers not active::active: seccomp, userns, network%0Anot active: limits: no writable cgroup"))
    }

    // MARK: - the JUnit file, read by independent parsers

    static func checkJUnit(_ path: String, workspace: String) throws {
        if Harness.hasCommand("xmllint") {
            let lint = Harness.run(["xmllint", "--noout", "--schema", schema, path])
            #expect(lint.status == 0, "xmllint: \(lint.stderr)")
        } else {
            print("CITests: xmllint is not installed (apt install libxml2-utils): the schema check is skipped")
        }
        guard Harness.hasCommand("python3") else {
            print("CITests: python3 is not installed: the JUnit parser check is skipped")
            return
        }
        let script = """
        import sys
        path = sys.argv[1]
        try:
            from junitparser import JUnitXml
            print("parser junitparser")
            for suite in JUnitXml.fromfile(path):
                for case in suite:
                    kinds = [type(r).__name__.lower() for r in case.result]
                    print("case", case.classname, case.name, ",".join(kinds) or "passed", "%.3f" % case.time, len(case.system_out or ""))
        except ImportError:
            import xml.etree.ElementTree as ET
            print("parser etree")
            for case in ET.parse(path).getroot().iter("testcase"):
                kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
                out = case.find("system-out")
                print("case", case.get("classname"), case.get("name"), ",".join(kinds) or "passed", "%.3f" % float(case.get("time")), len(out.text or "") if out is not None else 0)
        """
        let dir = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(dir) }
        try script.write(toFile: dir + "/read.py", atomically: false, encoding: .utf8)
        let r = Harness.run(["python3", dir + "/read.py", path])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        print("CITests: JUnit read by \(lines.first?.last ?? "?")")
        var cases: [String: [String]] = [:]
        for line in lines where line.first == "case" && line.count == 6 { cases[line[2]] = line }
        #expect(cases.count == 4, "\(r.stdout)")
        #expect(cases.values.allSatisfy { $0[1] == workspace })
        #expect(cases["fail"]?[3] == "failure")
        #expect(cases["blocked"]?[3] == "failure")
        #expect(cases["stable"]?[3] == "skipped")
        #expect(cases["pass"]?[3] == "passed")
        #expect((Int(cases["fail"]?[5] ?? "0") ?? 0) > 0, "the log is in system-out")
    }
}
