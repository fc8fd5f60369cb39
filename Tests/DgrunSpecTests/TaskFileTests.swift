import Testing
@testable import DgrunSpec

@Suite struct TOMLSubsetTests {
    @Test func parsesTheTaskFileSubset() throws {
        let table = try TOMLSubset.parse(#"""
        # comment
        command = ["python3", "make_report.py"]  # trailing comment
        lit = 'C:\path'
        esc = "a\"b\n\u00e9"
        multi = """
        line one
        line two"""
        n = 1_000
        f = 1.5
        neg = -3
        yes = true
        env = { LANG = "C.UTF-8", "X-Y" = "z" }
        list = [
          "a",
          "b",   # comment in an array
        ]

        [limits]
        memory = "512m"
        """#)
        #expect(table["command"] == .array([.string("python3"), .string("make_report.py")]))
        #expect(table["lit"] == .string(#"C:\path"#))
        #expect(table["esc"] == .string("a\"b\n\u{e9}"))
        #expect(table["multi"] == .string("line one\nline two"))
        #expect(table["n"] == .integer(1000))
        #expect(table["f"] == .float(1.5))
        #expect(table["neg"] == .integer(-3))
        #expect(table["yes"] == .bool(true))
        guard case .table(let env)? = table["env"] else { Issue.record("env"); return }
        #expect(env["LANG"] == .string("C.UTF-8") && env["X-Y"] == .string("z"))
        #expect(table["list"] == .array([.string("a"), .string("b")]))
        guard case .table(let limits)? = table["limits"] else { Issue.record("limits"); return }
        #expect(limits["memory"] == .string("512m"))
    }

    @Test(arguments: [
        ("a = ", "line 1, column 5: expected a value"),
        ("a = \"open", "unterminated string"),
        ("a = 1\na = 2", "line 2, column 6: key \"a\" is defined twice"),
        ("a.b = 1", "dotted keys"),
        ("[[x]]", "arrays of tables"),
        ("a = 1979-05-27", "dates and times are not supported"),
        ("a = yes", "strings need quotes"),
        ("a = 1 b = 2", "one key = value per line"),
        ("[t]\n[t]", "defined twice"),
        ("a = [1, 2", "expected , or ]"),
    ])
    func rejectsWithAPlace(text: String, message: String) {
        do {
            _ = try TOMLSubset.parse(text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.message.contains(message), "\(error.message)")
        }
    }
}

@Suite struct TaskFileTests {
    @Test func theDesignNotesExample() throws {
        let task = try TaskFile.parse("""
            command = ["python3", "make_report.py"]
            workdir = "."
            env = { LANG = "C.UTF-8" }
            inputs = ["data/*.csv"]
            outputs = ["out/report.txt"]

            [limits]
            memory = "512m"
            cpus = 1.5
            pids = 256
            timeout = "10m"

            [sandbox]
            profile = "default"
            network = "host"
            """, directory: "/w/report")
        #expect(task.name == "report")
        #expect(task.argv == ["python3", "make_report.py"])
        #expect(task.env.map { "\($0.key)=\($0.value)" } == ["LANG=C.UTF-8"])
        #expect(task.inputs == ["data/*.csv"] && task.outputs == ["out/report.txt"])
        #expect(task.memoryBytes == 512 << 20 && task.cpus == 1.5 && task.pids == 256 && task.timeoutSeconds == 600)
        #expect(task.profile == "default" && task.network == .host)
        #expect(task.workingDirectory == "/w/report")
    }

    @Test func runIsAShellLine() throws {
        let task = try TaskFile.parse(#"run = "make -j2 && ./test.sh""#, directory: "/w/t")
        #expect(task.argv == ["/bin/sh", "-c", "make -j2 && ./test.sh"])
    }

    @Test(arguments: [
        ("", "missing command"),
        ("command = []", "command is empty"),
        ("command = [\"a\"]\nrun = \"b\"", "either command or run"),
        ("command = [\"a\"]\ncomand = 1", "unknown key \"comand\""),
        ("command = [\"a\"]\n[limits]\nmemroy = \"1g\"", "unknown key \"memroy\" in [limits]"),
        ("command = [\"a\"]\n[limits]\nmemory = \"lots\"", "line 3, column 1: invalid size"),
        ("command = [\"a\"]\n[limits]\ncpus = \"2\"", "line 3, column 1: limits.cpus must be a positive number"),
        ("command = [\"a\"]\n[limits]\n  timeout = \"soon\"", "line 3, column 3: invalid duration"),
        ("command = [\"a\"]\n[limits]\npids = 0", "limits.pids must be at least 1"),
        ("command = [\"a\"]\n[sandbox]\nnetwork = \"some\"", "use host or none"),
        ("command = \"a\"", "command must be an array"),
        ("command = [\"a\"]\nworkdir = \"/abs\"", "relative"),
        ("command = [\"a\"]\n[cache]\n  url = \"ftp://x\"", "line 3, column 3: cache.url \"ftp://x\" is not a cache URL"),
        ("command = [\"a\"]\n[cache]\nread_only = \"yes\"", "line 3, column 1: cache.read_only must be true or false"),
        ("command = [\"a\"]\n[cache]\ndri = \"x\"", "line 3, column 1: unknown key \"dri\" in [cache]"),
        ("command = [\"a\"]\n[cache]\ndir = \"\"", "cache.dir is empty"),
        ("command = [\"a\"]\ncache = 1", "cache must be a [cache] table"),
    ])
    func rejects(text: String, message: String) {
        do {
            _ = try TaskFile.parse(text, directory: "/w/t")
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.message.contains(message), "\(error.message)")
        }
    }
}

@Suite struct TaskFileProvisioningTests {
    @Test func theCacheTableIsRead() throws {
        let task = try TaskFile.parse("run = \"true\"\n[cache]\ndir = \"../cas\"\nurl = \"http://cache.example:8080/dgrun/\"\nread_only = true\n",
                                      directory: "/w/t")
        #expect(task.cache.directory == "/w/cas")
        #expect(task.cache.url == "http://cache.example:8080/dgrun")
        #expect(task.cache.readOnly == true)
        #expect(try TaskFile.parse("run = \"true\"\n[cache]\ndir = \"off\"\n", directory: "/w/t").cache.off)
    }

    @Test func fetchAndServicesAreRead() throws {
        let task = try TaskFile.parse("""
        run = "wc -l data/a.csv"
        [fetch]
        "data/a.csv" = { url = "https://example.org/a.csv", sha256 = "\(String(repeating: "AB", count: 32))" }
        "b.txt" = { url = "http://127.0.0.1:8000/b.txt" }
        [services]
        wait = "30s"
        """, directory: "/w/t")
        #expect(task.fetches == [
            TaskFile.Fetch(path: "data/a.csv", url: "https://example.org/a.csv", sha256: String(repeating: "ab", count: 32)),
            TaskFile.Fetch(path: "b.txt", url: "http://127.0.0.1:8000/b.txt", sha256: nil),
        ])
        #expect(task.serviceWaitSeconds == 30)
    }

    @Test(arguments: [
        ("[fetch]\n\"a\" = \"https://x\"", "must be an inline table"),
        ("[fetch]\n\"a\" = { sha256 = \"00\" }", "needs a url"),
        ("[fetch]\n\"a\" = { url = \"ftp://x/a\" }", "http://, https:// or file://"),
        ("[fetch]\n\"../a\" = { url = \"https://x/a\" }", "inside the task directory"),
        ("[fetch]\n\"a\" = { url = \"https://x/a\", sha256 = \"xyz\" }", "64 hexadecimal digits"),
        ("[fetch]\n\"a\" = { url = \"https://x/a\", md5 = \"x\" }", "unknown key \"md5\""),
        ("[services]\nwait = \"soon\"", "soon"),
        ("[services]\ntimeout = \"1s\"", "unknown key \"timeout\""),
    ])
    func badProvisioningIsNamed(text: String, message: String) {
        do {
            _ = try TaskFile.parse("run = \"true\"\n" + text, directory: "/w/t")
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.message.contains(message), "\(error.message)")
        }
    }
}
