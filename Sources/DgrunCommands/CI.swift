import DgrunEngine
import DgrunPlanner
import DgrunRuntime
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// `dgrun ci`: exec's planning and running of a task directory or a workspace, with the output of
/// the CI it runs in. Only the rendering differs from `dgrun exec DIR`: the same options, the same
/// engine call; each task's log is kept apart (RunRequest.logDirectory) so that it is shown in one
/// group and its last lines quoted where it failed.
struct CI {
    var exec = Exec()
    var junit: String?
    var json: String?
    var summary: String?
    var dotenv: String?
    /// nil: the default (`CI.defaultRequire`).
    var require: [SandboxLayer.Name]?
    var format: CIFlavour?
    var directory = ""

    /// Without --require, dgrun ci refuses to start without these: without user namespaces no
    /// sandbox starts at all, and without seccomp every task would run unfiltered. A runner
    /// without a delegated cgroup still runs (limits fall back, and the summary says so);
    /// --require limits makes that an error too.
    static let defaultRequire: [SandboxLayer.Name] = [.userns, .seccomp]
    /// Lines of a failed task's log quoted in its annotation and the JUnit failure.
    static let tailLines = 20

    static let verb = VerbSpec<CI>(
        name: "ci",
        usage: "dgrun ci [exec options] [--junit FILE] [--json FILE] [--summary FILE] [--require LAYERS] (TASKDIR | WORKSPACE)",
        abstract: "Run a task or a workspace as a CI step: grouped logs, annotations, summary, JUnit.",
        discussion: """
        The same planning and running as 'dgrun exec TASKDIR|WORKSPACE' (every exec option applies),
        with the output of the CI it runs in, detected from the environment (or --format):
          GitHub Actions (GITHUB_ACTIONS=true): a ::group:: per task's log (inside which the
            task's output cannot issue workflow commands: ::stop-commands::); ::error annotations on
            the task.toml of each task that failed (its exit status and the last lines of its log)
            or was blocked (each missing dependency and its fix); ::warning for sandbox layers not
            active and for inputs or outputs used but not declared; worst first. A Markdown table
            and a Mermaid graph of the workspace appended to $GITHUB_STEP_SUMMARY (kept under 1
            MiB); counts, exit_status, layers_active, layers_inactive and cache_key
            written to $GITHUB_OUTPUT.
          GitLab CI (GITLAB_CI): a collapsible section per task (collapsed when it passed); the same
            outputs as DGRUN_* lines in a dotenv file for artifacts:reports:dotenv ($DGRUN_DOTENV,
            or --dotenv FILE, which any CI gets).
          Buildkite (BUILDKITE=true): '--- ' groups, '+++ ' (expanded) for a task that did not
            pass; the summary as an annotation through buildkite-agent when it is on PATH.
          Any other CI, or none: a header line per task and closing lines.
        Each task's output is shown in one piece when it is done, so that tasks running at once
        never interleave.

        SANDBOX LAYERS: before anything starts, each layer is probed on its own: limits (a cgroup
        of the run's own, to enforce and to measure; without one, limits fall back to rlimits),
        seccomp, userns (user namespaces; AppArmor's restriction on Ubuntu 24.04 is named, with
        its fixes), network (a network namespace), confine (Landlock: not implemented yet, so
        never available). A required layer that is not there is exit 125, naming the layer and
        the fix, and nothing is started or recorded. Required: --require's list (or 'none'),
        else userns,seccomp; plus every layer a task's task.toml names in [ci] require = [...],
        which the command line cannot lower. A layer that is not active is said in the log, an
        annotation and the summary: never silently weaker.

        --junit FILE: one testcase per task (classname: the workspace, name: the task):
        <skipped/> up to date or not started, <failure> failed or blocked (the reason and the
        log's end), <error> when dgrun itself failed, time in seconds, the log in <system-out>.
        --json FILE: the same as JSON (schema dgrun.ci/1). --summary FILE: the Markdown summary.
        Files are written whole (write, then rename).

        EXIT STATUS: 0 when every task is up to date or succeeded. A task directory: exec's (the
        task's own status, 122 blocked, 125 when dgrun failed). A workspace: 1 when a task
        failed, else 122 when a task was blocked or did not start. 125 when a required layer is
        missing or an option or task.toml is bad.

        EXAMPLES:
          dgrun ci --junit junit.xml examples/pipeline
          dgrun ci --require limits,seccomp,userns --json ci.json ./workspace
          DGRUN_DOTENV=dgrun.env dgrun ci --format gitlab --junit junit.xml ./workspace
        """,
        // exec's --report is one run's; a CI step's is --json, every task's.
        options: ciOptions + (Exec.sandboxOptions + Exec.planningOptions).filter { $0.long != "report" }.map(lift))

