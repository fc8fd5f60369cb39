import Dispatch
import DgrunStatic
import DgrunSystem
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Builds the graph of one discovery run from what the tracer saw and what static analysis of the
/// executed programs adds (their interpreter and libraries, a script's interpreter).
public struct GraphBuilder {
    public var taskDirectory: String
    public var argv: [String]
    public var environment: [String]
    private var nodes: [String: Graph.Node] = [:]
    private var order: [String] = []
    private var edges: [Graph.Edge] = []
    private var edgeSet: Set<Graph.Edge> = []
    private var written: Set<String> = []
    /// Files the task read before writing them: the write is a second version, so that the graph
    /// stays acyclic when tasks are chained (what a task reads is never what it produced).
    private var rewritten: [String: String] = [:]
    /// Nodes whose content hash is computed at the end, on every CPU at once.
    private var toHash: [String] = []
    let taskID: String
    /// taskDirectory + "/": what is inside the task directory, tested on every path.
    let taskPrefix: String

    /// `name`: the task's name (its directory's); for a command, the program's.
    public init(taskDirectory: String, argv: [String], environment: [String], name: String? = nil) {
        self.taskDirectory = taskDirectory
        taskPrefix = taskDirectory + "/"
        self.argv = argv
        self.environment = environment
        taskID = "task:" + (name ?? argv.first.map { String($0.split(separator: "/").last ?? Substring($0)) } ?? "task")
    }

    public mutating func build(trace: TraceResult, usage: ResourceUsage) -> Graph {
        add(Graph.Node(id: taskID, kind: .task, ref: taskDirectory, version: nil, state: "available",
                       ownership: "internal", cost: [:], priority: 0, evidence: ["task"]))
        var executed: [String] = []
        var network = "none"
        var evidenceBySyscall: [Int32: String] = [:]  // one string per syscall, not per event
        let served = trace.events.filter { $0.kind == .bind }.compactMap(Endpoint.init(event:))
        for event in trace.events {
            let evidence = evidenceBySyscall[event.syscall] ?? {
                let text = "traced:" + event.syscallName
                evidenceBySyscall[event.syscall] = text
                return text
            }()
            switch event.kind {
            case .open, .lookup:
                if event.kind == .lookup && event.existed && !isRegularFile(event.path) { continue }
                if !event.existed && !event.writes {
                    link(file(event.path, existed: false, evidence: evidence), "probes")
                } else if event.writes {
                    written.insert(event.path)
                    link(output(event.path, existed: event.existed, evidence: evidence, replaced: event.replacedVersion), "writes")
                } else {
                    let id = file(event.path, existed: true, evidence: evidence)
                    link(id, nodes[id]?.kind == .library ? "loads" : "reads")
                }
            case .exec:
                if event.existed {
                    let id = file(event.path, existed: true, evidence: evidence, kind: .code)
                    link(id, "executes")
                    if !executed.contains(event.path) { executed.append(event.path) }
                } else {
                    link(file(event.path, existed: false, evidence: evidence), "probes")
                }
            case .modify:
                let replacedPath = event.path2.isEmpty ? event.path : event.path2
                for path in [event.path, event.path2] where !path.isEmpty {
                    written.insert(path)
                    link(output(path, existed: event.existed, evidence: evidence,
                                replaced: path == replacedPath ? event.replacedVersion : nil), "writes")
                }
            case .connect:
                guard let endpoint = Endpoint(event: event) else { continue }
                // A unix socket that was not there: the program looked for a service and went on
                // without it (glibc and nscd's socket), so it is a probe, not something to block on.
                if endpoint.uri.hasPrefix("unix:/") && !event.existed {
                    link(file(event.path, existed: false, evidence: evidence), "probes")
                    continue
                }
                let id = "service:" + endpoint.uri
                // The task's own server (it bound the address): part of the task, never checked before a run.
                let own = served.contains { endpoint.isServed(by: $0) }
                add(Graph.Node(id: id, kind: .service, ref: endpoint.uri, version: nil, state: "available",
                               ownership: own ? "internal" : "external", cost: [:], priority: 0, evidence: [evidence]))
                link(id, endpoint.isDNS ? "resolves" : "connects")
                if let name = endpoint.dnsName {
                    let nameID = "service:dns:" + name
                    add(Graph.Node(id: nameID, kind: .service, ref: "dns:" + name, version: nil, state: "available",
                                   ownership: "external", cost: [:], priority: 0, evidence: ["traced:dns-query"]))
                    link(nameID, "resolves")
                }
                // none < loopback < outside: the widest reach the task needed.
                let reach = endpoint.uri.hasPrefix("unix:") ? "none" : (endpoint.isLoopback ? "loopback" : "outside")
                let rank = ["none": 0, "loopback": 1, "outside": 2]
                if rank[reach]! > rank[network]! { network = reach }
            case .bind:
                continue
            }
        }
        addStaticAnalysis(of: executed)
        addScriptsReadByInterpreters(executed: executed)
        addInfrastructure(outcome: usage, network: network, trace: trace)
        hashVersions()
        addPackageVersions()
        return Graph(task: .init(id: taskID, dir: taskDirectory, argv: argv),
                     nodes: order.compactMap { nodes[$0] }, edges: edges)
    }

