import DgrunSystem

/// The modules a Python script imports, and where the interpreter would find them. No Python runs:
/// `import a.b, c as d` and `from a.b import c` statements are read from the text (relative
/// imports from the script's package too), and resolved the way the import system searches the
/// script's directory and the interpreter's library, lib-dynload and site-packages.
public enum PythonImports {
    /// Dotted module names, in order of first appearance (`from a import b` gives `a` and `a.b`:
    /// b may be a submodule).
    public static func modules(in text: String) -> [String] {
        var found: [String] = []
        var seen: Set<String> = []
        func add(_ name: String) { if !name.isEmpty, seen.insert(name).inserted { found.append(name) } }
        // A parenthesised or continued import list goes on over lines: its parts are kept apart and
        // joined once it ends (re-scanning the joined text at each line was quadratic: FuzzPython).
        var pending: [String] = []
        var pendingOpen = false, pendingClose = false
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let own = String(raw.prefix { $0 != "#" })
            let open = pendingOpen || own.contains("("), close = pendingClose || own.contains(")")
            if (open && !close) || own.hasSuffix("\\") {
                pending.append(own.replacing("\\", with: " "))
                (pendingOpen, pendingClose) = (open, close)
                continue
            }
            let line = pending.isEmpty ? own : (pending + [own]).joined(separator: " ")
            pending = []
            (pendingOpen, pendingClose) = (false, false)
            let trimmed = line.trimmingCharacters(in: " \t")
            let words = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "," || $0 == "(" || $0 == ")" })
                .map(String.init)
            guard let first = words.first else { continue }
            if first == "import" {
                var skip = false
                for word in words.dropFirst() {
                    if skip { skip = false; continue }
                    if word == "as" { skip = true; continue }
                    if isDotted(word) { add(word) }
                }
            } else if first == "from", words.count >= 4, words[2] == "import" {
                let base = words[1]
                let name = String(base.drop { $0 == "." })  // `from . import x`, `from ..a import b`
                guard name.isEmpty ? base.first == "." : isDotted(name) else { continue }
                add(base)
                var skip = false
                for word in words.dropFirst(3) {
                    if skip { skip = false; continue }
                    if word == "as" { skip = true; continue }
                    if word != "*", isDotted(word) { add(base.hasSuffix(".") ? base + word : base + "." + word) }
                }
            }
        }
        return found
    }

    static func isDotted(_ name: String) -> Bool {
        !name.isEmpty && name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { part in
            guard let c = part.first, c.isLetter || c == "_" else { return false }
            return part.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" }
        }
    }

    /// Where an interpreter at `interpreter` (canonical path) looks for modules, after the
    /// script's own directory: PREFIX/lib/pythonX.Y (and lib-dynload, site-packages), and
    /// Debian's dist-packages for the system python.
    public static func searchPath(interpreter: String, scriptDirectory: String) -> [String] {
        var dirs = [scriptDirectory]
        let bin = String(interpreter[..<(interpreter.lastIndex(of: "/") ?? interpreter.startIndex)])
        let prefix = String(bin[..<(bin.lastIndex(of: "/") ?? bin.startIndex)])
        let name = String(interpreter.split(separator: "/").last ?? "")
        var versions = [String]()
        if name.hasPrefix("python"), name.count > 6 { versions.append(String(name.dropFirst(6))) }
        for entry in FileIO.listDirectory(prefix + "/lib") where entry.hasPrefix("python3") { versions.append(String(entry.dropFirst(6))) }
        for version in versions where !version.isEmpty {
            let lib = prefix + "/lib/python" + version
            for dir in [lib, lib + "/lib-dynload", lib + "/site-packages", lib + "/dist-packages"]
            where FileIO.isDirectory(dir) && !dirs.contains(dir) { dirs.append(dir) }
        }
        for dir in [prefix + "/lib/python3/dist-packages", "/usr/lib/python3/dist-packages"]
        where FileIO.isDirectory(dir) && !dirs.contains(dir) { dirs.append(dir) }
        return dirs
    }

    /// The file a module name resolves to: a package's __init__.py, a .py module, or an extension
    /// module (NAME.cpython-*.so, NAME.abi3.so, NAME.so). nil: built in, or not installed.
    public static func resolve(_ module: String, relativeTo scriptDirectory: String, searchPath: [String]) -> String? {
        var name = module
        var dirs = searchPath
        if module.hasPrefix(".") {
            // Relative to the script's package: one dot is its directory, each more goes up.
            var dir = scriptDirectory
            name = String(module.drop { $0 == "." })
            for _ in 1..<(module.prefix { $0 == "." }.count) { dir = String(dir[..<(dir.lastIndex(of: "/") ?? dir.startIndex)]) }
            if name.isEmpty { return FileIO.exists(dir + "/__init__.py") ? dir + "/__init__.py" : nil }
            dirs = [dir]
        }
        let parts = name.split(separator: ".").map(String.init)
        if let found = find(parts, in: dirs) { return found }
        // `os.path` is an attribute more than a file: the top-level module is what is loaded.
        return parts.count > 1 && !module.hasPrefix(".") ? find([parts[0]], in: dirs) : nil
    }

    static func find(_ parts: [String], in dirs: [String]) -> String? {
        for dir in dirs {
            let base = dir + "/" + parts.joined(separator: "/")
            if FileIO.exists(base + "/__init__.py") { return FileIO.realPath(base + "/__init__.py") }
            if FileIO.exists(base + ".py") { return FileIO.realPath(base + ".py") }
            let parent = String(base[..<(base.lastIndex(of: "/") ?? base.startIndex)])
            let last = parts.last ?? ""
            if let so = FileIO.listDirectory(parent).first(where: { $0.hasPrefix(last + ".") && $0.hasSuffix(".so") }) {
                return FileIO.realPath(parent + "/" + so)
            }
        }
        return nil
    }
}
