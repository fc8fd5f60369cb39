import Testing
@testable import DgrunStatic
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ScriptScannerTests {
    @Test func shellCommands() {
        let script = """
            #!/bin/sh
            set -eu   # not a command to look up
            LANG=C sort data.txt | uniq -c > out.txt
            if [ -f x ]; then gzip -9 x; fi
            for f in *.csv; do awk -F, '{print $1}' "$f"; done
            result=$(jq .name file.json) && curl -s https://example.test/api
            cd /tmp; ./local-tool --flag
            # make all
            """
        #expect(ScriptScanner.commands(inShellScript: script) == ["sort", "uniq", "gzip", "awk", "jq", "curl", "./local-tool"])
    }

    @Test func literals() {
        let text = """
            data = open("/etc/hostname").read()
            URL = "https://data.example.test/v1/items?x=1"
            DB = "db.internal.test:5432"
            local = 'localhost:8080'
            missing = "/nonexistent/dgrun/path"
            ratio = "3:2"
            """
        let found = ScriptScanner.literals(in: text)
        #expect(found.paths == ["/etc/hostname"])
        #expect(found.urls == ["https://data.example.test/v1/items?x=1"])
        #expect(found.endpoints == ["db.internal.test:5432", "localhost:8080"])
    }
}

@Suite struct PythonImportsTests {
    @Test func importStatementsAreRead() {
        let text = """
        import os, sys as system
        import xml.etree.ElementTree as ET  # a comment: import nothing
        from collections import OrderedDict, defaultdict as dd
        from . import sibling
        from ..pkg.mod import (
            a,
            b as c,
        )
        from typing import *
        x = "import not_a_module"
        def f():
            import json
        """
        #expect(PythonImports.modules(in: text) == [
            "os", "sys", "xml.etree.ElementTree", "collections", "collections.OrderedDict", "collections.defaultdict",
            ".", ".sibling", "..pkg.mod", "..pkg.mod.a", "..pkg.mod.b", "typing", "json",
        ])
    }

    @Test func modulesResolveLikeTheImportSystem() throws {
        let dir = try #require(FileIO.realPath(Self.temporaryDirectory()))
        mkdir(dir + "/pkg", 0o755)
        mkdir(dir + "/pkg/sub", 0o755)
        for file in ["pkg/__init__.py", "pkg/mod.py", "pkg/sub/__init__.py", "pkg/sub/deep.py", "fast.cpython-311-x86_64-linux-gnu.so", "top.py"] {
            _ = try? FileIO.write(dir + "/" + file, "", create: true)
        }
        #expect(PythonImports.resolve("pkg", relativeTo: dir, searchPath: [dir]) == dir + "/pkg/__init__.py")
        #expect(PythonImports.resolve("pkg.mod", relativeTo: dir, searchPath: [dir]) == dir + "/pkg/mod.py")
        #expect(PythonImports.resolve("fast", relativeTo: dir, searchPath: [dir]) == dir + "/fast.cpython-311-x86_64-linux-gnu.so")
        #expect(PythonImports.resolve("top.attribute", relativeTo: dir, searchPath: [dir]) == dir + "/top.py")
        #expect(PythonImports.resolve(".deep", relativeTo: dir + "/pkg/sub", searchPath: []) == dir + "/pkg/sub/deep.py")
        #expect(PythonImports.resolve("..mod", relativeTo: dir + "/pkg/sub", searchPath: []) == dir + "/pkg/mod.py")
        #expect(PythonImports.resolve("sys", relativeTo: dir, searchPath: [dir]) == nil, "built in")
    }

    static func temporaryDirectory() -> String {
        TemporaryRoot.directory("py")
    }
}

/// The scanners run on any script a task executes (up to 1 MB): their cost is linear in its size.
/// A list of every distinct word, deduplicated by scanning the list, made 100,000 distinct commands,
/// paths or imports take minutes (found by FuzzScript and FuzzPython).
@Suite struct ScannerScaleTests {
    static func seconds(_ body: () -> Void) -> Double {
        let start = ContinuousClock.now
        body()
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    @Test func manyDistinctCommandsAndPaths() {
        let n = 100_000
        let commands = (0..<n).map { "cmd\($0) arg" }.joined(separator: "\n")
        var found: [String] = []
        // Generous bounds: linear takes well under a second here, quadratic took minutes.
        #expect(Self.seconds { found = ScriptScanner.commands(inShellScript: commands + "\ncmd7\n") } < 20)
        #expect(found.count == n && found.first == "cmd0" && found.last == "cmd\(n - 1)")
        let paths = (0..<n).map { "cat /p/\($0) /p/\($0)" }.joined(separator: "\n")
        var literals = ScriptScanner.Literals()
        #expect(Self.seconds { literals = ScriptScanner.literals(in: paths, pathExists: { _ in true }) } < 20)
        #expect(literals.paths.count == n && literals.paths[1] == "/p/1")
    }

    @Test func manyImportsAndLongContinuations() {
        let n = 100_000
        let imports = (0..<n).map { "import m\($0)" }.joined(separator: "\n")
        var modules: [String] = []
        #expect(Self.seconds { modules = PythonImports.modules(in: imports) } < 20)
        #expect(modules.count == n && modules.last == "m\(n - 1)")
        // One statement continued over 50,000 lines: the joined text was scanned again at each one.
        let continued = "import a, \\\n" + String(repeating: "  b, \\\n", count: 50_000) + "  c\n"
        #expect(Self.seconds { modules = PythonImports.modules(in: continued) } < 20)
        #expect(modules == ["a", "b", "c"])
        let parenthesised = "from x import (\n" + String(repeating: "  y,\n", count: 50_000) + ")\nimport z\n"
        #expect(PythonImports.modules(in: parenthesised) == ["x", "x.y", "z"])
    }
}