    // MARK: - nodes

    mutating func add(_ node: Graph.Node) {
        if var existing = nodes[node.id] {
            for e in node.evidence where !existing.evidence.contains(e) { existing.evidence.append(e) }
            nodes[node.id] = existing
        } else {
            nodes[node.id] = node
            order.append(node.id)
        }
    }

    mutating func link(_ to: String, _ relation: String, from: String? = nil) {
        let edge = Graph.Edge(from: from ?? taskID, to: to, relation: relation)
        if edgeSet.insert(edge).inserted { edges.append(edge) }
    }

    /// A file node: kind from where it lives and what it is; state and ownership from the run.
    mutating func file(_ path: String, existed: Bool, evidence: String, produced: Bool = false,
                       kind forced: Graph.Node.Kind? = nil) -> String {
        let id = "file:" + path
        if nodes[id] == nil {
            var kind = forced ?? Self.kind(of: path)
            if forced == nil, kind == .data, existed, looksLikeLibrary(path) { kind = .library }
            var cost: [String: Double] = [:]
            var st = stat()
            if existed, stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { cost["bytes"] = Double(st.st_size) }
            let inside = path == taskDirectory || path.hasPrefix(taskPrefix)
            // Outputs are hashed too (after the run): their versions are what dependants consume.
            if existed || produced { toHash.append(id) }
            add(Graph.Node(id: id, kind: kind, ref: path, version: nil,
                           state: existed || produced ? "available" : "unavailable",
                           ownership: inside || produced ? "internal" : "external",
                           cost: cost, priority: 0, evidence: [evidence]))
        } else {
            add(Graph.Node(id: id, kind: nodes[id]!.kind, ref: path, version: nil, state: "", ownership: "", cost: [:],
                           priority: 0, evidence: [evidence]))
            if forced == .code, nodes[id]?.kind != .code { nodes[id]?.kind = .code }
            if produced {
                if nodes[id]?.state == "unavailable" { toHash.append(id) }
                nodes[id]?.ownership = "internal"
                nodes[id]?.state = "available"
            }
        }
        return id
    }

    /// The node a write goes to: the file's own, or, when the task read it first, a second version.
    /// `replaced`: the version the call is about to replace, as the tracer hashed it just before.
    mutating func output(_ path: String, existed: Bool, evidence: String, replaced: String? = nil) -> String {
        let original = "file:" + path
        if let second = rewritten[path] {
            add(Graph.Node(id: second, kind: nodes[second]!.kind, ref: path, version: nil, state: "", ownership: "",
                           cost: [:], priority: 0, evidence: [evidence]))
            return second
        }
        let readFirst = edgeSet.contains(Graph.Edge(from: taskID, to: original, relation: "reads"))
            && !edgeSet.contains(Graph.Edge(from: taskID, to: original, relation: "writes"))
        guard readFirst, let first = nodes[original] else {
            return file(path, existed: existed, evidence: evidence, produced: true)
        }
        let second = original + "#2"
        rewritten[path] = second
        // Hashes are taken after the run, when the content read is gone: the tracer hashed it
        // before the write (when it could open it), else the version read stays unknown rather
        // than wrong. The version written gets the final content's hash.
        toHash.removeAll { $0 == original }
        if let replaced { nodes[original]?.version = replaced }
        toHash.append(second)
        add(Graph.Node(id: second, kind: first.kind, ref: path, version: nil, state: "available", ownership: "internal",
                       cost: [:], priority: 0, evidence: [evidence]))
        return second
    }

