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
    /// `links` by consumer and by producer (indexLinks); empty until links are computed.
    var producersOf: [[Int]] = []
    var consumersOf: [[Int]] = []
    /// `consumed` indexed by path, made when first asked for: only a run that changed outputs
    /// asks (to mark readers stale), and a no-op of a 100,000-file task spent 0.58 G of its
    /// 1.4 G instructions building it.
    var consumerIndexCache = ConsumerIndexCache()
    var consumerIndex: ConsumerIndex { consumerIndexCache.index { Self.consumerIndex(of: consumed) } }

    struct ConsumerIndex: Sendable {
        var literal: [String: [Int]] = [:]
        var globs: [(Int, String)] = []
    }

    final class ConsumerIndexCache: Sendable {
        let made = Locked<ConsumerIndex?>(nil)
        func index(_ make: () -> ConsumerIndex) -> ConsumerIndex {
            made.withLock { made in
                if let made { return made }
                let index = make()
                made = index
                return index
            }
        }
    }

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
        indexLinks()
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
        guard let parent = PathRelocation.workspaceRoot(of: task.directory) else { return nil }
        return try load(root: parent, stateOption: stateOption)
    }

    public func index(of task: TaskFile) -> Int? { tasks.firstIndex { $0.directory == task.directory } }

    // MARK: - what tasks produce and consume

    /// The recorded paths of a task and how it used them, when it has a store (never creates one):
    /// from the packed file checks (one read), else from the dependency rows.
    static func recorded(_ task: TaskFile, stateOption: String?) -> [RecordedPath] {
        guard let store = try? StateLocation.existing(for: task, stateOption: stateOption) else { return [] }
        if let paths = try? store.recordedPaths(task: task.directory) { return paths }
        return ((try? store.dependencies(task: task.directory)) ?? []).map { RecordedPath(relation: $0.relation, path: $0.ref) }
    }

    /// Every task's recorded paths, the stores opened and read on all CPUs: opening a store is
    /// mostly SQLite parsing its schema (0.7 M instructions), and one after another it was half of a
    /// 1,000-task workspace's no-op, on one CPU.
    static func recordedPaths(of tasks: [TaskFile], stateOption: String?) -> [[RecordedPath]] {
        Parallel.map(tasks.count, workers: tasks.count < 16 ? 1 : DgrunSystem.ProcessInfo.cpuCount) {
            recorded(tasks[$0], stateOption: stateOption)
        }
    }

    static func produced(_ task: TaskFile, recorded: [RecordedPath]) -> [String] {
        task.outputs.map { TaskFile.absolute($0, in: task.directory) }
            + recorded.filter { $0.relation == .writes && FileIO.isDirectory($0.path) == false }.map(\.path)
    }

    static func consumed(_ task: TaskFile, recorded: [RecordedPath]) -> [String] {
        let written = Set(recorded.lazy.filter { $0.relation == .writes }.map(\.path))
        var result = task.inputs.map { TaskFile.absolute($0, in: task.directory) }
        result.reserveCapacity(result.count + recorded.count)
        for entry in recorded {
            switch entry.relation {
            case .reads, .loads, .executes:
                if written.isEmpty || !written.contains(entry.path) { result.append(entry.path) }
            default: break
            }
        }
        return result
    }

    /// Bytes, not Characters: this runs for every recorded path of every task at each load (10.7 G
    /// of a 100,000-file task's 12.6 G no-op instructions when it compared Characters).
    public static func isGlob(_ s: String) -> Bool {
        var s = s
        return s.withUTF8 { bytes in
            for byte in bytes where byte == UInt8(ascii: "*") || byte == UInt8(ascii: "?") || byte == UInt8(ascii: "[") {
                return true
            }
            return false
        }
    }

    public static func matches(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        if isGlob(a) && fnmatch(a, b, FNM_PATHNAME) == 0 { return true }
        return isGlob(b) && fnmatch(b, a, FNM_PATHNAME) == 0
    }

    /// Reads each task's store once and links producers to consumers.
    public mutating func computeLinks(stateOption: String?) {
        let records = Self.recordedPaths(of: tasks, stateOption: stateOption)
        let produced = tasks.indices.map { Self.produced(tasks[$0], recorded: records[$0]) }
        consumed = tasks.indices.map { Self.consumed(tasks[$0], recorded: records[$0]) }
        links = Self.links(produced: produced, consumed: consumed)
        indexLinks()
        consumerIndexCache = ConsumerIndexCache()
    }

    /// Producer → consumer links, each through the producer's first output (in its order) that the
    /// consumer reads. Linear in the paths (an index of the literal outputs), not in tasks × tasks ×
    /// paths: a 1,000-task workspace took 11 s to load (every pair compared every path).
    static func links(produced: [[String]], consumed: [[String]]) -> [Link] {
        var literalProducers: [String: [(producer: Int, position: Int)]] = [:]
        var globOutputs: [(producer: Int, position: Int, glob: String)] = []
        var allLiteralOutputs: [(producer: Int, position: Int, path: String)] = []
        for (producer, outputs) in produced.enumerated() {
            for (position, output) in outputs.enumerated() {
                if isGlob(output) {
                    globOutputs.append((producer, position, output))
                } else {
                    literalProducers[output, default: []].append((producer, position))
                    allLiteralOutputs.append((producer, position, output))
                }
            }
        }
        // The lengths of the literal outputs: a path of another length cannot be one, and is not
        // hashed. A task in a workspace with a 8,600-path sibling paid 25 M instructions here
        // (half of its `exec TASKDIR`'s own) hashing paths no task writes.
        var lengths = [UInt64](repeating: 0, count: 64)   // bit n: some output is n bytes long (mod 4,096)
        for output in allLiteralOutputs {
            let n = output.path.utf8.count & 4095
            lengths[n >> 6] |= 1 << UInt64(n & 63)
        }
        func mayBeOutput(_ path: String) -> Bool {
            let n = path.utf8.count & 4095
            return lengths[n >> 6] & (1 << UInt64(n & 63)) != 0
        }
        var result: [Link] = []
        for (consumer, wanted) in consumed.enumerated() {
            // producer → the position of its first matching output
            var first: [Int: Int] = [:]
            func hit(_ producer: Int, _ position: Int) {
                guard producer != consumer else { return }
                if let known = first[producer], known <= position { return }
                first[producer] = position
            }
            var literal: [String] = []
            for input in wanted {
                if isGlob(input) {
                    for output in allLiteralOutputs where fnmatch(input, output.path, FNM_PATHNAME) == 0 { hit(output.producer, output.position) }
                    for output in globOutputs where matches(input, output.glob) { hit(output.producer, output.position) }
                } else {
                    if !globOutputs.isEmpty { literal.append(input) }
                    guard mayBeOutput(input) else { continue }
                    for found in literalProducers[input] ?? [] { hit(found.producer, found.position) }
                }
            }
            for output in globOutputs where literal.contains(where: { fnmatch(output.glob, $0, FNM_PATHNAME) == 0 }) {
                hit(output.producer, output.position)
            }
            for producer in first.keys.sorted() {
                result.append(Link(producer: producer, consumer: consumer, ref: produced[producer][first[producer]!]))
            }
        }
        return result
    }

    /// The links by producer and by consumer, for the lookups every plan makes.
    mutating func indexLinks() {
        producersOf = Array(repeating: [], count: tasks.count)
        consumersOf = Array(repeating: [], count: tasks.count)
        for link in links where link.consumer < tasks.count && link.producer < tasks.count {
            producersOf[link.consumer].append(link.producer)
            consumersOf[link.producer].append(link.consumer)
        }
    }

    public func producers(of consumer: Int) -> [Int] {
        producersOf.count == tasks.count ? producersOf[consumer] : links.filter { $0.consumer == consumer }.map(\.producer)
    }
    public func consumers(of producer: Int) -> [Int] {
        consumersOf.count == tasks.count ? consumersOf[producer] : links.filter { $0.producer == producer }.map(\.consumer)
    }

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
        // By the literal inputs' index, then the glob inputs: called after every run of a
        // workspace, it must not compare every task's every input with every output.
        var first: [Int: Int] = [:]  // reader → the position of the first output it reads
        for (position, output) in changedOutputs.enumerated() {
            var readers = consumerIndex.literal[output] ?? []
            for (reader, glob) in consumerIndex.globs where Self.matches(glob, output) { readers.append(reader) }
            if Self.isGlob(output) {
                for (path, those) in consumerIndex.literal where fnmatch(output, path, FNM_PATHNAME) == 0 { readers += those }
            }
            for reader in readers where first[reader] == nil && tasks[reader].directory != task.directory { first[reader] = position }
        }
        return first.keys.sorted().map { ($0, changedOutputs[first[$0]!]) }
    }

    /// Literal input path → the tasks reading it; and every glob input with its task.
    static func consumerIndex(of consumed: [[String]]) -> ConsumerIndex {
        var literal: [String: [Int]] = [:]
        var globs: [(Int, String)] = []
        for (task, inputs) in consumed.enumerated() {
            for input in inputs {
                if Self.isGlob(input) {
                    if !globs.contains(where: { $0 == (task, input) }) { globs.append((task, input)) }
                } else {
                    // Tasks are visited in order: a path read twice by one task is its list's last entry.
                    literal[input, default: []].appendUnlessLast(task)
                }
            }
        }
        return ConsumerIndex(literal: literal, globs: globs)
    }
}

extension Array where Element == Int {
    mutating func appendUnlessLast(_ value: Int) { if last != value { append(value) } }
}
