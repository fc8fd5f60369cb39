import DgrunSystem

/// What a script's text names: the commands a shell script runs, and literal paths, URLs and
/// host:port endpoints in any script. Heuristic by nature (no shell is run): a candidate found here
/// carries `static:*` evidence, and the traced run confirms it or it stays static-only.
public enum ScriptScanner {
    static let keywords: Set<String> = [
        "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac", "in",
        "function", "select", "time", "!", "{", "}", "[[", "]]",
    ]
    static let builtins: Set<String> = [
        "cd", "echo", "printf", "test", "[", "export", "set", "unset", "read", "local", "return", "exit",
        "shift", "eval", "exec", ".", "source", "true", "false", "trap", "wait", "command", "type",
        "alias", "umask", "ulimit", "declare", "typeset", "readonly", "getopts", "break", "continue", ":",
        "pwd", "kill", "jobs", "fg", "bg", "hash", "let", "shopt",
    ]

    /// The first word of every simple command, without keywords, builtins and assignments.
    public static func commands(inShellScript text: String) -> [String] {
        var found: [String] = []
        var seen: Set<String> = []  // beside the ordered list: a 1 MB script of distinct words was quadratic (FuzzScript)
        for rawLine in text.split(separator: "\n") {
            let line = stripComment(String(rawLine))
            var segment = ""
            func flush() {
                let words = segment.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
                segment = ""
                for word in words {
                    if word.contains("=") && !word.hasPrefix("=") { continue }  // VAR=value prefix
                    if word == "for" || word == "select" || word == "case" { break }  // names, not commands
                    if keywords.contains(word) { continue }
                    if !builtins.contains(word), isPlainWord(word), seen.insert(word).inserted { found.append(word) }
                    break
                }
            }
            for c in line {
                if ";|&()`".contains(c) { flush() } else { segment.append(c) }
            }
            flush()
        }
        return found
    }

    /// A command name dgrun can look up: no expansions, quotes or redirections.
    static func isPlainWord(_ word: String) -> Bool {
        !word.isEmpty && word.allSatisfy { $0.isLetter || $0.isNumber || "._-+/".contains($0) }
    }

    /// Drops a # comment that starts a word (outside quotes, roughly).
    static func stripComment(_ line: String) -> String {
        var out = ""
        var quote: Character?
        var previous: Character = " "
        for c in line {
            if let q = quote { if c == q { quote = nil } }
            else if c == "'" || c == "\"" { quote = c }
            else if c == "#" && (previous == " " || previous == "\t") { break }
            out.append(c)
            previous = c
        }
        return out
    }

    public struct Literals: Sendable, Equatable {
        public var paths: [String] = []
        public var urls: [String] = []
        public var endpoints: [String] = []  // host:port
    }

    /// Absolute paths (kept when they exist), URLs, and host:port pairs named in the text.
    public static func literals(in text: String, pathExists: (String) -> Bool = FileIO.exists) -> Literals {
        var result = Literals()
        var seen: Set<String> = []  // every kept token, so that dedupe is not a scan of the lists
        let separators: Set<Character> = [" ", "\t", "\n", "\"", "'", "(", ")", "[", "]", "{", "}", ",", ";", "<", ">", "`", "|"]
        for whole in text.split(whereSeparator: { separators.contains($0) }).map(String.init) {
            // `x=/etc/conf` names a path after its =; a URL keeps its query string whole.
            let token = whole.contains("://") ? whole : String(whole.split(separator: "=", omittingEmptySubsequences: false).last ?? "")
            if let scheme = token.firstRange(of: "://"), ["http", "https", "ftp", "s3", "git", "ssh"].contains(String(token[..<scheme.lowerBound])) {
                if seen.insert(token).inserted { result.urls.append(token) }
            } else if token.hasPrefix("/"), token.count > 1, token.allSatisfy({ $0.isLetter || $0.isNumber || "._-+/@".contains($0) }) {
                let path = token.hasSuffix("/") && token.count > 1 ? String(token.dropLast()) : token
                if seen.insert(path).inserted, pathExists(path) { result.paths.append(path) }
            } else if let endpoint = endpoint(token), seen.insert(endpoint).inserted {
                result.endpoints.append(endpoint)
            }
        }
        return result
    }

    /// `host:port` with a dotted host or `localhost`, and a port from 1 to 65535.
    static func endpoint(_ token: String) -> String? {
        let parts = token.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port) else { return nil }
        let host = parts[0]
        guard !host.isEmpty, host == "localhost" || (host.contains(".") && !host.hasPrefix(".") && !host.hasSuffix(".")),
              host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" }) else { return nil }
        return "\(host):\(port)"
    }
}