    static func kind(of path: String) -> Graph.Node.Kind {
        for prefix in ["/dev/", "/proc/", "/sys/"] where path.hasPrefix(prefix) || path == prefix.dropLast() { return .infrastructure }
        return .data
    }

    /// libfoo.so, libfoo.so.6: by the name alone (thousands of paths, so no splitting).
    func looksLikeLibrary(_ path: String) -> Bool {
        let name = path.utf8.lastIndex(of: UInt8(ascii: "/")).map { path.utf8[path.utf8.index(after: $0)...] } ?? path.utf8[...]
        let so = Array(".so".utf8)
        var i = name.startIndex
        while let dot = name[i...].firstIndex(of: UInt8(ascii: ".")) {
            let rest = name[dot...]
            if rest.starts(with: so) {
                let after = name.index(dot, offsetBy: 3)
                if after == name.endIndex || name[after] == UInt8(ascii: ".") { return true }
            }
            i = name.index(after: dot)
        }
        return false
    }

    func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// Content hashes of the files the run found, in parallel: hashing is most of what discover
    /// adds after the run on a task that reads many files. A build-id already set is kept after it.
    mutating func hashVersions() {
        let ids = toHash
        let paths = ids.map { nodes[$0]?.ref ?? "" }
        let results = Slots(count: paths.count)
        let cache = ContentHashCache(path: ContentHashCache.defaultPath())
        let now = Clock.now()
        let wrote = paths.map { written.contains($0) && FileIO.isSymbolicLink($0) }
        DispatchQueue.concurrentPerform(iterations: paths.count) { i in
            // An output the task left as a link is the link, never what it points to.
            results.set(i, wrote[i] ? ContentHash.outputVersion(of: paths[i]) : cache.version(of: paths[i], now: now))
        }
        cache.save()
        for (i, id) in ids.enumerated() {
            // A temporary the task made and removed again: gone when the run ended.
            if results.get(i) == nil, !FileIO.existsNoFollow(paths[i]) { nodes[id]?.state = "unavailable" }
            guard let digest = results.get(i), var node = nodes[id] else { continue }
            node.version = digest + (node.version.map { " " + $0 } ?? "")
            nodes[id] = node
        }
    }


    /// The Debian package that installed each external file, appended to its version
    /// ("sha256:… deb:libc6=2.36-9+deb12u10"): what to reinstall, or pin, to get it back.
    mutating func addPackageVersions() {
        let external = Set(nodes.values.filter { $0.ownership == "external" && $0.state == "available" && $0.ref.hasPrefix("/")
            && $0.kind != .infrastructure }.map(\.ref))
        let owners = DebianPackages.owners(of: external)
        guard !owners.isEmpty else { return }
        for (id, node) in nodes {
            guard let owner = owners[node.ref], node.ownership == "external" else { continue }
            nodes[id]?.version = (node.version.map { $0 + " " } ?? "") + owner
        }
    }

    /// Whether file versions can be hashed here (the system's libcrypto is loadable).
    public static var canHash: Bool { ContentHash.isAvailable }

    // MARK: - static analysis of what ran

