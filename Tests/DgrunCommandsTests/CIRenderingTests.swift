import DgrunEngine
import DgrunPlanner
import DgrunSpec
import DgrunSystem
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import DgrunCommands
@testable import DgrunRuntime

/// dgrun ci's rendering on fake reports: escaping, each CI's conventions, the report files, and the
/// summary's size bound. The real runs are in DgrunIntegrationTests/CITests.
@Suite struct CIRenderingTests {
    static func task(_ name: String, _ outcome: CIReport.Outcome, status: Int32 = 0, dir: String = "/repo/ws") -> CIReport.Task {
        var task = CIReport.Task(name: name, directory: dir + "/" + name, outcome: outcome, exitStatus: status)
        switch outcome {
        case .failed:
            task.wallSeconds = 1.5
            task.cpuSeconds = 0.7
            task.memoryPeakBytes = 3 << 20
            task.reasons = ["reads /repo/ws/\(name)/in.txt: changed"]
            task.logTail = ["compiling", "error: x.c:3: expected ';', found: '}' (100%)"]
        case .blocked:
            task.blockers = [Blocker(ref: "/data/ref.csv", why: "missing (the task reads it)", remedy: "restore it")]
        case .ran:
            task.wallSeconds = 0.25
            task.limitChanges = ["memory.high 256 MiB→384 MiB"]
            task.reasons = ["no previous run"]
        case .notStarted:
            task.message = "fail did not complete"
        default:
            task.reasons = ["nothing it used changed (7 dependencies checked)"]
        }
        return task
    }

    static func report() -> CIReport {
        var report = CIReport(name: "ws", root: "/repo/ws",
                              tasks: [task("up", .upToDate), task("ok", .ran), task("stuck", .blocked, status: 122),
                                      task("fail", .failed, status: 2), task("after", .notStarted, status: 122)],
                              exitStatus: 1)
        report.tasks[4].producers = ["fail"]
        report.tasks[3].producers = ["up", "ok"]
        report.tasks[1].undeclaredInputs = ["notes, draft.txt"]
        report.layers = [SandboxLayer(name: .limits, state: .unavailable, detail: "no writable cgroup", fix: "run as root"),
                         SandboxLayer(name: .seccomp, state: .active, detail: "the profile's filter"),
                         SandboxLayer(name: .userns, state: .active, detail: "a user namespace per sandbox"),
                         SandboxLayer(name: .network, state: .active, detail: "yes"),
                         SandboxLayer(name: .confine, state: .unavailable, detail: "not implemented yet")]
        report.required = [.seccomp, .userns]
        return report
    }

    // MARK: - escaping

