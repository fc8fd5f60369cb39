@testable import DgrunGraph
@testable import DgrunSystem
import Foundation
import Testing

/// Library names are told by the name alone, on thousands of paths per graph.
@Suite struct LibraryNameTests {
    @Test func sharedObjectNames() {
        let builder = GraphBuilder(taskDirectory: "/t", argv: ["x"], environment: [])
        for yes in ["/usr/lib/libc.so.6", "/lib/libz.so", "libm.so.6.0.1", "/etc/ld.so.cache"] {
            #expect(builder.looksLikeLibrary(yes), "\(yes)")
        }
        for no in ["/usr/lib/libc.a", "/usr/share/doc/soap.txt", "/x.so/readme", "/a/b.sox", ""] {
            #expect(!builder.looksLikeLibrary(no), "\(no)")
        }
    }
}

/// The builder on a trace of real files: what each kind of call makes of a file, and the
/// second version of a file the task read and then rewrote.
@Suite struct GraphBuilderTraceTests {
    static func event(_ kind: TraceEvent.Kind, _ path: String, existed: Bool = true, flags: Int64 = 0,
                      syscall: Int32 = 257) -> TraceEvent {
        TraceEvent(kind: kind, syscall: syscall, pid: 2, existed: existed, flags: flags, path: path, path2: "",
                   address: [], data: [])
    }

    @Test func readsWritesProbesLookupsAndASecondVersion() throws {
        var template = Array("/tmp/dgrun-graph-builder-XXXXXX".utf8CString)
        let task = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        defer { try? FileManager.default.removeItem(atPath: task) }
        try FileIO.write(task + "/in.txt", "input\n", create: true)
        try FileIO.write(task + "/rw.txt", "read, then rewritten\n", create: true)
        mkdir(task + "/sub", 0o755)
        let writeFlags: Int64 = 0o1101  // O_WRONLY | O_CREAT | O_TRUNC
        let events = [
            Self.event(.open, task + "/in.txt"),
            Self.event(.lookup, task + "/sub"),  // a directory looked up: no node
            Self.event(.lookup, task + "/in.txt", syscall: 262),
            Self.event(.open, task + "/missing.txt", existed: false),
            Self.event(.open, task + "/rw.txt"),
            Self.event(.open, task + "/rw.txt", flags: writeFlags),
            Self.event(.open, task + "/out.txt", existed: false, flags: writeFlags),
        ]
        try FileIO.write(task + "/rw.txt", "the task's new content\n", create: true)
        try FileIO.write(task + "/out.txt", "output\n", create: true)
        var builder = GraphBuilder(taskDirectory: task, argv: ["t"], environment: [], name: "t")
        let graph = builder.build(trace: TraceResult(events: events, notifications: 7, lost: 0),
                                  usage: ResourceUsage(wallSeconds: 1, cpuUserSeconds: 0, cpuSystemSeconds: 0,
                                                       memoryPeakBytes: nil, pidsPeak: nil, cgroupDriver: "none"))
        let nodes = Dictionary(graph.nodes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(graph.nodes.map(\.id) == ["task:t", "file:\(task)/in.txt", "file:\(task)/missing.txt", "file:\(task)/rw.txt",
                                          "file:\(task)/rw.txt#2", "file:\(task)/out.txt",
                                          "infrastructure:resources", "infrastructure:network"])
        #expect(nodes["file:\(task)/sub"] == nil)
        let input = try #require(nodes["file:\(task)/in.txt"])
        #expect(input.cost == ["bytes": 6] && input.evidence.count == 2 && input.evidence.first == "traced:openat")
        #expect(input.ownership == "internal" && input.state == "available")
        if GraphBuilder.canHash {
            #expect(input.version == ContentHash.version(of: task + "/in.txt"))
            #expect(nodes["file:\(task)/rw.txt#2"]?.version == ContentHash.version(of: task + "/rw.txt"))
            #expect(nodes["file:\(task)/out.txt"]?.version == ContentHash.version(of: task + "/out.txt"))
        }
        // The version read is gone (the tracer hashed nothing here): unknown rather than wrong.
        #expect(nodes["file:\(task)/rw.txt"]?.version == nil)
        #expect(nodes["file:\(task)/missing.txt"]?.state == "unavailable")
        #expect(nodes["file:\(task)/missing.txt"]?.version == nil)
        let edges = graph.edges.map { "\($0.relation) \($0.to)" }
        #expect(edges == ["reads file:\(task)/in.txt", "probes file:\(task)/missing.txt", "reads file:\(task)/rw.txt",
                          "writes file:\(task)/rw.txt#2", "writes file:\(task)/out.txt",
                          "uses infrastructure:resources", "uses infrastructure:network"])
    }

    /// dgrun's own state directory is no part of the task's graph; the task node has the task's priority.
    @Test func theStateDirectoryIsLeftOutAndTheTaskKeepsItsPriority() throws {
        var template = Array("/tmp/dgrun-graph-builder-XXXXXX".utf8CString)
        let task = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        defer { try? FileManager.default.removeItem(atPath: task) }
        try FileIO.write(task + "/in.txt", "input\n", create: true)
        mkdir(task + "/.dgrun", 0o755)
        mkdir(task + "/.dgrunx", 0o755)
        try FileIO.write(task + "/.dgrun/graph.json", "{}", create: true)
        try FileIO.write(task + "/.dgrunx/kept.txt", "kept\n", create: true)
        let events = [Self.event(.open, task + "/.dgrun"), Self.event(.open, task + "/.dgrun/graph.json"),
                      Self.event(.open, task + "/in.txt"), Self.event(.open, task + "/.dgrunx/kept.txt")]
        var builder = GraphBuilder(taskDirectory: task, argv: ["t"], environment: [], name: "t")
        builder.ignoredDirectory = task + "/.dgrun"
        builder.taskPriority = 7
        let graph = builder.build(trace: TraceResult(events: events, notifications: 4, lost: 0),
                                  usage: ResourceUsage(wallSeconds: 1, cpuUserSeconds: 0, cpuSystemSeconds: 0,
                                                       memoryPeakBytes: nil, pidsPeak: nil, cgroupDriver: "none"))
        #expect(graph.nodes.filter { $0.kind != .infrastructure }.map(\.id) == ["task:t", "file:\(task)/in.txt", "file:\(task)/.dgrunx/kept.txt"])
        #expect(graph.nodes.first?.priority == 7)
    }

    /// Prefixes by bytes, answered as String answers (by Characters).
    @Test func prefixesAsStringSaysThem() {
        for (text, prefix) in [("/dev/null", "/dev/"), ("/devices", "/dev/"), ("/dev/\u{301}x", "/dev/"), ("/t/a", "/t/"),
                               ("/té/a", "/te\u{301}/"), ("/te\u{301}/a", "/té/"), ("", "/"), ("/", "/"), ("/\u{301}", "/")] {
            #expect(GraphBuilder.hasPrefix(text, prefix) == text.hasPrefix(prefix), "\(text) \(prefix)")
        }
        for path in ["/dev", "/dev/", "/dev/null", "/devx", "/proc/1/maps", "/sys", "/sys\u{301}", "/dev/\u{301}", "/usr/dev/x"] {
            let slow = ["/dev/", "/proc/", "/sys/"].contains { path.hasPrefix($0) || path == $0.dropLast() }
            #expect((GraphBuilder.kind(of: path) == .infrastructure) == slow, "\(path)")
        }
    }
}