    mutating func addStaticAnalysis(of executed: [String]) {
        let resolver = LibraryResolver(environment: environment)
        let searchPath = environment.first { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) } ?? "/usr/bin:/bin"
        for program in executed {
            let programID = "file:" + program
            if let shebang = Shebang.read(path: program) {
                var interpreter = FileIO.realPath(shebang.interpreter)
                if let env = shebang.envProgram { interpreter = Shebang.resolve(program: env, searchPath: searchPath) ?? interpreter }
                if let interpreter {
                    let id = file(interpreter, existed: true, evidence: "static:shebang", kind: .code)
                    link(id, "requires", from: programID)
                }
                addScriptCandidates(of: program, interpreter: shebang.envProgram ?? shebang.interpreter, searchPath: searchPath)
                continue
            }
            guard let elf = try? ElfFile.read(path: program) else { continue }
            if let buildID = elf.buildID, var node = nodes[programID] {
                node.version = "build-id:" + buildID  // the content hash is prepended by hashVersions
                nodes[programID] = node
            }
            if let interp = elf.interpreter, let real = FileIO.realPath(interp) {
                link(file(real, existed: true, evidence: "static:elf-interp", kind: .library), "requires", from: programID)
            }
            for library in resolver.resolve(program: program) {
                let target = library.path ?? library.name
                let id = file(target, existed: library.path != nil, evidence: "static:elf-needed", kind: .library)
                link(id, "requires", from: "file:" + library.neededBy)
            }
        }
    }

    static let shells: Set<String> = ["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash"]

    /// Scripts run as an interpreter's argument (`python3 make_report.py`, `sh build.sh`): the
    /// interpreter read them, so they are among the files read; the task's own ones (in its
    /// directory) are scanned like a script run by its shebang.
    mutating func addScriptsReadByInterpreters(executed: [String]) {
        let searchPath = environment.first { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) } ?? "/usr/bin:/bin"
        // The interpreter itself, not a wrapper script in front of it (pyenv's shims are bash).
        let pythons = executed.filter { ($0.split(separator: "/").last ?? "").hasPrefix("python") }
        let python = pythons.last { Shebang.read(path: $0) == nil } ?? pythons.last
        let shell = executed.first { Self.shells.contains(String($0.split(separator: "/").last ?? "")) }
        let read = edges.filter { $0.from == taskID && $0.relation == "reads" }.compactMap { nodes[$0.to]?.ref }
        for path in read where path.hasPrefix(taskPrefix) && !executed.contains(path) {
            if path.hasSuffix(".py"), let python {
                nodes["file:" + path]?.kind = .code
                addScriptCandidates(of: path, interpreter: python, searchPath: searchPath)
            } else if path.hasSuffix(".sh"), let shell {
                nodes["file:" + path]?.kind = .code
                addScriptCandidates(of: path, interpreter: shell, searchPath: searchPath)
            }
        }
    }

    /// Candidates named in a script's text: the commands a shell script runs (on PATH), and literal
    /// paths, URLs and host:port. They carry static:* evidence; the trace confirms them or not.
    mutating func addScriptCandidates(of script: String, interpreter: String, searchPath: String) {
        guard let bytes = try? FileIO.readBytes(script, limit: 1 << 20) else { return }
        let text = String(decoding: bytes, as: UTF8.self)
        let scriptID = "file:" + script
        let directory = String(script[..<(script.lastIndex(of: "/") ?? script.startIndex)])
        if Self.shells.contains(String(interpreter.split(separator: "/").last ?? "")) {
            for command in ScriptScanner.commands(inShellScript: text) {
                let resolved = command.contains("/")
                    ? FileIO.realPath(command.hasPrefix("/") ? command : directory + "/" + command)
                    : Shebang.resolve(program: command, searchPath: searchPath)
                guard let resolved else { continue }
                link(file(resolved, existed: true, evidence: "static:shell-command", kind: .code), "requires", from: scriptID)
            }
        }
        if String(interpreter.split(separator: "/").last ?? "").hasPrefix("python") {
            let real = FileIO.realPath(interpreter.hasPrefix("/") ? interpreter : Shebang.resolve(program: interpreter, searchPath: searchPath) ?? interpreter)
            let dirs = PythonImports.searchPath(interpreter: real ?? interpreter, scriptDirectory: directory)
            for module in PythonImports.modules(in: text) {
                guard let found = PythonImports.resolve(module, relativeTo: directory, searchPath: dirs), found != script else { continue }
                link(file(found, existed: true, evidence: "static:python-import", kind: .code), "requires", from: scriptID)
            }
        }
        let literals = ScriptScanner.literals(in: text)
        for path in literals.paths {
            guard let real = FileIO.realPath(path), real != script else { continue }
            link(file(real, existed: true, evidence: "static:script-literal"), "requires", from: scriptID)
        }
        let endpoints = literals.urls.compactMap(Self.endpoint(ofURL:)) + literals.endpoints.map { "tcp://" + $0 }
        for uri in endpoints {
            let id = "service:" + uri
            add(Graph.Node(id: id, kind: .service, ref: uri, version: nil, state: "available", ownership: "external",
                           cost: [:], priority: 0, evidence: ["static:script-literal"]))
            link(id, "connects", from: scriptID)
        }
    }

    /// https://host/path → tcp://host:443 (the scheme's port unless the URL names one).
    static func endpoint(ofURL url: String) -> String? {
        guard let schemeEnd = url.firstRange(of: "://") else { return nil }
        let scheme = String(url[..<schemeEnd.lowerBound])
        let rest = url[schemeEnd.upperBound...]
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }.split(separator: "@").last ?? ""
        guard !authority.isEmpty else { return nil }
        if authority.contains(":") { return "tcp://" + authority }
        let ports = ["http": 80, "https": 443, "ftp": 21, "ssh": 22, "git": 9418, "s3": 443]
        return ports[scheme].map { "tcp://\(authority):\($0)" }
    }

    mutating func addInfrastructure(outcome: ResourceUsage, network: String, trace: TraceResult) {
        var cost: [String: Double] = ["wall_s": outcome.wallSeconds, "cpu_s": outcome.cpuUserSeconds + outcome.cpuSystemSeconds]
        if let peak = outcome.memoryPeakBytes { cost["memory_peak_bytes"] = Double(peak) }
        if let pids = outcome.pidsPeak { cost["pids_peak"] = Double(pids) }
        add(Graph.Node(id: "infrastructure:resources", kind: .infrastructure, ref: "cgroup:" + outcome.cgroupDriver,
                       version: nil, state: "available", ownership: "external", cost: cost, priority: 0,
                       evidence: ["measured:cgroup"]))
        link("infrastructure:resources", "uses")
        add(Graph.Node(id: "infrastructure:network", kind: .infrastructure, ref: "network:" + network, version: nil,
                       state: "available", ownership: "external", cost: [:], priority: 0, evidence: ["traced:network"]))
        link("infrastructure:network", "uses")
    }
}

