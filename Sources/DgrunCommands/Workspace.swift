import DgrunPlanner
import DgrunSpec
import DgrunStore
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// A workspace: a directory whose subdirectories are task directories. A task depends on another
/// when it reads (or declares as input) a path the other writes (or declares as output).
struct Workspace {
    var root: String
    var tasks: [TaskFile]
    /// producer → consumer, through `ref` (a path or a glob of the declarations).
    var links: [(producer: Int, consumer: Int, ref: String)] = []
    /// What each task reads or declares as input (absolute paths and globs), as of loading.
    var consumed: [[String]] = []

    /// Loads every subdirectory with a task.toml; a malformed one is an error naming its file.
    static func load(root: String, stateOption: String?) throws(SpecError) -> Workspace {
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
    static func enclosing(_ task: TaskFile, stateOption: String?) throws(SpecError) -> Workspace? {
        let parent = String(task.directory[..<(task.directory.lastIndex(of: "/") ?? task.directory.startIndex)])
        guard !parent.isEmpty else { return nil }
        let siblings = FileIO.listDirectory(parent).filter {
            !$0.hasPrefix(".") && parent + "/" + $0 != task.directory && FileIO.exists(parent + "/" + $0 + "/task.toml")
        }
        guard !siblings.isEmpty else { return nil }
        return try load(root: parent, stateOption: stateOption)
    }

    func index(of task: TaskFile) -> Int? { tasks.firstIndex { $0.directory == task.directory } }

    // MARK: - what tasks produce and consume

    /// Declared paths (relative to the task) made absolute and lexically normal; globs stay globs.
    static func absolute(_ pattern: String, in directory: String) -> String {
        var parts: [Substring] = []
        for part in (pattern.hasPrefix("/") ? pattern : directory + "/" + pattern).split(separator: "/") {
            if part == "." { continue }
            if part == ".." { _ = parts.popLast(); continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Recorded dependencies of a task, when it has a store (never creates one).
    static func recorded(_ task: TaskFile, stateOption: String?) -> [Dependency] {
        let dir = TaskExecution.stateDirectory(for: task, stateOption: stateOption)
        guard FileIO.exists(dir + "/" + Store.fileName), let store = try? Store(directory: dir) else { return [] }
        return (try? store.dependencies(task: task.directory)) ?? []
    }

    static func produced(_ task: TaskFile, recorded: [Dependency]) -> [String] {
        task.outputs.map { absolute($0, in: task.directory) }
            + recorded.filter { $0.relation == .writes && FileIO.isDirectory($0.ref) == false }.map(\.ref)
    }

    static func consumed(_ task: TaskFile, recorded: [Dependency]) -> [String] {
        let written = Set(recorded.filter { $0.relation == .writes }.map(\.ref))
        return task.inputs.map { absolute($0, in: task.directory) }
            + recorded.filter { [.reads, .loads, .executes].contains($0.relation) && !written.contains($0.ref) }.map(\.ref)
    }

    static func isGlob(_ s: String) -> Bool { s.contains { "*?[".contains($0) } }

    static func matches(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        if isGlob(a) && fnmatch(a, b, FNM_PATHNAME) == 0 { return true }
        return isGlob(b) && fnmatch(b, a, FNM_PATHNAME) == 0
    }

    /// Reads each task's store once and links producers to consumers.
    mutating func computeLinks(stateOption: String?) {
        let records = tasks.map { Self.recorded($0, stateOption: stateOption) }
        let produced = tasks.indices.map { Self.produced(tasks[$0], recorded: records[$0]) }
        consumed = tasks.indices.map { Self.consumed(tasks[$0], recorded: records[$0]) }
        var result: [(producer: Int, consumer: Int, ref: String)] = []
        for consumer in tasks.indices {
            let wanted = consumed[consumer]
            let literal = Set(wanted.filter { !Self.isGlob($0) })
            let globs = wanted.filter(Self.isGlob)
            for producer in tasks.indices where producer != consumer {
                let hit = produced[producer].first { output in
                    (!Self.isGlob(output) && literal.contains(output)) || globs.contains { Self.matches($0, output) }
                        || (Self.isGlob(output) && literal.contains { Self.matches(output, $0) })
                }
                if let hit { result.append((producer, consumer, hit)) }
            }
        }
        links = result
    }

    func producers(of consumer: Int) -> [Int] { links.filter { $0.consumer == consumer }.map(\.producer) }
    func consumers(of producer: Int) -> [Int] { links.filter { $0.producer == producer }.map(\.consumer) }

    /// Every task `task` depends on, directly or not.
    func ancestors(of task: Int) -> Set<Int> {
        var seen: Set<Int> = []
        var stack = producers(of: task)
        while let next = stack.popLast() {
            if seen.insert(next).inserted { stack += producers(of: next) }
        }
        return seen
    }

    /// A dependency cycle, named task by task, or nil.
    func cycle() -> [String]? {
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

    // MARK: - entry point

    /// `dgrun exec DIR`: a task directory (with the tasks it reads from first) or a whole workspace.
    static func execute(directory: String, exec: Exec) -> Int32 {
        guard let root = FileIO.realPath(directory), FileIO.isDirectory(root) else {
            return exec.finish(failure: "\(directory) is not a directory", exitCode: 125)
        }
        do {
            if FileIO.exists(root + "/task.toml") {
                let task = try TaskFile.load(directory: root)
                var producers: [String: String] = [:]
                let enclosing = try enclosing(task, stateOption: exec.state)
                if let workspace = enclosing, let me = workspace.index(of: task) {
                    if let cycle = workspace.cycle() { throw SpecError("the tasks of \(workspace.root) form a cycle: \(cycle.joined(separator: " → "))") }
                    for link in workspace.links where link.consumer == me { producers[link.ref] = workspace.tasks[link.producer].name }
                    let upstream = workspace.ancestors(of: me)
                    if !exec.noDependencies, !upstream.isEmpty {
                        let status = Scheduler(workspace: workspace, targets: upstream, exec: exec, force: false).run()
                        if status != 0 {
                            CLI.write(2, "dgrun: \(task.name): not started: a task it depends on did not complete\n")
                            return status
                        }
                    }
                }
                let store = try TaskExecution.openStore(for: task, stateOption: exec.state)
                return TaskExecution(base: exec, task: task, store: store, force: exec.force,
                                     workspace: enclosing).run(producers: producers)
            }
            let workspace = try load(root: root, stateOption: exec.state)
            guard !workspace.tasks.isEmpty else {
                throw SpecError("\(directory) is neither a task directory (no task.toml) nor a workspace (no subdirectory has one)")
            }
            if let cycle = workspace.cycle() { throw SpecError("the tasks of \(root) form a cycle: \(cycle.joined(separator: " → "))") }
            return Scheduler(workspace: workspace, targets: Set(workspace.tasks.indices), exec: exec, force: exec.force).run()
        } catch let error as SpecError {
            return exec.finish(failure: error.message, exitCode: 125)
        } catch let error as StoreError {
            return exec.finish(failure: error.message, exitCode: 125)
        } catch {
            return exec.finish(error)
        }
    }

    /// After a run rewrote outputs: the workspace tasks reading them are marked stale, so that
    /// `dgrun status` says why before any file is checked. What the others read is the workspace's
    /// as loaded before the run: this run changed only its own record.
    func markDependantsStale(of task: TaskFile, changedOutputs: [String], runID: Int64, stateOption: String?) {
        for (i, other) in tasks.enumerated() where other.directory != task.directory {
            let dir = TaskExecution.stateDirectory(for: other, stateOption: stateOption)
            guard FileIO.exists(dir + "/" + Store.fileName) else { continue }  // never ran: it will run anyway
            guard let hit = changedOutputs.first(where: { output in consumed[i].contains { Self.matches($0, output) } }) else { continue }
            try? Store(directory: dir).markStale(task: other.directory, reason: "input \(hit) was rewritten by \(task.name) (run \(runID))")
        }
    }
}
