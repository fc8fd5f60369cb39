import DgrunRuntime
import DgrunSpec
import DgrunSystem
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// GitHub Actions workflow commands (`::error file=F,title=T::message`), escaped as the runner
/// unescapes them (actions/toolkit's command.ts): in the message `%`, CR and LF; in a property
/// also `:` and `,`, which would otherwise end the property.
enum GitHubCommand {
    static func escapeData(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "%": out += "%25"
            case "\r": out += "%0D"
            case "\n": out += "%0A"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    static func escapeProperty(_ text: String) -> String {
        var out = ""
        for c in escapeData(text).unicodeScalars {
            switch c {
            case ":": out += "%3A"
            case ",": out += "%2C"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    static func command(_ name: String, _ properties: [(String, String)] = [], _ message: String) -> String {
        let props = properties.map { "\($0.0)=\(escapeProperty($0.1))" }.joined(separator: ",")
        return "::\(name)\(props.isEmpty ? "" : " " + props)::\(escapeData(message))"
    }

    /// `$GITHUB_OUTPUT` lines: `name=value`, or the heredoc form `name<<DELIM` for a value with a
    /// line break, with a delimiter that does not occur in the value.
    static func outputs(_ pairs: [(String, String)]) -> String {
        var text = ""
        for (name, value) in pairs {
            if value.contains("\n") || value.contains("\r") {
                var delimiter = "ghadelimiter_dgrun"
                while value.contains(delimiter) { delimiter += "_" + String(UInt32.random(in: 0...UInt32.max), radix: 16) }
                text += "\(name)<<\(delimiter)\n\(value)\n\(delimiter)\n"
            } else {
                text += "\(name)=\(value)\n"
            }
        }
        return text
    }
}

/// Text for reports: control characters that XML 1.0 forbids (a log's colour codes) made visible.
enum ReportText {
    /// ANSI escape sequences (CSI ... final byte) removed: colours mean nothing in a report.
    static func stripANSI(_ text: String) -> String {
        guard text.unicodeScalars.contains("\u{1B}") else { return text }
        var out = String.UnicodeScalarView()
        var scalars = text.unicodeScalars.makeIterator()
        while let c = scalars.next() {
            guard c == "\u{1B}" else { out.append(c); continue }
            guard let next = scalars.next() else { break }
            if next == "[" {
                while let p = scalars.next(), !(0x40...0x7E).contains(p.value) {}
            }
        }
        return String(out)
    }

    static func xml(_ text: String, attribute: Bool = false) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in stripANSI(text).unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"" where attribute: out += "&quot;"
            case "\n" where attribute: out += "&#10;"
            case "\r": out += "&#13;"
            case "\t" where attribute: out += "&#9;"
            case "\t", "\n": out.unicodeScalars.append(c)
            default:
                let v = c.value
                let allowed = (0x20...0xD7FF).contains(v) || (0xE000...0xFFFD).contains(v) || v >= 0x10000
                if allowed { out.unicodeScalars.append(c) } else { out += "\u{FFFD}" }
            }
        }
        return out
    }

    /// A Markdown table cell: one line, pipes and HTML escaped, at most `limit` characters.
    static func cell(_ text: String, limit: Int = 300) -> String {
        var line = stripANSI(text).replacingNewlines()
        if line.count > limit { line = String(line.prefix(limit - 1)) + "…" }
        return line.replacing("&", with: "&amp;").replacing("<", with: "&lt;").replacing(">", with: "&gt;")
            .replacing("|", with: "\\|")
    }

    static func seconds(_ value: Double?) -> String {
        guard let value else { return "" }
        return value < 10 ? value.fixed(2) + " s" : value < 600 ? value.fixed(1) + " s" : DurationText.describe(value)
    }

    /// 2026-12-01T08:44:05 (UTC), as JUnit's timestamp.
    static func timestamp(_ seconds: Double) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    }
}

extension String {
    func replacingNewlines() -> String {
        String(unicodeScalars.map { $0 == "\n" || $0 == "\r" ? " " : Character($0) })
    }
}

/// The report files of any CI: JUnit XML, the JSON summary, the Markdown step summary.
enum CIFiles {
    // MARK: - JUnit

    /// How much of a task's log goes into its `<system-out>`: the end, where a failure is.
    static let systemOutBytes = 64 << 10