/// What the run consumed, for the graph's resources node (measured by the cgroup or rusage).
public struct ResourceUsage: Sendable {
    public var wallSeconds: Double
    public var cpuUserSeconds: Double
    public var cpuSystemSeconds: Double
    public var memoryPeakBytes: UInt64?
    public var pidsPeak: Int?
    /// v2, v1, hybrid or none.
    public var cgroupDriver: String
    public init(wallSeconds: Double, cpuUserSeconds: Double, cpuSystemSeconds: Double, memoryPeakBytes: UInt64?,
                pidsPeak: Int?, cgroupDriver: String) {
        self.wallSeconds = wallSeconds
        self.cpuUserSeconds = cpuUserSeconds
        self.cpuSystemSeconds = cpuSystemSeconds
        self.memoryPeakBytes = memoryPeakBytes
        self.pidsPeak = pidsPeak
        self.cgroupDriver = cgroupDriver
    }
}

/// A network endpoint from a sockaddr (and, for port 53, the name a DNS query asks for).
struct Endpoint {
    var uri: String
    var isLoopback: Bool
    var dnsName: String?
    var isDNS: Bool { dnsName != nil }

    /// `socketType`: SOCK_STREAM (1) or SOCK_DGRAM (2) as the tracer read it from the socket; 0
    /// when unknown, and then port 53 is taken as DNS over UDP and anything else as TCP.
    init?(sockaddr b: [UInt8], data: [UInt8], socketType: Int = 0) {
        func scheme(_ port: Int) -> String {
            switch socketType {
            case 1: return "tcp://"
            case 2: return "udp://"
            default: return port == 53 ? "udp://" : "tcp://"
            }
        }
        // DNS over TCP prefixes each message with its 2-byte length.
        func query(_ port: Int) -> String? {
            guard port == 53 else { return nil }
            return socketType == 1 ? Endpoint.queryName(Array(data.dropFirst(2))) : Endpoint.queryName(data)
        }
        guard b.count >= 2 else { return nil }
        let family = Int(b[0]) | Int(b[1]) << 8
        switch family {
        case 1:  // AF_UNIX
            let path = b.dropFirst(2).prefix(while: { $0 != 0 })
            let abstract = b.count > 2 && b[2] == 0
            let name = abstract ? "@" + String(decoding: b.dropFirst(3).prefix(while: { $0 != 0 }), as: UTF8.self)
                                : String(decoding: path, as: UTF8.self)
            guard !name.isEmpty else { return nil }
            uri = "unix:" + name
            isLoopback = true
        case 2:  // AF_INET
            guard b.count >= 8 else { return nil }
            let port = Int(b[2]) << 8 | Int(b[3])
            let host = "\(b[4]).\(b[5]).\(b[6]).\(b[7])"
            isLoopback = b[4] == 127
            dnsName = query(port)
            uri = scheme(port) + host + ":\(port)"
        case 10:  // AF_INET6
            guard b.count >= 24 else { return nil }
            let port = Int(b[2]) << 8 | Int(b[3])
            let words = stride(from: 8, to: 24, by: 2).map { String(Int(b[$0]) << 8 | Int(b[$0 + 1]), radix: 16) }
            isLoopback = b[8..<23].allSatisfy { $0 == 0 } && b[23] == 1
            dnsName = query(port)
            uri = scheme(port) + "[" + words.joined(separator: ":") + "]:\(port)"
        default:
            return nil
        }
    }