    static let ciOptions: [OptionSpec<CI>] = [
        .value("junit", "file", "Write a JUnit XML report: one testcase per task.") { $0.junit = FileSystem.absolute($1) },
        .value("json", "file", "Write the summary as JSON (schema dgrun.ci/1).") { $0.json = FileSystem.absolute($1) },
        .value("summary", "file", "Write the Markdown summary (as GitHub's step summary) to this file.") { $0.summary = FileSystem.absolute($1) },
        .value("dotenv", "file", "Write the counts as DGRUN_*= lines (GitLab's dotenv report; under GitLab also $DGRUN_DOTENV).") { $0.dotenv = FileSystem.absolute($1) },
        .value("require", "layers", "Fail (125) before starting unless these are active: limits,seccomp,userns,network,confine or none.") {
            (target: inout CI, text: String) throws(DgrunError) in target.require = try parseLayers(text, option: "--require")
        },
        .value("format", "ci", "The CI's conventions: github, gitlab, buildkite or generic (default: from the environment).") {
            (target: inout CI, text: String) throws(DgrunError) in target.format = try choice(text, option: "format")
        },
    ]

    /// An exec option, applied to the request this verb shares with exec.
    static func lift(_ option: OptionSpec<Exec>) -> OptionSpec<CI> {
        OptionSpec<CI>(long: option.long, short: option.short, valueName: option.valueName, help: option.help) {
            (target: inout CI, value: String) throws(DgrunError) in
            do throws(DgrunError) { try option.apply(&target.exec, value) } catch {
                var error = error
                error.verb = "ci"
                throw error
            }
        }
    }

    static func parseLayers(_ text: String, option: String) throws(DgrunError) -> [SandboxLayer.Name] {
        if text == "none" || text.isEmpty { return [] }
        var names: [SandboxLayer.Name] = []
        for part in text.split(separator: ",") {
            let word = String(part).trimmingCharacters(in: " ")
            guard let name = SandboxLayer.Name(rawValue: word) else {
                throw DgrunError.usage("\(option) \"\(word)\": use a comma-separated list of "
                                       + SandboxLayer.Name.allCases.map(\.rawValue).joined(separator: ", ") + ", or none", verb: "ci")
            }
            if !names.contains(name) { names.append(name) }
        }
        return names
    }

    static func parse(_ args: ArraySlice<String>) throws(DgrunError) -> CI? {
        var ci = CI()
        guard let parsed = try verb.parseOrShowHelp(args, into: &ci) else { return nil }
        guard parsed.command.isEmpty else {
            throw DgrunError.usage("dgrun ci runs a task directory or a workspace, not a command (use dgrun exec -- CMD); usage: \(verb.usage)", verb: "ci")
        }
        guard parsed.positionals.count == 1 else {
            throw DgrunError.usage(parsed.positionals.isEmpty ? "no task directory or workspace given; usage: \(verb.usage)"
                                   : "give one task directory or workspace; usage: \(verb.usage)", verb: "ci")
        }
        ci.directory = parsed.positionals[0]
        try Exec.applyCacheEnvironment(&ci.exec.request.cache)
        return ci
    }

    // MARK: - running

    func run() -> Int32 {
        let env = CIEnvironment.current()
        let renderer = (format ?? CIFlavour.detect(env)).renderer(env)
        let output = CIOutput()
        defer { output.close() }

        // Before anything starts: the task files ([ci] require) and the layers they need.
        let tasks: [TaskFile]
        do throws(DgrunError) { tasks = try Self.taskFiles(directory) } catch {
            return refuse(error, renderer: renderer, output: output, layers: [], required: [])
        }
        var request = exec.request
        let collector = CICollector()
        let live = CILive(renderer: renderer, output: output, collector: collector)
        let engine = Engine.forHost(sink: { event in
            collector.note(event)
            live.render(event)
        })
        let layers = engine.probeLayers(for: request)
        let explicit = Self.union(require ?? [], tasks.flatMap { $0.ciRequire.compactMap(SandboxLayer.Name.init(rawValue:)) })
        let implicit = require == nil ? Self.defaultRequire : []
        let required = Self.union(explicit, implicit)
        // A default requirement is about the runner: one the request itself turned off (--seccomp
        // unconfined) is said, not refused; an explicit one must be active.
        let missing = Engine.missingLayers(explicit, in: layers)
            ?? Engine.missingLayers(implicit, in: layers.filter { $0.state == .unavailable })
        if let missing { return refuse(missing, renderer: renderer, output: output, layers: layers, required: required) }
        for layer in layers where layer.state != .active {
            output.write("dgrun: sandbox layer \(layer.name.rawValue) is not active: \(layer.detail)\n")
        }

        // Each task's log apart, in the runner's temporary directory, removed afterwards.
        let logs = Self.makeLogDirectory(CIEnvironment.temporaryDirectory(env))
        defer { if let logs { Self.removeTree(logs) } }
        request.logDirectory = logs
        request.reportRecords = true

        let result: DirectoryResult
        do throws(DgrunError) { result = try engine.execDirectory(directory, request: request) } catch {
            return refuse(error, renderer: renderer, output: output, layers: layers, required: required)
        }
        let items = collector.tasks(of: result, logTailLines: Self.tailLines)
        // Tasks without an event of their own (dgrun failed for them) are shown now.
        for item in items where !live.shown(item.name) { output.write(renderer.group(item, body: CILive.body(item))) }
        let report = CIReport(name: Self.reportName(result), root: Self.root(result), tasks: items, layers: layers,
                              required: required, exitStatus: Self.exitStatus(result, tasks: items))
        return finish(report, renderer: renderer, output: output, warnings: collector.warnings)
    }