    /// One testcase per task (classname: the workspace, name: the task), in the subset of the
    /// Ant/Jenkins schema that Jenkins, GitLab and GitHub's test-report actions all read:
    /// `<skipped>` for up to date (and not started), `<failure>` for failed or blocked,
    /// `<error>` for dgrun's own failure, `time` in seconds, the log in `<system-out>`.
    static func junit(_ report: CIReport, now: Double = Clock.now(), hostname: String = CIFiles.hostname()) -> String {
        let failures = report.tasks.filter { ($0.outcome == .failed && $0.wallSeconds != nil) || $0.outcome == .blocked }.count
        let errors = report.tasks.filter { $0.outcome == .failed && $0.wallSeconds == nil }.count
        let skipped = report.tasks.filter { $0.outcome == .upToDate || $0.outcome == .notStarted }.count
        let total = report.tasks.reduce(0.0) { $0 + ($1.wallSeconds ?? 0) }
        let suite = ReportText.xml(report.name, attribute: true)
        let counts = "tests=\"\(report.tasks.count)\" failures=\"\(failures)\" errors=\"\(errors)\" skipped=\"\(skipped)\" time=\"\(total.fixed(3))\""
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        // Jenkins' schema has no `skipped` on <testsuites>: the suite carries it.
        xml += "<testsuites name=\"dgrun ci\" tests=\"\(report.tasks.count)\" failures=\"\(failures)\" errors=\"\(errors)\" time=\"\(total.fixed(3))\">\n"
        xml += "  <testsuite name=\"\(suite)\" \(counts) timestamp=\"\(ReportText.timestamp(now))\" hostname=\"\(ReportText.xml(hostname, attribute: true))\">\n"
        if !report.layers.isEmpty {
            xml += "    <properties>\n"
            for layer in report.layers {
                xml += "      <property name=\"dgrun.layer.\(layer.name.rawValue)\" value=\"\(ReportText.xml(layer.state.rawValue + ": " + layer.detail, attribute: true))\"/>\n"
            }
            xml += "    </properties>\n"
        }
        for task in report.tasks {
            xml += "    <testcase classname=\"\(suite)\" name=\"\(ReportText.xml(task.name, attribute: true))\" time=\"\((task.wallSeconds ?? 0).fixed(3))\">\n"
            let message = ReportText.xml(task.headline, attribute: true)
            switch task.outcome {
            case .upToDate, .restored, .notStarted:
                xml += "      <skipped message=\"\(message)\"/>\n"
            case .ran:
                break
            case .blocked:
                let body = task.blockers.map { "\($0.ref): \($0.why)\n  fix: \($0.remedy)" }.joined(separator: "\n")
                xml += "      <failure message=\"\(message)\" type=\"blocked\">\(ReportText.xml(body))</failure>\n"
            case .failed:
                let element = task.wallSeconds == nil ? "error" : "failure"
                var body = task.headline
                if !task.logTail.isEmpty { body += "\n\nlast lines of the log:\n" + task.logTail.joined(separator: "\n") }
                xml += "      <\(element) message=\"\(message)\" type=\"exit \(task.exitStatus)\">\(ReportText.xml(body))</\(element)>\n"
            }
            let out = systemOut(task)
            if !out.isEmpty { xml += "      <system-out>\(ReportText.xml(out))</system-out>\n" }
            xml += "    </testcase>\n"
        }
        xml += "  </testsuite>\n</testsuites>\n"
        return xml
    }

    static func systemOut(_ task: CIReport.Task) -> String {
        var text = task.why.isEmpty ? "" : "dgrun: \(task.name) (\(task.outcome.rawValue)): \(task.why)\n"
        if let log = task.log, let bytes = LogTail.tail(of: log, bytes: systemOutBytes) {
            var st = stat()
            let size = stat(log, &st) == 0 ? Int(st.st_size) : bytes.count
            if size > bytes.count { text += "[... the first \(size - bytes.count) bytes of the log are left out ...]\n" }
            text += String(decoding: bytes, as: UTF8.self)
        }
        return text
    }