    /// From a traced connect or bind: a unix socket's pathname is the tracer's resolved path.
    init?(event: TraceEvent) {
        self.init(sockaddr: event.address, data: event.data, socketType: Int(event.flags))
        if uri.hasPrefix("unix:") && !uri.hasPrefix("unix:@") && event.path.hasPrefix("/") { uri = "unix:" + event.path }
    }

    /// Whether a server bound at `server` answers a connection to this endpoint: the same
    /// address, or the same port on a wildcard address (0.0.0.0, ::).
    func isServed(by server: Endpoint) -> Bool {
        if uri == server.uri { return true }
        guard let colon = uri.lastIndex(of: ":"), let serverColon = server.uri.lastIndex(of: ":"),
              uri[colon...] == server.uri[serverColon...], !uri.hasPrefix("unix:"),
              uri.prefix(6) == server.uri.prefix(6) else { return false }  // tcp:// or udp://
        let host = server.uri[..<serverColon].split(separator: "/").last ?? ""
        return host == "0.0.0.0" || host == "[0:0:0:0:0:0:0:0]"
    }

    /// The QNAME of a DNS query (header of 12 bytes, then length-prefixed labels).
    static func queryName(_ d: [UInt8]) -> String? {
        guard d.count > 12 else { return nil }
        var labels: [String] = []
        var at = 12
        while at < d.count, d[at] != 0, d[at] < 64 {
            let n = Int(d[at])
            guard at + 1 + n <= d.count else { return nil }
            labels.append(String(decoding: d[(at + 1)...(at + n)], as: UTF8.self))
            at += 1 + n
        }
        return labels.isEmpty ? nil : labels.joined(separator: ".")
    }
}


/// One result slot per parallel iteration. Each index is written by exactly one iteration and read
/// only after concurrentPerform returns, which is why unchecked Sendable is sound here.
final class Slots: @unchecked Sendable {
    private let buffer: UnsafeMutableBufferPointer<String?>
    init(count: Int) {
        buffer = .allocate(capacity: count)
        buffer.initialize(repeating: nil)
    }
    func set(_ i: Int, _ value: String?) { buffer[i] = value }
    func get(_ i: Int) -> String? { buffer[i] }
    deinit {
        buffer.deinitialize()
        buffer.deallocate()
    }
}
