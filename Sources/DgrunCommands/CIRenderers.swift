import DgrunPlanner
import DgrunRuntime
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The CI a `dgrun ci` runs in, from its environment (or --format).
enum CIFlavour: String, Sendable, CaseIterable {
    case github, gitlab, buildkite, generic

    static func detect(_ env: [String: String]) -> CIFlavour {
        if env["GITHUB_ACTIONS"] == "true" { return .github }
        if env["GITLAB_CI"] != nil { return .gitlab }
        if env["BUILDKITE"] == "true" { return .buildkite }
        return .generic
    }

    func renderer(_ env: [String: String]) -> any CIRenderer {
        switch self {
        case .github: return GitHubRenderer(env: env)
        case .gitlab: return GitLabRenderer(env: env)
        case .buildkite: return BuildkiteRenderer(env: env)
        case .generic: return GenericRenderer(env: env)
        }
    }
}

/// One CI's conventions: how a task's log is grouped, what closes the log (annotations), and the
/// files or commands of that CI after the run. The report files of any CI (--junit, --json,
/// --summary) are CIFiles', written by the verb whatever the renderer.
protocol CIRenderer: Sendable {
    var env: [String: String] { get }
    /// A finished task's log in this CI's group, `body` being its lines.
    func group(_ task: CIReport.Task, body: String) -> String
    /// What ends the log: annotations worst first, the closing summary.
    func closing(_ report: CIReport) -> String
    /// This CI's own files and commands (step summary, outputs, dotenv, annotate). Returns what
    /// went wrong, for the log; never changes the exit status.
    func publish(_ report: CIReport) -> [String]
}

extension CIRenderer {
    /// The group's title: the mark, the task, how it ended and how long it took.
    func title(_ task: CIReport.Task) -> String {
        "\(CIFiles.emoji(task.outcome)) \(task.name): \(task.headline)" + (task.wallSeconds.map { " · \(ReportText.seconds($0))" } ?? "")
    }

    /// Lines for every CI: counts, layers not active, then each task that did not pass.
    func plainClosing(_ report: CIReport, colour: Bool) -> String {
        let red = colour ? "\u{1B}[31;1m" : "", yellow = colour ? "\u{1B}[33;1m" : "", reset = colour ? "\u{1B}[0m" : ""
        var lines: [String] = []
        if let error = report.error { lines.append("\(red)dgrun ci: \(error)\(reset)") }
        for task in report.worstFirst where !task.outcome.passed {
            lines.append("\(red)dgrun: \(task.name): \(task.headline)\(reset)")
            for blocker in task.blockers { lines.append("  - \(blocker.ref): \(blocker.why)\n    fix: \(blocker.remedy)") }
            if task.outcome == .failed, !task.logTail.isEmpty {
                lines.append("  last lines of its log:")
                lines += task.logTail.map { "  | " + $0 }
            }
        }
        for layer in report.inactiveLayers {
            lines.append("\(yellow)dgrun: sandbox layer \(layer.name.rawValue) not active: \(layer.detail)\(reset)" + (layer.fix.map { "\n  fix: \($0)" } ?? ""))
        }
        for task in report.tasks where !task.undeclaredInputs.isEmpty || !task.undeclaredOutputs.isEmpty {
            lines.append("\(yellow)dgrun: \(task.name): \(CIText.undeclared(task))\(reset)")
        }
        lines.append("dgrun ci: \(CIText.counts(report)); exit status \(report.exitStatus)")
        return lines.joined(separator: "\n") + "\n"
    }
}

enum CIText {
    static func counts(_ report: CIReport) -> String {
        let parts = CIReport.Outcome.allCases.filter { report.count($0) > 0 }.map { "\(report.count($0)) \($0.rawValue)" }
        return "\(report.tasks.count) task\(report.tasks.count == 1 ? "" : "s")" + (parts.isEmpty ? "" : ": " + parts.joined(separator: ", "))
    }

    static func undeclared(_ task: CIReport.Task) -> String {
        var parts: [String] = []
        func list(_ items: [String]) -> String { items.prefix(10).joined(separator: ", ") + (items.count > 10 ? ", ... (\(items.count))" : "") }
        if !task.undeclaredInputs.isEmpty { parts.append("inputs used but not declared in task.toml: " + list(task.undeclaredInputs)) }
        if !task.undeclaredOutputs.isEmpty { parts.append("outputs written but not declared in task.toml: " + list(task.undeclaredOutputs)) }
        return parts.joined(separator: "; ")
    }