    static func hostname() -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        let ok = buffer.withUnsafeMutableBytes { gethostname($0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count - 1) } == 0
        return ok ? String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self) : "localhost"
    }

    // MARK: - JSON

    struct JSONSummary: Encodable {
        var schema = "dgrun.ci/1"
        var workspace: String
        var root: String
        var exit_status: Int32
        var error: String?
        var counts: [String: Int]
        var cache_key: String
        var required: [String]
        var layers: [Layer]
        var tasks: [Task]
        struct Layer: Encodable { var name: String; var state: String; var detail: String; var fix: String? }
        struct Blocker: Encodable { var ref: String; var why: String; var remedy: String }
        struct Task: Encodable {
            var name: String
            var dir: String
            var outcome: String
            var exit_status: Int32
            var why: [String]
            var message: String?
            var blockers: [Blocker]
            var wall_s: Double?
            var cpu_s: Double?
            var memory_peak_bytes: UInt64?
            var limit_changes: [String]
            var undeclared_inputs: [String]
            var undeclared_outputs: [String]
            var producers: [String]
            var log_tail: [String]
        }
    }

    static func counts(_ report: CIReport) -> [String: Int] {
        var counts = ["tasks": report.tasks.count]
        for outcome in CIReport.Outcome.allCases { counts[outcome.rawValue.replacing(" ", with: "_")] = report.count(outcome) }
        return counts
    }

    static func json(_ report: CIReport) -> String {
        let summary = JSONSummary(
            workspace: report.name, root: report.root, exit_status: report.exitStatus, error: report.error, counts: counts(report),
            cache_key: report.cacheKey, required: report.required.map(\.rawValue),
            layers: report.layers.map { .init(name: $0.name.rawValue, state: $0.state.rawValue, detail: $0.detail, fix: $0.fix) },
            tasks: report.tasks.map { task in
                .init(name: task.name, dir: task.directory, outcome: task.outcome.rawValue, exit_status: task.exitStatus,
                      why: task.reasons, message: task.message,
                      blockers: task.blockers.map { .init(ref: $0.ref, why: $0.why, remedy: $0.remedy) },
                      wall_s: task.wallSeconds, cpu_s: task.cpuSeconds, memory_peak_bytes: task.memoryPeakBytes,
                      limit_changes: task.limitChanges, undeclared_inputs: task.undeclaredInputs,
                      undeclared_outputs: task.undeclaredOutputs, producers: task.producers, log_tail: task.logTail)
            })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return ((try? encoder.encode(summary)).map { String(decoding: $0, as: UTF8.self) } ?? "{}") + "\n"
    }

    // MARK: - Markdown step summary

    /// GitHub refuses a step summary over 1 MiB; this stays below it with room for what the step
    /// already wrote.
    static let summaryLimit = 1 << 20
    /// GitHub renders a Mermaid block of up to 50,000 characters.
    static let mermaidLimit = 50_000

    static func emoji(_ outcome: CIReport.Outcome) -> String {
        switch outcome {
        case .failed: return "❌"
        case .blocked: return "⛔"
        case .notStarted: return "⏸️"
        case .ran: return "✅"
        case .restored: return "♻️"
        case .upToDate: return "✔️"
        }
    }

    /// The Markdown summary: counts, the sandbox layers, one row per task (worst first), a Mermaid
    /// picture of the workspace; at most `limit` bytes (UTF-8), rows left out with a note.
    static func markdown(_ report: CIReport, limit: Int = summaryLimit) -> String {
        var head = "## dgrun ci: \(ReportText.cell(report.name))\n\n"
        if let error = report.error {
            head += "**dgrun failed before starting anything (exit \(report.exitStatus)):**\n\n```\n\(error)\n```\n\n"
        }
        let parts = CIReport.Outcome.allCases.filter { report.count($0) > 0 }.map { "\(report.count($0)) \($0.rawValue)" }
        head += "**\(report.tasks.count) task\(report.tasks.count == 1 ? "" : "s")**" + (parts.isEmpty ? "" : ": " + parts.joined(separator: ", "))
            + " · exit status \(report.exitStatus)\n\n"
        if !report.layers.isEmpty {
            head += "**Sandbox layers:** " + report.layers.map { layer in
                let mark = layer.state == .active ? "✅" : "⚠️"
                let required = report.required.contains(layer.name) ? " (required)" : ""
                return "\(mark) \(layer.name.rawValue)\(required)" + (layer.state == .active ? "" : " — \(layer.state == .off ? "off" : "not active")")
            }.joined(separator: " · ") + "\n\n"
            let inactive = report.inactiveLayers
            if !inactive.isEmpty {
                head += inactive.map { "- **\($0.name.rawValue)** not active: \(ReportText.cell($0.detail, limit: 600))" + ($0.fix.map { " — fix: \(ReportText.cell($0, limit: 600))" } ?? "") }
                    .joined(separator: "\n") + "\n\n"
            }
        }
        var table = "| Task | Outcome | Why | Wall | CPU | Peak memory | Limit changes |\n|---|---|---|---|---|---|---|\n"
        let mermaid = self.mermaid(report)
        let graph = mermaid.count <= mermaidLimit
            ? "\n<details><summary>Workspace graph</summary>\n\n```mermaid\n\(mermaid)```\n\n</details>\n"
            : "\n_The workspace graph (\(report.tasks.count) tasks) is left out: GitHub renders Mermaid up to \(mermaidLimit) characters._\n"
        // What must fit besides the rows: the head, the graph (dropped first if need be) and the note.
        let note = { (left: Int) in "\n_… and \(left) more task\(left == 1 ? "" : "s") left out to keep this summary under GitHub's 1 MiB limit; every task is in the JSON summary (`--json FILE`) and JUnit file._\n" }
        let reserve = note(report.tasks.count).utf8.count + 16
        var budget = limit - head.utf8.count - table.utf8.count - reserve
        var includeGraph = graph.utf8.count <= budget / 2
        if includeGraph { budget -= graph.utf8.count }
        var shown = 0
        for task in report.worstFirst {
            let memory = task.memoryPeakBytes.map { ByteSize.describe($0) } ?? ""
            let changes = task.limitChanges.isEmpty ? "" : "\(task.limitChanges.count): " + task.limitChanges.prefix(3).joined(separator: ", ")
            let row = "| \(ReportText.cell(task.name, limit: 120)) | \(emoji(task.outcome)) \(outcomeText(task)) | \(ReportText.cell(task.why)) | "
                + "\(ReportText.seconds(task.wallSeconds)) | \(ReportText.seconds(task.cpuSeconds)) | \(memory) | \(ReportText.cell(changes, limit: 200)) |\n"
            if row.utf8.count > budget { break }
            budget -= row.utf8.count
            table += row
            shown += 1
        }
        if shown < report.tasks.count, !includeGraph { includeGraph = false }
        var text = head + table
        if shown < report.tasks.count { text += note(report.tasks.count - shown) }
        if includeGraph { text += graph }
        return text
    }

    static func outcomeText(_ task: CIReport.Task) -> String {
        switch task.outcome {
        case .failed: return task.wallSeconds == nil ? "failed (dgrun, exit \(task.exitStatus))" : "failed (exit \(task.exitStatus))"
        default: return task.outcome.rawValue
        }
    }

    /// `graph LR` of the tasks, producer → consumer, each coloured by its outcome.
    static func mermaid(_ report: CIReport) -> String {
        var ids: [String: String] = [:]
        for (i, task) in report.tasks.enumerated() { ids[task.name] = "t\(i)" }
        var text = "graph LR\n"
        for (i, task) in report.tasks.enumerated() {
            let label = "\(task.name): \(task.outcome.rawValue)".replacing("\"", with: "#quot;")
            text += "  t\(i)[\"\(label)\"]:::\(task.outcome.rawValue.replacing(" ", with: ""))\n"
        }
        for task in report.tasks {
            for producer in task.producers { if let from = ids[producer], let to = ids[task.name] { text += "  \(from) --> \(to)\n" } }
        }
        text += """
          classDef failed fill:#ffd6d6,stroke:#c00
          classDef blocked fill:#ffe8c2,stroke:#c60
          classDef notstarted fill:#eee,stroke:#999
          classDef ran fill:#d6f5d6,stroke:#090
          classDef restored fill:#d6ecff,stroke:#06c
          classDef uptodate fill:#f0fff0,stroke:#6a6

        """
        return text
    }

    // MARK: - outputs

    /// Counts, the exit status, the layers and the cache key, for later steps.
    static func outputs(_ report: CIReport) -> [(String, String)] {
        var pairs: [(String, String)] = [("tasks", String(report.tasks.count))]
        for outcome in CIReport.Outcome.allCases { pairs.append((outcome.rawValue.replacing(" ", with: "_"), String(report.count(outcome)))) }
        pairs.append(("exit_status", String(report.exitStatus)))
        pairs.append(("layers_active", report.layers.filter { $0.state == .active }.map(\.name.rawValue).joined(separator: ",")))
        pairs.append(("layers_inactive", report.inactiveLayers.map(\.name.rawValue).joined(separator: ",")))
        pairs.append(("cache_key", report.cacheKey))
        return pairs
    }

    /// A GitLab dotenv report (`artifacts:reports:dotenv`): DGRUN_* = the same outputs, one per line.
    static func dotenv(_ report: CIReport) -> String {
        outputs(report).map { "DGRUN_\($0.0.uppercased())=\($0.1.replacingNewlines())" }.joined(separator: "\n") + "\n"
    }

    /// Appends to a file the CI gave (GITHUB_STEP_SUMMARY, GITHUB_OUTPUT), as its runner expects.
    static func append(_ path: String, _ text: String) throws(SystemError) {
        let fd = try valueOrErrno("open", path: path) { open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = try valueOrErrno("write", path: path) { bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) } }
            done += n
        }
    }
}