    @Test func githubEscapingIsTheRunners() {
        #expect(GitHubCommand.escapeData("100% done\r\nnext: a,b") == "100%25 done%0D%0Anext: a,b")
        #expect(GitHubCommand.escapeProperty("100% done\r\nnext: a,b") == "100%25 done%0D%0Anext%3A a%2Cb")
        // %-escapes already in the text are escaped again, not passed through.
        #expect(GitHubCommand.escapeData("%0A") == "%250A")
        #expect(GitHubCommand.command("error", [("file", "ws/a,b/task.toml"), ("title", "x: y")], "line1\nline2")
                == "::error file=ws/a%2Cb/task.toml,title=x%3A y::line1%0Aline2")
        #expect(GitHubCommand.command("notice", [], "plain") == "::notice::plain")
    }

    @Test func githubOutputsUseTheHeredocFormForLineBreaks() {
        let text = GitHubCommand.outputs([("failed", "1"), ("list", "a\nb")])
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines[0] == "failed=1")
        #expect(lines[1].hasPrefix("list<<"))
        let delimiter = String(lines[1].dropFirst("list<<".count))
        #expect(lines[2] == "a" && lines[3] == "b" && lines[4] == delimiter)
        // A delimiter that occurs in the value is never used.
        let tricky = GitHubCommand.outputs([("v", "x\nghadelimiter_dgrun\ny")])
        let header = tricky.split(separator: "\n").first!
        #expect(header != "v<<ghadelimiter_dgrun")
    }

    @Test func xmlTextDropsWhatXMLForbids() {
        #expect(ReportText.xml("a<b & \"c\"\u{1B}[31mred\u{1B}[0m\u{7}", attribute: true) == "a&lt;b &amp; &quot;c&quot;red\u{FFFD}")
        #expect(ReportText.xml("x\ny\tz") == "x\ny\tz")
        #expect(ReportText.xml("x\ny", attribute: true) == "x&#10;y")
        #expect(ReportText.cell("a|b\nc <d>") == "a\\|b c &lt;d&gt;")
    }

    // MARK: - GitHub

    @Test func githubAnnotationsWorstFirstOnTheTaskFile() {
        let renderer = GitHubRenderer(env: ["GITHUB_WORKSPACE": "/repo"])
        let lines = renderer.annotations(Self.report())
        #expect(lines[0].hasPrefix("::error file=ws/fail/task.toml,title=dgrun%3A fail failed (exit 2)::failed with exit status 2"))
        #expect(lines[0].contains("%0A%0Alast lines of its log:%0Acompiling%0Aerror: x.c:3: expected ';', found: '}' (100%25)"))
        #expect(lines[1].hasPrefix("::error file=ws/stuck/task.toml,title=dgrun%3A stuck blocked::"))
        #expect(lines[1].contains("%0A- /data/ref.csv: missing (the task reads it)%0A  fix: restore it"))
        #expect(lines[2].hasPrefix("::warning title=dgrun%3A sandbox layers not active::"))
        #expect(lines[2].contains("not active: limits: no writable cgroup (fix: run as root)"))
        #expect(lines[3].hasPrefix("::warning file=ws/after/task.toml,title=dgrun%3A after not started::"))
        #expect(lines[4] == "::warning file=ws/ok/task.toml,title=dgrun%3A ok%3A undeclared inputs or outputs::inputs used but not declared in task.toml: notes, draft.txt")
        #expect(lines.count == 5)
    }

    @Test func onlyConfineMissingIsANotice() {
        var report = Self.report()
        report.layers[0].state = .active
        let lines = GitHubRenderer(env: [:]).annotations(report)
        #expect(!lines.contains { $0.hasPrefix("::warning title=dgrun%3A sandbox layers") })
        #expect(lines.last!.hasPrefix("::notice title=dgrun%3A sandbox layers::active: limits, seccomp, userns, network%0Anot active: confine"))
    }

    @Test func githubGroupsATaskLog() {
        let text = GitHubRenderer(env: [:]).group(Self.task("fail", .failed, status: 2), body: "out\n::endgroup::\n")
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0] == "::group::❌ fail: failed with exit status 2 · 1.50 s")
        // The task's own output cannot issue workflow commands: they are stopped around it.
        #expect(lines[1].hasPrefix("::stop-commands::dgrun-"))
        let token = String(lines[1].dropFirst("::stop-commands::".count))
        #expect(lines[2...3] == ["out", "::endgroup::"])
        #expect(lines[4] == "::\(token)::" && lines[5] == "::endgroup::" && lines.count == 6)
        #expect(GitHubRenderer(env: [:]).group(Self.task("fail", .failed), body: "") != text, "a new token each time")
    }

    @Test func githubPublishesTheStepSummaryAndOutputs() throws {
        let dir = NSTemporaryDirectory() + "dgrun-ci-unit-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "earlier step text\n".write(toFile: dir + "/summary.md", atomically: false, encoding: .utf8)
        let renderer = GitHubRenderer(env: ["GITHUB_STEP_SUMMARY": dir + "/summary.md", "GITHUB_OUTPUT": dir + "/output"])
        #expect(renderer.publish(Self.report()).isEmpty)
        let summary = try String(contentsOfFile: dir + "/summary.md", encoding: .utf8)
        #expect(summary.hasPrefix("earlier step text\n## dgrun ci: ws\n"), "appended, not replaced")
        #expect(summary.contains("| fail | ❌ failed (exit 2) | reads /repo/ws/fail/in.txt: changed | 1.50 s | 0.70 s | 3 MiB |"))
        #expect(summary.contains("| ok | ✅ ran | no previous run | 0.25 s |"))
        #expect(summary.contains("1: memory.high 256 MiB→384 MiB"))
        #expect(summary.contains("⚠️ limits — not active"))
        #expect(summary.contains("```mermaid\ngraph LR\n"))
        #expect(summary.contains("t3 --> t4") && summary.contains("t0 --> t3"))
        // Worst first: failed, blocked, not started, ran, up to date.
        let order = ["| fail |", "| stuck |", "| after |", "| ok |", "| up |"].map { summary.range(of: $0)!.lowerBound }
        #expect(order == order.sorted())
        let outputs = try String(contentsOfFile: dir + "/output", encoding: .utf8)
        for line in ["tasks=5", "failed=1", "blocked=1", "not_started=1", "ran=1", "up_to_date=1", "restored=0", "exit_status=1",
                     "layers_active=seccomp,userns,network", "layers_inactive=limits,confine"] {
            #expect(outputs.contains(line + "\n"), "\(line)")
        }
        #expect(outputs.contains("cache_key=sha256:") || outputs.contains("cache_key=fnv64:"))
    }

    @Test func cacheKeyFollowsTheActionKeys() {
        var report = Self.report()
        let first = report.cacheKey
        #expect(first == Self.report().cacheKey)
        report.tasks[1].graphVersion = 8
        #expect(report.cacheKey == first, "the store's numbers are local: not part of the key")
        report.tasks[1].actionKey = "sha256:" + String(repeating: "a", count: 64)
        #expect(report.cacheKey != first)
    }

    // MARK: - the summary's size

    @Test func aThousandTaskSummaryStaysUnderOneMiB() {
        let long = String(repeating: "reads /repo/ws/a/very/long/path/to/an/input/file.csv: changed; ", count: 20)
        var tasks: [CIReport.Task] = []
        for i in 0..<1000 {
            var task = Self.task("task-\(i)-" + String(repeating: "n", count: 100), i % 7 == 0 ? .failed : .ran, status: i % 7 == 0 ? 1 : 0)
            task.reasons = [long, long]
            task.limitChanges = Array(repeating: "memory.high 1 GiB→2 GiB", count: 20)
            if i > 0 { task.producers = [tasks[i - 1].name] }
            tasks.append(task)
        }
        let report = CIReport(name: "big", root: "/repo/big", tasks: tasks, exitStatus: 1)
        let full = CIFiles.markdown(report)
        #expect(full.utf8.count < CIFiles.summaryLimit)
        #expect(full.components(separatedBy: "\n| task-").count - 1 == 1000, "1,000 rows fit in 1 MiB")
        // The Mermaid picture of 1,000 tasks is past what GitHub renders: left out, with a note.
        #expect(full.contains("The workspace graph (1000 tasks) is left out"))

        // Less room (what an earlier step already wrote): rows are dropped, worst kept, with a note.
        let bounded = CIFiles.markdown(report, limit: 50_000)
        #expect(bounded.utf8.count <= 50_000)
        #expect(bounded.contains("more tasks left out to keep this summary under GitHub's 1 MiB limit"))
        let firstRow = bounded.range(of: "\n| task-")!.upperBound
        #expect(bounded[firstRow...].hasPrefix("0-"), "the failed tasks come first")
        #expect(!bounded.contains("| ✅ ran |"), "only failures fit")
    }

    @Test func appendingKeepsTheWholeStepSummaryUnderTheLimit() throws {
        let path = NSTemporaryDirectory() + "dgrun-ci-summary-\(getpid()).md"
        defer { unlink(path) }
        try String(repeating: "x", count: 900_000).write(toFile: path, atomically: false, encoding: .utf8)
        var tasks: [CIReport.Task] = []
        for i in 0..<1000 { tasks.append(Self.task("t\(i)", .ran)) }
        _ = GitHubRenderer(env: ["GITHUB_STEP_SUMMARY": path]).publish(CIReport(name: "big", root: "/b", tasks: tasks, exitStatus: 0))
        var st = stat()
        #expect(stat(path, &st) == 0 && Int(st.st_size) < CIFiles.summaryLimit)
    }

    // MARK: - GitLab and Buildkite

    @Test func gitlabSectionsCollapseWhatPassed() {
        let renderer = GitLabRenderer(env: [:])
        let passed = renderer.group(Self.task("ok", .ran), body: "log\n")
        #expect(passed.hasPrefix("\u{1B}[0Ksection_start:"))
        #expect(passed.contains(":dgrun_ok[collapsed=true]\r\u{1B}[0K✅ ok: ran (exit 0)"))
        #expect(passed.hasSuffix(":dgrun_ok\r\u{1B}[0K\n"))
        #expect(passed.contains("\nlog\n\u{1B}[0Ksection_end:"))
        let failed = renderer.group(Self.task("fail", .failed, status: 2), body: "log\n")
        #expect(failed.contains(":dgrun_fail\r\u{1B}[0K❌ fail"), "a failure stays open")
        #expect(GitLabRenderer.sectionName("a b/ü:c") == "dgrun_a_b___c")
    }

    @Test func gitlabDotenv() throws {
        let path = NSTemporaryDirectory() + "dgrun-ci-\(getpid()).env"
        defer { unlink(path) }
        #expect(GitLabRenderer(env: ["DGRUN_DOTENV": path]).publish(Self.report()).isEmpty)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("DGRUN_FAILED=1\n") && text.contains("DGRUN_EXIT_STATUS=1\n") && text.contains("DGRUN_CACHE_KEY="))
        #expect(text.split(separator: "\n").allSatisfy { $0.range(of: "^DGRUN_[A-Z_]+=[^\n]*$", options: .regularExpression) != nil })
    }

    @Test func buildkiteExpandsWhatDidNotPass() {
        let renderer = BuildkiteRenderer(env: [:])
        #expect(renderer.group(Self.task("ok", .ran), body: "x").hasPrefix("--- ✅ ok: ran"))
        #expect(renderer.group(Self.task("stuck", .blocked), body: "x").hasPrefix("+++ ⛔ stuck: blocked"))
        #expect(renderer.closing(Self.report()).hasPrefix("--- dgrun ci\n"))
    }

    @Test func detectsTheCI() {
        #expect(CIFlavour.detect(["GITHUB_ACTIONS": "true", "CI": "true"]) == .github)
        #expect(CIFlavour.detect(["GITLAB_CI": "true", "CI": "true"]) == .gitlab)
        #expect(CIFlavour.detect(["BUILDKITE": "true", "CI": "true"]) == .buildkite)
        #expect(CIFlavour.detect(["CI": "true"]) == .generic)
        #expect(CIFlavour.detect([:]) == .generic)
    }

    // MARK: - JUnit and JSON

    @Test func junitHasOneTestcasePerTask() throws {
        let xml = CIFiles.junit(Self.report(), now: 1_796_000_000, hostname: "runner")
        #expect(xml.hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"dgrun ci\" tests=\"5\" failures=\"2\" errors=\"0\" time=\"1.750\">"))
        #expect(xml.contains("<testsuite name=\"ws\" tests=\"5\" failures=\"2\" errors=\"0\" skipped=\"2\" time=\"1.750\" timestamp=\"2026-11-30T00:53:20\" hostname=\"runner\">"))
        #expect(xml.contains("<testcase classname=\"ws\" name=\"up\" time=\"0.000\">\n      <skipped message=\"up to date\"/>"))
        #expect(xml.contains("<testcase classname=\"ws\" name=\"fail\" time=\"1.500\">\n      <failure message=\"failed with exit status 2\" type=\"exit 2\">"))
        #expect(xml.contains("error: x.c:3: expected ';', found: '}' (100%)</failure>"))
        #expect(xml.contains("<failure message=\"blocked by 1 missing or unavailable dependency; not started\" type=\"blocked\">/data/ref.csv: missing"))
        // Parsed by Foundation's XML parser: well formed, five testcases.
        let parser = XMLCounter(xml)
        #expect(parser.ok, "\(parser.error ?? "")")
        #expect(parser.count["testcase"] == 5 && parser.count["failure"] == 2 && parser.count["skipped"] == 2)
    }

    @Test func dgrunsOwnFailureIsAnError() {
        var report = Self.report()
        report.tasks[3].wallSeconds = nil
        report.tasks[3].message = "cannot create the sandbox"
        let xml = CIFiles.junit(report)
        #expect(xml.contains("errors=\"1\""))
        #expect(xml.contains("<error message=\"dgrun failed (exit 2): cannot create the sandbox\" type=\"exit 2\">"))
    }

    @Test func jsonSummary() throws {
        let json = CIFiles.json(Self.report())
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        #expect(object["schema"] as? String == "dgrun.ci/1")
        #expect(object["exit_status"] as? Int == 1)
        #expect((object["counts"] as? [String: Int])?["not_started"] == 1)
        let tasks = object["tasks"] as! [[String: Any]]
        #expect(tasks.map { $0["name"] as! String } == ["up", "ok", "stuck", "fail", "after"])
        #expect(tasks[2]["outcome"] as? String == "blocked")
        #expect((tasks[2]["blockers"] as? [[String: String]])?.first?["remedy"] == "restore it")
        #expect((tasks[3]["log_tail"] as? [String])?.count == 2)
        #expect((object["layers"] as? [[String: Any]])?.first?["state"] as? String == "unavailable")
    }

    // MARK: - the verb

    @Test func workspaceExitStatus() {
        let ws = DirectoryResult.workspace(WorkspaceResult(root: "/w", results: []))
        let t = { (o: CIReport.Outcome) in Self.task("x", o) }
        #expect(CI.exitStatus(ws, tasks: [t(.upToDate), t(.ran)]) == 0)
        #expect(CI.exitStatus(ws, tasks: [t(.blocked), t(.ran)]) == 122)
        #expect(CI.exitStatus(ws, tasks: [t(.notStarted)]) == 122)
        #expect(CI.exitStatus(ws, tasks: [t(.blocked), Self.task("f", .failed, status: 7)]) == 1)
    }

    @Test func requireParsing() throws {
        #expect(try CI.parseLayers("limits,seccomp, userns", option: "--require") == [.limits, .seccomp, .userns])
        #expect(try CI.parseLayers("none", option: "--require") == [])
        #expect(throws: DgrunError.self) { try CI.parseLayers("limits,cgroups", option: "--require") }
        #expect(try CI.parse(["--require", "limits", "--memory", "64m", "ws"])?.require == [.limits])
        #expect(try CI.parse(["--memory", "64m", "ws"])?.exec.request.limits.memoryBytes == 64 << 20)
        do {
            _ = try CI.parse(["--bogus", "ws"])
            Issue.record("an unknown flag must be refused")
        } catch {
            #expect(error.exitStatus == 125 && error.verb == "ci")
        }
        do {
            _ = try CI.parse(["--cpus", "lots", "ws"])
            Issue.record("a bad exec option must be refused")
        } catch {
            #expect(error.exitStatus == 125 && error.verb == "ci", "\(error)")
        }
        #expect(throws: DgrunError.self) { try CI.parse(["--", "true"]) }
    }

    @Test func ciSectionOfTaskToml() throws {
        // task.toml's names (DgrunSpec) are the probe's (DgrunRuntime), which comes later in the flow.
        #expect(TaskFile.sandboxLayers == SandboxLayer.Name.allCases.map(\.rawValue))
        let task = try TaskFile.parse("run = \"true\"\n[ci]\nrequire = [\"limits\", \"seccomp\"]\n", directory: "/t")
        #expect(task.ciRequire == ["limits", "seccomp"])
        for (text, message) in [("run = \"true\"\n[ci]\nrequire = [\"cgroups\"]\n", "line 3, column 1: ci.require: unknown layer \"cgroups\""),
                                ("run = \"true\"\n[ci]\n  require = \"limits\"\n", "line 3, column 3: ci.require must be an array"),
                                ("run = \"true\"\n[ci]\nrequires = [\"limits\"]\n", "line 3, column 1: unknown key \"requires\" in [ci]")] {
            do {
                _ = try TaskFile.parse(text, directory: "/t")
                Issue.record("accepted: \(text)")
            } catch {
                #expect(error.message.contains(message), "\(error.message)")
                #expect(error.exitStatus == 125)
            }
        }
    }

    @Test func theAppArmorRestrictionIsNamedWithItsFixes() throws {
        let ubuntu2404 = { (path: String) -> String? in
            path == "/proc/sys/kernel/apparmor_restrict_unprivileged_userns" ? "1" : path == "/proc/sys/user/max_user_namespaces" ? "63000" : nil
        }
        let restriction = try #require(HostLayers.usernsRestriction(root: false, sysctl: ubuntu2404))
        #expect(restriction.detail.contains("AppArmor restricts unprivileged user namespaces here (kernel.apparmor_restrict_unprivileged_userns=1"))
        #expect(restriction.fix.contains("run dgrun through sudo"))
        #expect(restriction.fix.contains("ci/apparmor/dgrun"))
        // Root is not restricted.
        #expect(HostLayers.usernsRestriction(root: true, sysctl: ubuntu2404) == nil)
        let layer = HostLayers.usernsLayer("sandbox setup failed: mount: EACCES", restriction: restriction)
        #expect(layer.state == .unavailable && layer.detail.hasSuffix(": sandbox setup failed: mount: EACCES") && layer.fix == restriction.fix)
        // The probe worked anyway (the profile is installed): active, and the restriction said.
        let allowed = HostLayers.usernsLayer(nil, restriction: restriction)
        #expect(allowed.state == .active && allowed.detail.contains("but this dgrun may create them"))
        let debian = { (path: String) -> String? in path == "/proc/sys/kernel/unprivileged_userns_clone" ? "0" : nil }
        #expect(HostLayers.usernsRestriction(root: false, sysctl: debian)?.fix.contains("unprivileged_userns_clone=1") == true)
        #expect(HostLayers.usernsRestriction(root: false, sysctl: { _ in nil }) == nil)
    }

    @Test func missingLayersNameTheLayerAndTheFix() throws {
        let layers = Self.report().layers
        #expect(Engine.missingLayers([.seccomp, .userns], in: layers) == nil)
        let error = try #require(Engine.missingLayers([.limits, .confine], in: layers))
        #expect(error.exitStatus == 125)
        #expect(error.message.contains("- limits (the run's own cgroup (limits enforced and measured)): no writable cgroup\n    fix: run as root"))
        #expect(error.message.contains("- confine"))
        #expect(error.message.contains("nothing was started"))
    }
}

/// Counts the elements of an XML document with Foundation's parser (a well-formedness check).
final class XMLCounter: NSObject, XMLParserDelegate {
    var count: [String: Int] = [:]
    var ok = false
    var error: String?

    init(_ text: String) {
        super.init()
        let parser = XMLParser(data: Data(text.utf8))
        parser.delegate = self
        ok = parser.parse()
        error = parser.parserError.map { "\($0)" }
    }

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        count[elementName, default: 0] += 1
    }
}