    /// dgrun failed before any task ran (exit 125): said in this CI's way; no state was written.
    func refuse(_ error: DgrunError, renderer: any CIRenderer, output: CIOutput, layers: [SandboxLayer],
                required: [SandboxLayer.Name]) -> Int32 {
        let name = FileIO.realPath(directory).map { String($0.split(separator: "/").last ?? "") } ?? directory
        var report = CIReport(name: name, root: FileIO.realPath(directory) ?? directory, tasks: [], layers: layers,
                              required: required, exitStatus: error.exitStatus)
        report.error = error.message
        return finish(report, renderer: renderer, output: output, warnings: [])
    }

    func finish(_ report: CIReport, renderer: any CIRenderer, output: CIOutput, warnings: [String]) -> Int32 {
        output.write(renderer.closing(report))
        var problems = renderer.publish(report)
        var status = report.exitStatus
        let files: [(String?, () -> String)] = [(junit, { CIFiles.junit(report) }), (json, { CIFiles.json(report) }),
                                                 (summary, { CIFiles.markdown(report) }), (dotenv, { CIFiles.dotenv(report) })]
        for (path, text) in files {
            guard let path else { continue }
            do { try FileSystem.writeAtomically(path, text()) } catch {
                problems.append("cannot write \(path): \(error)")
                if status == 0 { status = 125 }
            }
        }
        for problem in problems { output.write("dgrun: \(problem)\n") }
        return status
    }

    // MARK: - helpers

    /// The task files of a task directory or a workspace, read (and checked) before anything starts.
    static func taskFiles(_ directory: String) throws(DgrunError) -> [TaskFile] {
        guard let root = FileIO.realPath(directory), FileIO.isDirectory(root) else { throw DgrunError("\(directory) is not a directory") }
        if FileIO.exists(root + "/task.toml") { return [try TaskFile.load(directory: root)] }
        var tasks: [TaskFile] = []
        for name in FileIO.listDirectory(root).sorted() where !name.hasPrefix(".") && FileIO.exists(root + "/" + name + "/task.toml") {
            tasks.append(try TaskFile.load(directory: root + "/" + name))
        }
        return tasks
    }

    static func union(_ a: [SandboxLayer.Name], _ b: [SandboxLayer.Name]) -> [SandboxLayer.Name] {
        SandboxLayer.Name.allCases.filter { a.contains($0) || b.contains($0) }
    }

    /// The exit status of the ci contract: a task directory's is exec's; a workspace's is 1 when a
    /// task failed (dgrun's own failure for a task included), else 122 when one was blocked or
    /// did not start, else 0.
    static func exitStatus(_ result: DirectoryResult, tasks: [CIReport.Task]) -> Int32 {
        switch result {
        case .task: return result.exitStatus
        case .workspace:
            if tasks.contains(where: { $0.outcome == .failed }) { return 1 }
            if tasks.contains(where: { $0.outcome == .blocked || $0.outcome == .notStarted }) { return DgrunExit.blocked }
            return 0
        }
    }

    static func root(_ result: DirectoryResult) -> String {
        switch result {
        case .task(let task, _, let upstream): return upstream?.root ?? task.directory
        case .workspace(let workspace): return workspace.root
        }
    }

    /// The JUnit classname: the workspace's directory name (a lone task's own).
    static func reportName(_ result: DirectoryResult) -> String {
        String(root(result).split(separator: "/").last ?? "dgrun")
    }

    static func makeLogDirectory(_ base: String) -> String? {
        var template = Array((base + "/dgrun-ci-logs-XXXXXX").utf8CString)
        return template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) }
    }

    static func removeTree(_ dir: String) {
        for name in FileIO.listDirectory(dir) { unlink(dir + "/" + name) }
        rmdir(dir)
    }
}

