import DgrunSpec
import DgrunStore
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// A workspace: the graph of its tasks, loaded once per command (the engine plans from it; the
/// state verbs read it). A directory whose subdirectories are task directories. A task depends on another
/// when it reads (or declares as input) a path the other writes (or declares as output).
public struct Workspace: Sendable {
    public var root: String
    public var tasks: [TaskFile]
    /// producer → consumer, through `ref` (a path or a glob of the declarations).
    public var links: [Link] = []
    /// What each task reads or declares as input (absolute paths and globs), as of loading.
    public var consumed: [[String]] = []

    public struct Link: Sendable, Equatable {
        public var producer: Int
        public var consumer: Int
        /// The path (or glob) through which the producer feeds the consumer.
        public var ref: String
        public init(producer: Int, consumer: Int, ref: String) { self.producer = producer; self.consumer = consumer; self.ref = ref }
    }

    public init(root: String, tasks: [TaskFile], links: [Link] = []) {
        self.root = root
        self.tasks = tasks
        self.links = links
        consumed = tasks.map { _ in [] }
    }

    /// Loads every subdirectory with a task.toml; a malformed one is an error naming its file.
    public static func load(root: String, stateOption: String?) throws(DgrunError) -> Workspace {
        var tasks: [TaskFile] = []
        for name in FileIO.listDirectory(root).sorted() where !name.hasPrefix(".") {
            let dir = root + "/" + name
            guard FileIO.isDirectory(dir), FileIO.exists(dir + "/task.toml") else { continue }
            tasks.append(try TaskFile.load(directory: dir))
        }
        var workspace = Workspace(root: root, tasks: tasks)
        workspace.computeLinks(stateOption: stateOption)
        return workspace
    }

    /// The workspace a task directory belongs to: its parent, when a sibling is a task too.
    public static func enclosing(_ task: TaskFile, stateOption: String?) throws(DgrunError) -> Workspace? {
        let parent = String(task.directory[..<(task.directory.lastIndex(of: "/") ?? task.directory.startIndex)])
        guard !parent.isEmpty else { return nil }
        let siblings = FileIO.listDirectory(parent).filter {
            !$0.hasPrefix(".") && parent + "/" + $0 != task.directory && FileIO.exists(parent + "/" + $0 + "/task.toml")
        }
        guard !siblings.isEmpty else { return nil }
        return try load(root: parent, stateOption: stateOption)
    }

    public func index(of task: TaskFile) -> Int? { tasks.firstIndex { $0.directory == task.directory } }

    // MARK: - what tasks produce and consume

    /// Recorded dependencies of a task, when it has a store (never creates one).
    static func recorded(_ task: TaskFile, stateOption: String?) -> [Dependency] {
        guard let store = try? StateLocation.existing(for: task, stateOption: stateOption) else { return [] }
        return (try? store.dependencies(task: task.directory)) ?? []
    }

    static func produced(_ task: TaskFile, recorded: [Dependency]) -> [String] {
        task.outputs.map { TaskFile.absolute($0, in: task.directory) }
            + recorded.filter { $0.relation == .writes && FileIO.isDirectory($0.ref) == false }.map(\.ref)
    }

    static func consumed(_ task: TaskFile, recorded: [Dependency]) -> [String] {
        let written = Set(recorded.filter { $0.relation == .writes }.map(\.ref))
        return task.inputs.map { TaskFile.absolute($0, in: task.directory) }
            + recorded.filter { [.reads, .loads, .executes].contains($0.relation) && !written.contains($0.ref) }.map(\.ref)
    }

    public static func isGlob(_ s: String) -> Bool { s.contains { "*?[".contains($0) } }

    public static func matches(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        if isGlob(a) && fnmatch(a, b, FNM_PATHNAME) == 0 { return true }
        return isGlob(b) && fnmatch(b, a, FNM_PATHNAME) == 0
    }

    /// Reads each task's store once and links producers to consumers.
    public mutating func computeLinks(stateOption: String?) {
        let records = tasks.map { Self.recorded($0, stateOption: stateOption) }
        let produced = tasks.indices.map { Self.produced(tasks[$0], recorded: records[$0]) }
        consumed = tasks.indices.map { Self.consumed(tasks[$0], recorded: records[$0]) }
        var result: [Link] = []
        for consumer in tasks.indices {
            let wanted = consumed[consumer]
            let literal = Set(wanted.filter { !Self.isGlob($0) })
            let globs = wanted.filter(Self.isGlob)
            for producer in tasks.indices where producer != consumer {
                let hit = produced[producer].first { output in
                    (!Self.isGlob(output) && literal.contains(output)) || globs.contains { Self.matches($0, output) }
                        || (Self.isGlob(output) && literal.contains { Self.matches(output, $0) })
                }
                if let hit { result.append(Link(producer: producer, consumer: consumer, ref: hit)) }
            }
        }
        links = result
    }

    public func producers(of consumer: Int) -> [Int] { links.filter { $0.consumer == consumer }.map(\.producer) }
    public func consumers(of producer: Int) -> [Int] { links.filter { $0.producer == producer }.map(\.consumer) }

    /// Every task `task` depends on, directly or not.
    public func ancestors(of task: Int) -> Set<Int> {
        var seen: Set<Int> = []
        var stack = producers(of: task)
        while let next = stack.popLast() {
            if seen.insert(next).inserted { stack += producers(of: next) }
        }
        return seen
    }

    /// A dependency cycle, named task by task, or nil.
    public func cycle() -> [String]? {
        var state = [Int](repeating: 0, count: tasks.count)  // 0 new, 1 on the path, 2 done
        var path: [Int] = []
        func visit(_ t: Int) -> [String]? {
            state[t] = 1
            path.append(t)
            for c in Set(consumers(of: t)) {
                if state[c] == 1 {
                    let start = path.firstIndex(of: c)!
                    return (path[start...] + [c]).map { tasks[$0].name }
                }
                if state[c] == 0, let found = visit(c) { return found }
            }
            path.removeLast()
            state[t] = 2
            return nil
        }
        for t in tasks.indices where state[t] == 0 {
            if let found = visit(t) { return found }
        }
        return nil
    }
}

extension Workspace {
    /// ref → the name of the workspace task producing it, for one consumer's plan.
    public func producerNames(of consumer: Int) -> [String: String] {
        var result: [String: String] = [:]
        for link in links where link.consumer == consumer { result[link.ref] = tasks[link.producer].name }
        return result
    }

    /// The workspace tasks that read one of `changedOutputs` of `task`.
    public func readers(of changedOutputs: [String], except task: TaskFile) -> [(index: Int, output: String)] {
        var result: [(index: Int, output: String)] = []
        for (i, other) in tasks.enumerated() where other.directory != task.directory {
            if let hit = changedOutputs.first(where: { output in consumed[i].contains { Self.matches($0, output) } }) {
                result.append((i, hit))
            }
        }
        return result
    }
}
