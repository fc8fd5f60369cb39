import DgrunSystem

/// The interpreter line of a script: `#!/bin/sh -e`, `#!/usr/bin/env python3`, `#!/usr/bin/env -S node --x`.
public struct Shebang: Sendable, Equatable {
    /// The path after #! (the kernel's interpreter).
    public var interpreter: String
    /// The one argument the kernel passes (everything after the first blank), if any.
    public var argument: String?
    /// For /usr/bin/env: the program it runs (looked up on PATH), else nil.
    public var envProgram: String?

    /// Parses the first line (the kernel reads at most 256 bytes of it). nil when there is none.
    public static func parse(_ head: [UInt8]) -> Shebang? {
        guard head.count > 2, head[0] == UInt8(ascii: "#"), head[1] == UInt8(ascii: "!") else { return nil }
        let lineEnd = head.firstIndex(of: UInt8(ascii: "\n")) ?? min(head.count, 256)
        let line = String(decoding: head[2..<min(lineEnd, 256)], as: UTF8.self)
            .trimmingCharacters(in: " \t\r")
        guard !line.isEmpty else { return nil }
        let blank = line.firstIndex(where: { $0 == " " || $0 == "\t" })
        let interpreter = String(line[..<(blank ?? line.endIndex)])
        let argument = blank.map { String(line[$0...]).trimmingCharacters(in: " \t") }.flatMap { $0.isEmpty ? nil : $0 }
        var shebang = Shebang(interpreter: interpreter, argument: argument, envProgram: nil)
        if interpreter.hasSuffix("/env"), let argument {
            // env's own options (-S splits the rest; -i, -u NAME, NAME=VALUE) come before the program.
            var words = argument.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            while let word = words.first, word.hasPrefix("-") || word.contains("=") {
                words.removeFirst()
                if word == "-u", !words.isEmpty { words.removeFirst() }
            }
            shebang.envProgram = words.first
        }
        return shebang
    }

    public static func read(path: String) -> Shebang? {
        guard let head = try? FileIO.readBytes(path, limit: 256) else { return nil }
        return parse(head)
    }

    /// The program env would run, found on `searchPath` as execvp would; nil when absent.
    public static func resolve(program: String, searchPath: String) -> String? {
        if program.contains("/") { return FileIO.realPath(program) }
        for dir in searchPath.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if FileIO.isExecutable(candidate), let real = FileIO.realPath(candidate) { return real }
        }
        return nil
    }
}