/// dgrun ci's own output: duplicates of stdout, taken before any sandbox starts, because the
/// launcher points 1 and 2 at a task's log for the instant of each clone. One write per block, so
/// that blocks of tasks finishing at once never interleave.
final class CIOutput: Sendable {
    private let fd: Int32
    private let lock = Locked(())

    init() {
        let copy = fcntl(1, F_DUPFD_CLOEXEC, 3)
        fd = copy >= 0 ? copy : 1
    }

    func write(_ text: String) {
        lock.withLock { _ in CLI.write(fd, text) }
    }

    /// Copies a file (a task's log) in chunks, under the same lock as `write`.
    func write(_ head: String, file: String?, tail: String) {
        lock.withLock { _ in
            CLI.write(fd, head)
            if let file { CIOutput.copy(file, to: fd) }
            CLI.write(fd, tail)
        }
    }

    static func copy(_ path: String, to out: Int32) {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { return }
        defer { Glibc.close(input) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var last: UInt8 = 10
        while true {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            last = buffer[n - 1]
            CLI.write(out, String(decoding: buffer[0..<n], as: UTF8.self))
        }
        if last != 10 { CLI.write(out, "\n") }
    }

    func close() { if fd != 1 { Glibc.close(fd) } }
}

/// Shows each task as soon as it is done (from the engine's events, on the task's thread).
final class CILive: Sendable {
    let renderer: any CIRenderer
    let output: CIOutput
    let collector: CICollector
    private let done = Locked(Set<String>())

    init(renderer: any CIRenderer, output: CIOutput, collector: CICollector) {
        self.renderer = renderer
        self.output = output
        self.collector = collector
    }

    func shown(_ task: String) -> Bool { done.withLock { $0.contains(task) } }

    func render(_ event: EngineEvent) {
        var item: CIReport.Task
        switch event {
        case .upToDate(let task, let checked, let hashed):
            item = CIReport.Task(name: task, directory: "", outcome: .upToDate, exitStatus: 0)
            item.reasons = ["nothing it used changed (\(checked) dependencies checked, \(hashed) hashed)"]
        case .blocked(let task, let blockers):
            item = CIReport.Task(name: task, directory: "", outcome: .blocked, exitStatus: DgrunExit.blocked)
            item.blockers = blockers
        case .notStarted(let task, let because):
            item = CIReport.Task(name: task, directory: "", outcome: .notStarted, exitStatus: DgrunExit.blocked)
            item.message = because
        case .finished(let task, let outcome):
            item = CICollector.task(name: task, directory: "", .ran(outcome, runID: nil), logTailLines: 0)
            item.reasons = collector.reasons(of: task)
        case .restored(let task, let from, let files, let bytes):
            item = CIReport.Task(name: task, directory: "", outcome: .restored, exitStatus: 0)
            item.reasons = ["restored from the \(from) (\(files) files, \(ByteSize.describe(UInt64(max(0, bytes))))): its action key matched; nothing ran"]
        case .warning(let text):
            output.write(text + "\n")
            return
        case .interrupted(let signal):
            output.write("dgrun: interrupted (signal \(signal)): forwarded to the running tasks; nothing new starts\n")
            return
        case .waitingForLock, .abandonedRuns, .fetched, .waitingForServices, .running, .retryingOOM, .recorded:
            Terminal.render(event, to: { self.output.write($0 + "\n") })
            return
        }
        done.withLock { _ = $0.insert(item.name) }
        // The group: its header lines, then the log copied from its file.
        let marker = "\u{0}LOG\u{0}"
        let text = renderer.group(item, body: Self.body(item, logMarker: item.log == nil ? nil : marker))
        if let log = item.log, let range = text.firstRange(of: marker + "\n") {
            output.write(String(text[..<range.lowerBound]), file: log, tail: String(text[range.upperBound...]))
        } else {
            output.write(text)
        }
    }

    /// A task's lines inside its group: how it ended and why; the log (or where it goes).
    static func body(_ item: CIReport.Task, logMarker: String? = nil) -> String {
        var text = ""
        if !item.reasons.isEmpty { text += "dgrun: \(item.name): \(item.outcome == .upToDate ? "" : "ran because: ")" + item.reasons.prefix(5).joined(separator: "; ") + "\n" }
        for blocker in item.blockers { text += "dgrun: \(item.name): blocked: \(blocker.ref): \(blocker.why)\n  fix: \(blocker.remedy)\n" }
        if let message = item.message { text += "dgrun: \(item.name): \(message)\n" }
        if let logMarker { text += logMarker + "\n" }
        // After a long log, how it ended is said again where the reader is.
        if item.outcome == .failed { text += "dgrun: \(item.name): \(item.headline)\n" }
        return text
    }
}
