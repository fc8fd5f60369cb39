import DgrunSystem

/// A small table-driven command-line parser. dgrun's start-up is part of what it sells: with two
/// dozen options, swift-argument-parser's reflection cost about 3.5 ms per run (65% of the
/// instructions of `dgrun exec -- /bin/true`), more than the whole of bubblewrap. One table per verb
/// gives both the parser and its --help, so nothing is declared twice.
struct OptionSpec<Target>: Sendable {
    var long: String
    var short: Character?
    /// nil: a flag without a value.
    var valueName: String?
    var help: String
    var apply: @Sendable (inout Target, String) throws(DgrunError) -> Void

    static func value(_ long: String, short: Character? = nil, _ valueName: String, _ help: String,
                      _ apply: @escaping @Sendable (inout Target, String) throws(DgrunError) -> Void) -> OptionSpec {
        OptionSpec(long: long, short: short, valueName: valueName, help: help, apply: apply)
    }

    static func flag(_ long: String, _ help: String, _ apply: @escaping @Sendable (inout Target) -> Void) -> OptionSpec {
        OptionSpec(long: long, short: nil, valueName: nil, help: help, apply: { target, _ in apply(&target) })
    }
}

struct VerbSpec<Target>: Sendable {
    var name: String
    var usage: String
    var abstract: String
    var discussion: String
    var options: [OptionSpec<Target>]

    /// Parses options up to `--` (or the first positional); returns positionals and what follows `--`.
    func parse(_ args: ArraySlice<String>, into target: inout Target) throws(DgrunError)
        -> (positionals: [String], command: [String], help: Bool) {
        var positionals: [String] = []
        var index = args.startIndex
        while index < args.endIndex {
            let arg = args[index]
            index += 1
            if arg == "--" { return (positionals, Array(args[index...]), false) }
            if arg == "--help" || arg == "-h" { return (positionals, [], true) }
            guard arg.hasPrefix("-"), arg.count > 1 else {
                positionals.append(arg)
                continue
            }
            var name = arg
            var inlineValue: String?
            if arg.hasPrefix("--"), let eq = arg.firstIndex(of: "=") {
                name = String(arg[..<eq])
                inlineValue = String(arg[arg.index(after: eq)...])
            }
            guard let option = find(name) else {
                throw DgrunError.usage("unknown option '\(name)'" + suggestion(for: name), verb: self.name)
            }
            if option.valueName == nil {
                if inlineValue != nil { throw DgrunError.usage("option '--\(option.long)' takes no value", verb: self.name) }
                try Self.apply(option, &target, "", verb: self.name)
                continue
            }
            if inlineValue == nil {
                guard index < args.endIndex else {
                    throw DgrunError.usage("option '--\(option.long)' needs a value (<\(option.valueName!)>)", verb: self.name)
                }
                inlineValue = args[index]
                index += 1
            }
            try Self.apply(option, &target, inlineValue!, verb: self.name)
        }
        return (positionals, [], false)
    }

    /// An option's own error is a usage error of this verb (exit 125, pointing at its --help).
    static func apply(_ option: OptionSpec<Target>, _ target: inout Target, _ value: String, verb: String) throws(DgrunError) {
        do throws(DgrunError) { try option.apply(&target, value) } catch {
            var error = error
            error.code = .usage
            if error.verb == nil { error.verb = verb }
            throw error
        }
    }

    /// parse, except that --help prints this verb's help and gives nil.
    func parseOrShowHelp(_ args: ArraySlice<String>, into target: inout Target) throws(DgrunError)
        -> (positionals: [String], command: [String])? {
        let parsed = try parse(args, into: &target)
        if parsed.help {
            CLI.write(1, help)
            return nil
        }
        return (parsed.positionals, parsed.command)
    }

    private func find(_ name: String) -> OptionSpec<Target>? {
        if name.hasPrefix("--") { return options.first { "--" + $0.long == name } }
        if name.count == 2, let c = name.last { return options.first { $0.short == c } }
        return nil
    }

    private func suggestion(for name: String) -> String {
        let bare = name.drop { $0 == "-" }
        let best = options.min { editDistance($0.long, bare) < editDistance($1.long, bare) }
        guard let best, editDistance(best.long, bare) <= max(2, bare.count / 3) else { return "" }
        return "; did you mean '--\(best.long)'?"
    }

    var help: String {
        var text = "OVERVIEW: \(abstract)\n\nUSAGE: \(usage)\n\nOPTIONS:\n"
        let rows = options.map { option -> (String, String) in
            var left = option.short.map { "-\($0), " } ?? ""
            left += "--\(option.long)"
            if let value = option.valueName { left += " <\(value)>" }
            return (left, option.help)
        } + [("-h, --help", "Show this help.")]
        let width = min(30, rows.map(\.0.count).max() ?? 0)
        for (left, right) in rows {
            let pad = left.count < width ? String(repeating: " ", count: width - left.count) : "\n" + String(repeating: " ", count: width + 2)
            text += "  \(left)\(pad)  \(right)\n"
        }
        if !discussion.isEmpty { text += "\n" + discussion + "\n" }
        return text
    }
}

func editDistance(_ a: some StringProtocol, _ b: some StringProtocol) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    var row = Array(0...b.count)
    for i in 1...a.count {
        var previous = row[0]
        row[0] = i
        for j in stride(from: 1, through: b.count, by: 1) {
            let saved = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
            previous = saved
        }
    }
    return row[b.count]
}

/// Parses one of a fixed set of words (--net none|host), naming the allowed ones on error.
func choice<T: RawRepresentable & CaseIterable>(_ text: String, option: String) throws(DgrunError) -> T where T.RawValue == String {
    guard let value = T(rawValue: text) else {
        let allowed = T.allCases.map(\.rawValue).joined(separator: ", ")
        throw DgrunError.usage("--\(option) \"\(text)\": use one of \(allowed)")
    }
    return value
}