    /// The annotation body of a task that did not pass: why, the fixes, its log's last lines.
    static func problem(_ task: CIReport.Task) -> String {
        var text = task.headline
        for blocker in task.blockers { text += "\n- \(blocker.ref): \(blocker.why)\n  fix: \(blocker.remedy)" }
        if !task.logTail.isEmpty { text += "\n\nlast lines of its log:\n" + task.logTail.joined(separator: "\n") }
        return text
    }

    static func layers(_ report: CIReport) -> String {
        let active = report.layers.filter { $0.state == .active }.map(\.name.rawValue)
        var text = "active: " + (active.isEmpty ? "none" : active.joined(separator: ", "))
        for layer in report.inactiveLayers {
            text += "\nnot active: \(layer.name.rawValue): \(layer.detail)" + (layer.fix.map { " (fix: \($0))" } ?? "")
        }
        return text
    }
}

/// GitHub Actions: ::group:: per task, ::error/::warning annotations, the step summary, outputs.
struct GitHubRenderer: CIRenderer {
    var env: [String: String]

    /// The task's lines between ::stop-commands:: and its token: a sandboxed task's output cannot
    /// issue workflow commands (end the group, mask values, annotate) on the runner.
    func group(_ task: CIReport.Task, body: String) -> String {
        let token = "dgrun-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        return "::group::\(GitHubCommand.escapeData(title(task)))\n::stop-commands::\(token)\n"
            + "\(body)\(body.hasSuffix("\n") || body.isEmpty ? "" : "\n")::\(token)::\n::endgroup::\n"
    }

    /// task.toml relative to the repository (GITHUB_WORKSPACE), which is where GitHub places an annotation.
    func file(_ task: CIReport.Task) -> String {
        let path = task.directory + "/task.toml"
        if let workspace = env["GITHUB_WORKSPACE"], path.hasPrefix(workspace + "/") { return String(path.dropFirst(workspace.count + 1)) }
        return path
    }

    func annotations(_ report: CIReport) -> [String] {
        var lines: [String] = []
        if let error = report.error { lines.append(GitHubCommand.command("error", [("title", "dgrun ci: nothing was started")], error)) }
        for task in report.worstFirst {
            switch task.outcome {
            case .failed:
                lines.append(GitHubCommand.command("error", [("file", file(task)), ("title", "dgrun: \(task.name) failed (exit \(task.exitStatus))")],
                                                   CIText.problem(task)))
            case .blocked:
                lines.append(GitHubCommand.command("error", [("file", file(task)), ("title", "dgrun: \(task.name) blocked")], CIText.problem(task)))
            default: break
            }
        }
        // Confinement is not implemented yet: that alone is a notice (nothing to fix on the
        // runner), any other layer missing a warning.
        let weaker = report.inactiveLayers.contains { $0.name != .confine }
        if weaker {
            lines.append(GitHubCommand.command("warning", [("title", "dgrun: sandbox layers not active")], CIText.layers(report)))
        }
        for task in report.worstFirst where task.outcome == .notStarted {
            lines.append(GitHubCommand.command("warning", [("file", file(task)), ("title", "dgrun: \(task.name) not started")], task.headline))
        }
        for task in report.tasks where !task.undeclaredInputs.isEmpty || !task.undeclaredOutputs.isEmpty {
            lines.append(GitHubCommand.command("warning", [("file", file(task)), ("title", "dgrun: \(task.name): undeclared inputs or outputs")],
                                               CIText.undeclared(task)))
        }
        if !weaker, !report.layers.isEmpty {
            lines.append(GitHubCommand.command("notice", [("title", "dgrun: sandbox layers")], CIText.layers(report)))
        }
        return lines
    }

    func closing(_ report: CIReport) -> String {
        annotations(report).joined(separator: "\n") + "\n" + "dgrun ci: \(CIText.counts(report)); exit status \(report.exitStatus)\n"
    }

    func publish(_ report: CIReport) -> [String] {
        var problems: [String] = []
        if let path = env["GITHUB_STEP_SUMMARY"], !path.isEmpty {
            var st = stat()
            let used = stat(path, &st) == 0 ? Int(st.st_size) : 0
            let text = CIFiles.markdown(report, limit: max(4096, CIFiles.summaryLimit - used - 1024))
            do { try CIFiles.append(path, text + "\n") } catch { problems.append("cannot append the step summary to \(path): \(error)") }
        }
        if let path = env["GITHUB_OUTPUT"], !path.isEmpty {
            do { try CIFiles.append(path, GitHubCommand.outputs(CIFiles.outputs(report))) } catch {
                problems.append("cannot write the step outputs to \(path): \(error)")
            }
        }
        return problems
    }
}

