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
    /// The nodes in the order first seen (the graph's order). A pipeline over /usr/include has
    /// thousands: nodes live in an array, named by their index, and every id is hashed once per
    /// event, not once per question asked about it (that was ~24 µs a node).
    private var nodes: [Graph.Node] = []
    /// Every id a node or an edge named → its slot; a slot's node, or -1 for an id only an edge
    /// names (a library's `neededBy` that is no node): edges are keyed by slots, so that an id
    /// that becomes a node later is still the same end of the same edge.
    private var slots: [String: Int32] = [:]
    private var slotNode: [Int32] = []
    private var slotID: [String] = []
    private var nodeSlot: [Int32] = []
    private var edges: [Graph.Edge] = []
    private var edgeKeys: [EdgeKey] = []
    private var edgeSet: Set<EdgeKey> = []
    private var written: Set<String> = []
    /// Files the task read before writing them: the write is a second version, so that the graph
    /// stays acyclic when tasks are chained (what a task reads is never what it produced).
    private var rewritten: [String: Int] = [:]
    /// Nodes whose content hash is computed at the end, on every CPU at once.
    private var toHash: [Int] = []
    /// The stat of a file node, taken once (after the run): its size, whether a lookup found a
    /// regular file, and its identity for the content-hash memo. Taken in the loop only for a
    /// lookup (which needs it to go on); else with the hashes, on every CPU.
    private var nodeStat: [FileStat] = []
    /// File nodes made for a file that existed: their size goes into their cost.
    private var sized: [Int] = []
    let taskID: String
    private var taskSlot: Int32 = 0
    /// taskDirectory + "/": what is inside the task directory, tested on every path.
    let taskPrefix: String
    /// The task node's priority (task.toml's).
    public var taskPriority = 0
    /// A directory whose events are left out (dgrun's own state: read-only inside, never a
    /// dependency). Skipped here, not filtered out of the trace before: that copied every event.
    public var ignoredDirectory: String?

    /// One stat of a path: not taken, failed, or its result.
    enum FileStat {
        case unknown, failed
        case known(stat)
        var isRegular: Bool? {
            switch self {
            case .unknown: return nil
            case .failed: return false
            case .known(let st): return (st.st_mode & S_IFMT) == S_IFREG
            }
        }
        static func of(_ path: String) -> FileStat {
            var st = stat()
            return stat(path, &st) == 0 ? .known(st) : .failed
        }
    }

    /// An edge by the slots of its ends: hashing three strings per link was most of `link`.
    struct EdgeKey: Hashable {
        var from: Int32, to: Int32, relation: Relation
    }

    enum Relation: UInt8 {
        case reads, writes, executes, loads, requires, probes, connects, resolves, uses
        var name: String {
            switch self {
            case .reads: return "reads"
            case .writes: return "writes"
            case .executes: return "executes"
            case .loads: return "loads"
            case .requires: return "requires"
            case .probes: return "probes"
            case .connects: return "connects"
            case .resolves: return "resolves"
            case .uses: return "uses"
            }
        }
    }

    /// `name`: the task's name (its directory's); for a command, the program's.
    public init(taskDirectory: String, argv: [String], environment: [String], name: String? = nil) {
        self.taskDirectory = taskDirectory
        taskPrefix = taskDirectory + "/"
        self.argv = argv
        self.environment = environment
        taskID = "task:" + (name ?? argv.first.map { String($0.split(separator: "/").last ?? Substring($0)) } ?? "task")
    }

    public mutating func build(trace: TraceResult, usage: ResourceUsage) -> Graph {
        nodes.reserveCapacity(trace.events.count + 16)
        slots.reserveCapacity(trace.events.count + 16)
        edges.reserveCapacity(trace.events.count + 16)
        edgeKeys.reserveCapacity(trace.events.count + 16)
        edgeSet.reserveCapacity(trace.events.count + 16)
        let task = add(Graph.Node(id: taskID, kind: .task, ref: taskDirectory, version: nil, state: "available",
                                  ownership: "internal", cost: [:], priority: taskPriority, evidence: ["task"]))
        let ignoredPrefix = ignoredDirectory.map { $0 + "/" }
        taskSlot = nodeSlot[task]
        var executed: [String] = []
        var network = "none"
        var evidenceBySyscall: [Int32: String] = [:]  // one string per syscall, not per event
        let served = trace.events.filter { $0.kind == .bind }.compactMap(Endpoint.init(event:))
        for event in trace.events {
            if let ignoredDirectory, let ignoredPrefix, event.path == ignoredDirectory || Self.hasPrefix(event.path, ignoredPrefix) { continue }
            let evidence = evidenceBySyscall[event.syscall] ?? {
                let text = "traced:" + event.syscallName
                evidenceBySyscall[event.syscall] = text
                return text
            }()
            switch event.kind {
            case .open, .lookup:
                var looked = FileStat.unknown
                if event.kind == .lookup && event.existed {
                    // The node's own stat when there is one; else one stat, kept for the node.
                    if let n = node("file:" + event.path) {
                        if nodeStat[n].isRegular == nil { nodeStat[n] = .of(event.path) }
                        looked = nodeStat[n]
                    } else {
                        looked = .of(event.path)
                    }
                    if looked.isRegular != true { continue }
                }
                if !event.existed && !event.writes {
                    link(file(event.path, existed: false, evidence: evidence), .probes)
                } else if event.writes {
                    written.insert(event.path)
                    link(output(event.path, existed: event.existed, evidence: evidence, replaced: event.replacedVersion), .writes)
                } else {
                    let n = file(event.path, existed: true, evidence: evidence, stat: looked)
                    link(n, nodes[n].kind == .library ? .loads : .reads)
                }
            case .exec:
                if event.existed {
                    let n = file(event.path, existed: true, evidence: evidence, kind: .code)
                    link(n, .executes)
                    if !executed.contains(event.path) { executed.append(event.path) }
                } else {
                    link(file(event.path, existed: false, evidence: evidence), .probes)
                }
            case .modify:
                let replacedPath = event.path2.isEmpty ? event.path : event.path2
                for path in [event.path, event.path2] where !path.isEmpty {
                    written.insert(path)
                    link(output(path, existed: event.existed, evidence: evidence,
                                replaced: path == replacedPath ? event.replacedVersion : nil), .writes)
                }
            case .connect:
                guard let endpoint = Endpoint(event: event) else { continue }
                // A unix socket that was not there: the program looked for a service and went on
                // without it (glibc and nscd's socket), so it is a probe, not something to block on.
                if endpoint.uri.hasPrefix("unix:/") && !event.existed {
                    link(file(event.path, existed: false, evidence: evidence), .probes)
                    continue
                }
                let id = "service:" + endpoint.uri
                // The task's own server (it bound the address): part of the task, never checked before a run.
                let own = served.contains { endpoint.isServed(by: $0) }
                let n = add(Graph.Node(id: id, kind: .service, ref: endpoint.uri, version: nil, state: "available",
                                       ownership: own ? "internal" : "external", cost: [:], priority: 0, evidence: [evidence]))
                link(n, endpoint.isDNS ? .resolves : .connects)
                if let name = endpoint.dnsName {
                    let nameID = "service:dns:" + name
                    let m = add(Graph.Node(id: nameID, kind: .service, ref: "dns:" + name, version: nil, state: "available",
                                           ownership: "external", cost: [:], priority: 0, evidence: ["traced:dns-query"]))
                    link(m, .resolves)
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
        var graph = Graph(task: .init(id: taskID, dir: taskDirectory, argv: argv), nodes: nodes, edges: edges)
        graph.fileStats = nodeStat.map { known -> stat? in
            guard case .known(let st) = known else { return nil }
            return st
        }
        return graph
    }

    // MARK: - nodes

    /// The slot of an id, made when it is new.
    mutating func slot(_ id: String) -> Int32 {
        // One hash of the id, found or inserted (a lookup and then an insert were two).
        let new = Int32(slotNode.count)
        var found = new
        Self.read(&slots[id, default: new], into: &found)
        if found == new {
            slotNode.append(-1)
            slotID.append(id)
        }
        return found
    }

    private static func read(_ value: inout Int32, into out: inout Int32) { out = value }

    /// The node with this id, if there is one.
    func node(_ id: String) -> Int? {
        guard let s = slots[id], slotNode[Int(s)] >= 0 else { return nil }
        return Int(slotNode[Int(s)])
    }

    /// Adds a node, or the new evidence of one with the same id; returns its index.
    @discardableResult
    mutating func add(_ node: Graph.Node, stat: FileStat = .unknown) -> Int {
        let s = slot(node.id)
        if slotNode[Int(s)] >= 0 {
            let n = Int(slotNode[Int(s)])
            for e in node.evidence where !nodes[n].evidence.contains(e) { nodes[n].evidence.append(e) }
            return n
        }
        return place(node, at: s, stat: stat)
    }

    /// A new node in slot `s`, which has none yet.
    private mutating func place(_ node: Graph.Node, at s: Int32, stat: FileStat) -> Int {
        slotNode[Int(s)] = Int32(nodes.count)
        nodeSlot.append(s)
        nodeStat.append(stat)
        nodes.append(node)
        return nodes.count - 1
    }

    /// Adds `evidence` to an existing node (what `add` does for a node already there, without
    /// building one).
    mutating func addEvidence(_ evidence: String, to n: Int) {
        if !nodes[n].evidence.contains(evidence) { nodes[n].evidence.append(evidence) }
    }

    mutating func link(_ to: Int, _ relation: Relation, from: Int32? = nil) {
        let key = EdgeKey(from: from ?? taskSlot, to: nodeSlot[to], relation: relation)
        guard edgeSet.insert(key).inserted else { return }
        edgeKeys.append(key)
        edges.append(Graph.Edge(from: from.map { id(ofSlot: $0) } ?? taskID, to: nodes[to].id, relation: relation.name))
    }

    /// An edge from an id given as text (a program, a script, the object that needed a library).
    mutating func link(_ to: Int, _ relation: Relation, from: String) {
        link(to, relation, from: slot(from))
    }

    private func id(ofSlot s: Int32) -> String { slotID[Int(s)] }

    /// A file node: kind from where it lives and what it is; state and ownership from the run.
    /// `stat`: the path's stat when the caller already took it.
    mutating func file(_ path: String, existed: Bool, evidence: String, produced: Bool = false,
                       kind forced: Graph.Node.Kind? = nil, stat known: FileStat = .unknown) -> Int {
        let id = "file:" + path
        let s = slot(id)  // the id hashed once, for the lookup and, when new, the node's slot
        if slotNode[Int(s)] >= 0 {
            let n = Int(slotNode[Int(s)])
            addEvidence(evidence, to: n)
            if forced == .code, nodes[n].kind != .code { nodes[n].kind = .code }
            if produced {
                if nodes[n].state == "unavailable" { toHash.append(n) }
                nodes[n].ownership = "internal"
                nodes[n].state = "available"
            }
            return n
        }
        var kind = forced ?? Self.kind(of: path)
        if forced == nil, kind == .data, existed, looksLikeLibrary(path) { kind = .library }
        let inside = path == taskDirectory || Self.hasPrefix(path, taskPrefix)
        let n = place(Graph.Node(id: id, kind: kind, ref: path, version: nil,
                                 state: existed || produced ? "available" : "unavailable",
                                 ownership: inside || produced ? "internal" : "external",
                                 cost: [:], priority: 0, evidence: [evidence]), at: s, stat: existed ? known : .unknown)
        if existed { sized.append(n) }  // its size: in the cost, from the stat taken with the hashes
        // Outputs are hashed too (after the run): their versions are what dependants consume. A
        // process's own /proc files are not: read now, they would be dgrun's, different every run.
        if existed || produced, !Self.isPerProcess(path) { toHash.append(n) }
        return n
    }

    /// The node a write goes to: the file's own, or, when the task read it first, a second version.
    /// `replaced`: the version the call is about to replace, as the tracer hashed it just before.
    mutating func output(_ path: String, existed: Bool, evidence: String, replaced: String? = nil) -> Int {
        if let second = rewritten[path] {
            addEvidence(evidence, to: second)
            return second
        }
        let original = "file:" + path
        guard let first = node(original),
              edgeSet.contains(EdgeKey(from: taskSlot, to: nodeSlot[first], relation: .reads)),
              !edgeSet.contains(EdgeKey(from: taskSlot, to: nodeSlot[first], relation: .writes)) else {
            return file(path, existed: existed, evidence: evidence, produced: true)
        }
        // Hashes are taken after the run, when the content read is gone: the tracer hashed it
        // before the write (when it could open it), else the version read stays unknown rather
        // than wrong. The version written gets the final content's hash.
        toHash.removeAll { $0 == first }
        if let replaced { nodes[first].version = replaced }
        let second = add(Graph.Node(id: original + "#2", kind: nodes[first].kind, ref: path, version: nil, state: "available",
                                    ownership: "internal", cost: [:], priority: 0, evidence: [evidence]))
        rewritten[path] = second
        toHash.append(second)
        return second
    }

    /// `text.hasPrefix(prefix)` (by Characters, as String compares) without its cost on the common
    /// case: equal bytes followed by an ASCII byte (or the end) are a prefix by Characters too.
    static func hasPrefix(_ text: String, _ prefix: String) -> Bool {
        var text = text, prefix = prefix
        let bytes = text.withUTF8 { t in
            prefix.withUTF8 { p -> Bool? in
                guard t.count >= p.count, memcmp(t.baseAddress!, p.baseAddress!, p.count) == 0 else {
                    // Unequal bytes can still be canonically equivalent (é as one scalar or two),
                    // but not to an ASCII prefix: a Character equal to an ASCII one is that byte.
                    return p.allSatisfy { $0 < 0x80 } ? false : nil
                }
                // A combining mark after the prefix would join its last Character.
                return t.count == p.count || t[p.count] < 0x80 ? true : nil
            }
        }
        return bytes ?? text.hasPrefix(prefix)
    }

    static func kind(of path: String) -> Graph.Node.Kind {
        var path = path
        // "/dev/…", "/proc/…", "/sys/…" or the directories themselves, by bytes (ASCII prefixes,
        // so as String compares unless a combining mark follows).
        let infrastructure = path.withUTF8 { b -> Bool? in
            for prefix in [Self.dev, Self.proc, Self.sys] where b.count >= prefix.count - 1
                && memcmp(b.baseAddress!, prefix, prefix.count - 1) == 0 {
                if b.count == prefix.count - 1 { return true }
                guard b[prefix.count - 1] == UInt8(ascii: "/") else { continue }
                return b.count == prefix.count || b[prefix.count] < 0x80 ? true : nil
            }
            return false
        }
        if let infrastructure { return infrastructure ? .infrastructure : .data }
        for prefix in ["/dev/", "/proc/", "/sys/"] where path.hasPrefix(prefix) || path == prefix.dropLast() { return .infrastructure }
        return .data
    }

    static let dev = Array("/dev/".utf8), proc = Array("/proc/".utf8), sys = Array("/sys/".utf8)

    /// /proc/self, /proc/thread-self or /proc/PID, or a file under one: what the process that
    /// reads it is, not a file with a content of its own.
    static func isPerProcess(_ path: String) -> Bool {
        let b = path.utf8
        guard b.starts(with: proc) else { return false }
        let rest = b.dropFirst(proc.count)
        let name = rest.prefix { $0 != UInt8(ascii: "/") }
        guard !name.isEmpty else { return false }
        return name.elementsEqual("self".utf8) || name.elementsEqual("thread-self".utf8)
            || name.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    /// libfoo.so, libfoo.so.6: by the name alone (thousands of paths, so no splitting).
    func looksLikeLibrary(_ path: String) -> Bool {
        var path = path
        return path.withUTF8 { b in
            var start = b.count
            while start > 0, b[start - 1] != UInt8(ascii: "/") { start -= 1 }
            var i = start
            while i + 3 <= b.count {
                if b[i] == UInt8(ascii: "."), b[i + 1] == UInt8(ascii: "s"), b[i + 2] == UInt8(ascii: "o"),
                   i + 3 == b.count || b[i + 3] == UInt8(ascii: ".") { return true }
                i += 1
            }
            return false
        }
    }

    func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// Content hashes of the files the run found, in parallel: hashing is most of what discover
    /// adds after the run on a task that reads many files. A build-id already set is kept after it.
    /// The stat a node was made with is the one the memo is asked with: one stat a file, not two.
    mutating func hashVersions() {
        // The stats not taken yet (one a file that existed), on every CPU; then the sizes.
        let unstated = sized.filter { nodeStat[$0].isRegular == nil }
        let unstatedPaths = unstated.map { nodes[$0].ref }
        let taken = Parallel.map(unstated.count) { FileStat.of(unstatedPaths[$0]) }
        for (i, n) in unstated.enumerated() { nodeStat[n] = taken[i] }
        for n in sized {
            if case .known(let st) = nodeStat[n], (st.st_mode & S_IFMT) == S_IFREG { nodes[n].cost["bytes"] = Double(st.st_size) }
        }
        let ids = toHash
        let paths = ids.map { nodes[$0].ref }
        let stats = ids.map { nodeStat[$0] }
        let cache = ContentHashCache(path: ContentHashCache.defaultPath())
        let now = Clock.now()
        let wrote = paths.map { written.contains($0) && FileIO.isSymbolicLink($0) }
        let results = Parallel.map(paths.count) { i -> String? in
            // An output the task left as a link is the link, never what it points to.
            if wrote[i] { return ContentHash.outputVersion(of: paths[i]) }
            switch stats[i] {
            case .known(let st): return cache.version(of: paths[i], stat: st, now: now)
            case .unknown, .failed: return cache.version(of: paths[i], now: now)
            }
        }
        cache.save()
        for (i, n) in ids.enumerated() {
            guard let digest = results[i] else {
                // A temporary the task made and removed again: gone when the run ended. (A
                // successful stat of the canonical path says it is there: no second look.)
                if case .known = stats[i] { continue }
                if !FileIO.existsNoFollow(paths[i]) { nodes[n].state = "unavailable" }
                continue
            }
            nodes[n].version = nodes[n].version.map { Self.joined(digest, $0) } ?? digest
        }
    }

    /// The Debian package that installed each external file, appended to its version
    /// ("sha256:… deb:libc6=2.36-9+deb12u10"): what to reinstall, or pin, to get it back.
    mutating func addPackageVersions() {
        // File nodes are one per path ("file:" + ref), so each candidate is asked about once.
        let external = nodes.indices.filter {
            nodes[$0].ownership == "external" && nodes[$0].state == "available" && Self.hasPrefix(nodes[$0].ref, "/")
                && nodes[$0].kind != .infrastructure
        }
        let owners = DebianPackages.owners(ofPaths: external.map { nodes[$0].ref })
        for (n, owner) in zip(external, owners) {
            guard let owner else { continue }
            nodes[n].version = nodes[n].version.map { Self.joined($0, owner) } ?? owner
        }
    }

    /// "a b" in one allocation (a version and a package, thousands of times).
    static func joined(_ a: String, _ b: String) -> String {
        var a = a, b = b
        return a.withUTF8 { x in
            b.withUTF8 { y in
                String(unsafeUninitializedCapacity: x.count + 1 + y.count) { out in
                    _ = out.initialize(fromContentsOf: x)
                    out[x.count] = UInt8(ascii: " ")
                    _ = UnsafeMutableBufferPointer(rebasing: out[(x.count + 1)...]).initialize(fromContentsOf: y)
                    return x.count + 1 + y.count
                }
            }
        }
    }

    /// Whether file versions can be hashed here (the system's libcrypto is loadable).
    public static var canHash: Bool { ContentHash.isAvailable }
    /// Whether some file's version could not be hashed for want of libcrypto. Unlike `canHash`
    /// it loads nothing: a graph whose versions all came from the content-hash memo needs no
    /// libcrypto, and loading it only to ask cost every such discover ~1.2 ms.
    public static var hashingWasUnavailable: Bool { ContentHash.wasUnavailable }

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
                    let n = file(interpreter, existed: true, evidence: "static:shebang", kind: .code)
                    link(n, .requires, from: programID)
                }
                addScriptCandidates(of: program, interpreter: shebang.envProgram ?? shebang.interpreter, searchPath: searchPath)
                continue
            }
            guard let elf = try? ElfFile.read(path: program) else { continue }
            if let buildID = elf.buildID, let n = node(programID) {
                nodes[n].version = "build-id:" + buildID  // the content hash is prepended by hashVersions
            }
            if let interp = elf.interpreter, let real = FileIO.realPath(interp) {
                link(file(real, existed: true, evidence: "static:elf-interp", kind: .library), .requires, from: programID)
            }
            for library in resolver.resolve(program: program) {
                let target = library.path ?? library.name
                let n = file(target, existed: library.path != nil, evidence: "static:elf-needed", kind: .library)
                link(n, .requires, from: "file:" + library.neededBy)
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
        let read = edgeKeys.filter { $0.from == taskSlot && $0.relation == .reads }
            .compactMap { slotNode[Int($0.to)] >= 0 ? nodes[Int(slotNode[Int($0.to)])].ref : nil }
        for path in read where Self.hasPrefix(path, taskPrefix) && !executed.contains(path) {
            if path.hasSuffix(".py"), let python {
                if let n = node("file:" + path) { nodes[n].kind = .code }
                addScriptCandidates(of: path, interpreter: python, searchPath: searchPath)
            } else if path.hasSuffix(".sh"), let shell {
                if let n = node("file:" + path) { nodes[n].kind = .code }
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
                link(file(resolved, existed: true, evidence: "static:shell-command", kind: .code), .requires, from: scriptID)
            }
        }
        if String(interpreter.split(separator: "/").last ?? "").hasPrefix("python") {
            let real = FileIO.realPath(interpreter.hasPrefix("/") ? interpreter : Shebang.resolve(program: interpreter, searchPath: searchPath) ?? interpreter)
            let dirs = PythonImports.searchPath(interpreter: real ?? interpreter, scriptDirectory: directory)
            for module in PythonImports.modules(in: text) {
                guard let found = PythonImports.resolve(module, relativeTo: directory, searchPath: dirs), found != script else { continue }
                link(file(found, existed: true, evidence: "static:python-import", kind: .code), .requires, from: scriptID)
            }
        }
        let literals = ScriptScanner.literals(in: text)
        for path in literals.paths {
            guard let real = FileIO.realPath(path), real != script else { continue }
            link(file(real, existed: true, evidence: "static:script-literal"), .requires, from: scriptID)
        }
        let endpoints = literals.urls.compactMap(Self.endpoint(ofURL:)) + literals.endpoints.map { "tcp://" + $0 }
        for uri in endpoints {
            let id = "service:" + uri
            let n = add(Graph.Node(id: id, kind: .service, ref: uri, version: nil, state: "available", ownership: "external",
                                   cost: [:], priority: 0, evidence: ["static:script-literal"]))
            link(n, .connects, from: scriptID)
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
        link(add(Graph.Node(id: "infrastructure:resources", kind: .infrastructure, ref: "cgroup:" + outcome.cgroupDriver,
                            version: nil, state: "available", ownership: "external", cost: cost, priority: 0,
                            evidence: ["measured:cgroup"])), .uses)
        link(add(Graph.Node(id: "infrastructure:network", kind: .infrastructure, ref: "network:" + network, version: nil,
                            state: "available", ownership: "external", cost: [:], priority: 0, evidence: ["traced:network"])), .uses)
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


