import DgrunSpec
import DgrunSystem

/// How a task's store names the paths of its own directory and of its workspace, so that a copy or
/// a clone at another path reads the same state: inside the task directory as `./REL` (the task
/// itself as `.`), elsewhere inside its workspace as `../REL` (the workspace as `..`), everything
/// else absolute as before (system files, compared by content, build-id or package version).
/// A stored ref never starts with `.` otherwise (paths are absolute, services are URIs), so the two
/// forms cannot be confused. Decoding needs only the task directory, whatever the workspace is now.
public struct PathRelocation: Sendable, Equatable {
    public var taskDirectory: String
    /// The workspace the task belongs to (its parent, when a sibling is a task too), or nil.
    public var workspaceRoot: String?

    public init(taskDirectory: String, workspaceRoot: String?) {
        self.taskDirectory = taskDirectory
        self.workspaceRoot = workspaceRoot
    }

    /// The task directory's parent when a sibling directory has a task.toml too (the rule of
    /// `Workspace.enclosing`), else nil.
    public static func of(_ task: TaskFile) -> PathRelocation {
        PathRelocation(taskDirectory: task.directory, workspaceRoot: workspaceRoot(of: task.directory))
    }

    public static func workspaceRoot(of directory: String) -> String? {
        guard let slash = directory.lastIndex(of: "/") else { return nil }
        let parent = String(directory[..<slash])
        guard !parent.isEmpty else { return nil }
        let name = String(directory[directory.index(after: slash)...])
        return taskDirectories(in: parent).contains { $0 != name } ? parent : nil
    }

    /// The names of the task directories in `parent`, listed once per command: every task of a
    /// workspace asks when its store is opened, and a 1,000-task workspace listed its root (and
    /// looked for 1,000 task.toml files) 1,000 times.
    static func taskDirectories(in parent: String) -> [String] {
        listed.cached(parent) { FileIO.listDirectory(parent).filter { !$0.hasPrefix(".") && FileIO.exists(parent + "/" + $0 + "/task.toml") } }
    }
    private static let listed = Locked([String: [String]]())

    /// The stored form of an absolute path (or of a URI, which is kept).
    public func encode(_ path: String) -> String {
        guard path.hasPrefix("/") else { return path }
        if path == taskDirectory { return "." }
        if path.hasPrefix(taskDirectory), path.utf8.dropFirst(taskDirectory.utf8.count).first == UInt8(ascii: "/") {
            return "." + path.dropFirst(taskDirectory.count)
        }
        if let root = workspaceRoot {
            if path == root { return ".." }
            if path.hasPrefix(root), path.utf8.dropFirst(root.utf8.count).first == UInt8(ascii: "/") {
                return ".." + path.dropFirst(root.count)
            }
        }
        return path
    }

    /// The path a stored ref means here. Compared byte by byte: String.hasPrefix compares
    /// Unicode characters, and this runs once per dependency on every check (9.7 M of the
    /// 5,000-dependency no-op's 81 M instructions before).
    public func decode(_ ref: String) -> String {
        let bytes = ref.utf8
        let dot = UInt8(ascii: "."), slash = UInt8(ascii: "/")
        guard bytes.first == dot else { return ref }
        let second = bytes.dropFirst().first
        if second == nil { return taskDirectory }
        if second == slash { return taskDirectory + ref.dropFirst(1) }
        guard second == dot else { return ref }
        let third = bytes.dropFirst(2).first
        guard third == nil || third == slash else { return ref }
        let parent = taskDirectory.utf8.lastIndex(of: slash).map { String(taskDirectory[..<$0]) } ?? ""
        if third == nil { return parent.isEmpty ? "/" : parent }
        return parent + ref.dropFirst(2)
    }

    /// A node id is KIND:REF; its REF part is encoded like a ref.
    public func encodeNodeID(_ id: String) -> String {
        guard let colon = id.firstIndex(of: ":"), id[id.index(after: colon)...].hasPrefix("/") else { return id }
        return String(id[...colon]) + encode(String(id[id.index(after: colon)...]))
    }

    public func decodeNodeID(_ id: String) -> String {
        guard let colon = id.firstIndex(of: ":"), id[id.index(after: colon)...].hasPrefix(".") else { return id }
        return String(id[...colon]) + decode(String(id[id.index(after: colon)...]))
    }
}