/// GitLab CI: collapsible sections (collapsed for tasks that passed); the dotenv report.
struct GitLabRenderer: CIRenderer {
    var env: [String: String]
    var dotenv: String? { env["DGRUN_DOTENV"].flatMap { $0.isEmpty ? nil : $0 } }

    /// Section names may hold letters, digits, `_`, `.` and `-`.
    static func sectionName(_ task: String) -> String {
        "dgrun_" + String(task.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-") ? $0 : "_" })
    }

    func group(_ task: CIReport.Task, body: String) -> String {
        // Printed when the task is done: the start is back-dated by its run time, so that GitLab
        // shows the section's duration.
        let now = Clock.now()
        let start = Int(now - (task.wallSeconds ?? 0)), end = Int(now)
        let name = Self.sectionName(task.name)
        let collapsed = task.outcome.passed ? "[collapsed=true]" : ""
        return "\u{1B}[0Ksection_start:\(start):\(name)\(collapsed)\r\u{1B}[0K\(title(task))\n\(body)\(body.hasSuffix("\n") || body.isEmpty ? "" : "\n")"
            + "\u{1B}[0Ksection_end:\(end):\(name)\r\u{1B}[0K\n"
    }

    func closing(_ report: CIReport) -> String { plainClosing(report, colour: true) }

    func publish(_ report: CIReport) -> [String] {
        guard let dotenv else { return [] }
        do { try FileSystem.writeAtomically(dotenv, CIFiles.dotenv(report)) } catch { return ["cannot write the dotenv file \(dotenv): \(error)"] }
        return []
    }
}

/// Buildkite: `--- ` groups (collapsed), `+++ ` for a task that did not pass (expanded), and an
/// annotation through buildkite-agent when it is on PATH.
struct BuildkiteRenderer: CIRenderer {
    var env: [String: String]

    func group(_ task: CIReport.Task, body: String) -> String {
        "\(task.outcome.passed ? "---" : "+++") \(title(task))\n\(body)\(body.hasSuffix("\n") || body.isEmpty ? "" : "\n")"
    }

    func closing(_ report: CIReport) -> String { "--- dgrun ci\n" + plainClosing(report, colour: true) }

    func publish(_ report: CIReport) -> [String] {
        guard let agent = CIEnvironment.which("buildkite-agent", path: env["PATH"]) else { return [] }
        let style = report.tasks.contains { $0.outcome == .failed || $0.outcome == .blocked } || report.error != nil ? "error"
            : report.inactiveLayers.isEmpty ? "success" : "warning"
        // Buildkite's annotation body is Markdown, up to 1 MiB.
        let body = CIFiles.markdown(report, limit: CIFiles.summaryLimit - 1024)
        let dir = CIEnvironment.temporaryDirectory(env)
        let file = dir + "/dgrun-annotation-\(getpid()).md"
        do { try FileSystem.writeAtomically(file, body) } catch { return ["cannot write the annotation: \(error)"] }
        defer { unlink(file) }
        do {
            let pid = try Subprocess.spawn([agent, "annotate", "--style", style, "--context", "dgrun"], stdin: file,
                                           stdout: "/dev/null", stderr: "/dev/null")
            let status = Subprocess.wait(pid)
            return status == 0 ? [] : ["buildkite-agent annotate exited with status \(status)"]
        } catch {
            return ["cannot run buildkite-agent annotate: \(error)"]
        }
    }
}

/// Any other CI, or none: a header line per task and the closing lines; the report files only.
struct GenericRenderer: CIRenderer {
    var env: [String: String]

    func group(_ task: CIReport.Task, body: String) -> String {
        "── \(title(task))\n\(body)\(body.hasSuffix("\n") || body.isEmpty ? "" : "\n")"
    }

    func closing(_ report: CIReport) -> String { plainClosing(report, colour: false) }

    func publish(_ report: CIReport) -> [String] { [] }
}

enum CIEnvironment {
    static func current() -> [String: String] {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") { env[String(text[..<eq])] = String(text[text.index(after: eq)...]) }
            p += 1
        }
        return env
    }

    static func which(_ name: String, path: String?) -> String? {
        (path ?? "/usr/bin:/bin").split(separator: ":").map { "\($0)/\(name)" }.first { FileIO.isExecutable($0) }
    }

    /// The runner's temporary directory (RUNNER_TEMP on GitHub), else TMPDIR, else /tmp.
    static func temporaryDirectory(_ env: [String: String]) -> String {
        for key in ["RUNNER_TEMP", "TMPDIR"] { if let dir = env[key], !dir.isEmpty, FileIO.isDirectory(dir) { return dir } }
        return "/tmp"
    }
}
