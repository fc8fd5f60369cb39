import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// A recorded path and how the task used it (what a workspace links producers and consumers by).
public struct RecordedPath: Sendable, Equatable {
    public var relation: Dependency.Relation
    public var path: String
    public init(relation: Dependency.Relation, path: String) { self.relation = relation; self.path = path }
}

/// The file dependencies of a task's last recorded run, packed into one blob of its task row
/// (`task.file_checks`), so that the no-op check reads one value and stats each path in place:
/// no row per dependency, no Swift String per path (ninja's log is read the same way). The rows
/// of `dependency` stay the full record; this is derived from them and rewritten with them.
///
/// An entry: relation (1 byte, `Dependency.Relation.allCases` index), flags (1 byte), the stored
/// path's length (4 bytes, little-endian), the stored path (relocated like a ref: `./…`, `../…`
/// or absolute), then size, mtime, ctime, inode, device (5 × 8 bytes) when it has a fingerprint.
public struct FileChecks {
    public struct Flags: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let traced = Flags(rawValue: 1)
        public static let fingerprinted = Flags(rawValue: 2)
        /// kind "infrastructure": a path that is not a file of the host.
        public static let infrastructure = Flags(rawValue: 4)
    }

    public struct Entry {
        public var relation: Dependency.Relation
        public var flags: Flags
        /// The stored form of the path, inside the blob.
        public var storedPath: UnsafeRawBufferPointer
        public var fingerprint: FileFingerprint?
    }

    let bytes: UnsafeRawBufferPointer
    let relocation: PathRelocation?
    /// `relocation != nil`, kept as a flag: testing the optional struct copied its strings per entry.
    let relocated: Bool
    /// The task directory and its parent as bytes, made once: every entry's path starts with one.
    let taskBytes: [UInt8]
    let parentBytes: [UInt8]

    init(bytes: UnsafeRawBufferPointer, relocation: PathRelocation?) {
        self.bytes = bytes
        self.relocation = relocation
        relocated = relocation != nil
        taskBytes = Array((relocation?.taskDirectory ?? "").utf8)
        parentBytes = Array(taskBytes[..<(taskBytes.lastIndex(of: UInt8(ascii: "/")) ?? 0)])
    }

    /// The entries in order, for a plain loop (a closure that mutates what it captures pays an
    /// exclusivity check per entry). `malformed` is set where it stopped at a malformed entry (a
    /// task can write its own store: a short or odd blob is never trusted).
    public struct Iterator: IteratorProtocol {
        let bytes: UnsafeRawBufferPointer
        /// Held here: `allCases` of an enum builds a new array at every use (two per entry).
        let relations = Dependency.Relation.allCases
        var at = 0
        public private(set) var malformed = false

        public mutating func next() -> Entry? {
            guard at < bytes.count, !malformed else { return nil }
            guard let entry = FileChecks.entry(in: bytes, at: at, relations: relations.count) else { malformed = true; return nil }
            var fingerprint: FileFingerprint? = nil
            if entry.flags.contains(.fingerprinted) {
                let base = entry.path.upperBound
                func field(_ i: Int) -> Int64 { Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: base + 8 * i, as: Int64.self)) }
                fingerprint = FileFingerprint(size: field(0), mtimeNs: field(1), ctimeNs: field(2),
                                              inode: UInt64(bitPattern: field(3)), device: UInt64(bitPattern: field(4)))
            }
            at = entry.next
            return Entry(relation: relations[entry.code], flags: entry.flags, storedPath: UnsafeRawBufferPointer(rebasing: bytes[entry.path]),
                         fingerprint: fingerprint)
        }
    }

    /// The layout of the entry at `at`: its relation's code, its flags, where its path is and
    /// where the next entry starts; nil when it is malformed (short, an unknown relation, a path
    /// or a fingerprint past the end). The iterator and `paths(of:)` both read entries by it.
    @inline(__always)
    static func entry(in bytes: UnsafeRawBufferPointer, at: Int, relations: Int) -> (code: Int, flags: Flags, path: Range<Int>, next: Int)? {
        guard bytes.count - at >= 6 else { return nil }
        let code = Int(bytes[at])
        let flags = Flags(rawValue: bytes[at + 1])
        let length = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at + 2, as: UInt32.self)))
        let path = at + 6
        guard code < relations, length <= bytes.count - path else { return nil }
        let next = path + length + (flags.contains(.fingerprinted) ? 40 : 0)
        guard next <= bytes.count else { return nil }
        return (code, flags, path..<path + length, next)
    }

    public func makeIterator() -> Iterator { Iterator(bytes: bytes) }

    /// The stored paths of the entries with `relation`, in order; nil when the blob is malformed.
    /// The headers alone are read (the no-op check's first pass, over every entry).
    public func paths(of relation: Dependency.Relation) -> [UnsafeRawBufferPointer]? {
        let relations = Dependency.Relation.allCases
        guard let wanted = relations.firstIndex(of: relation) else { return [] }
        var found: [UnsafeRawBufferPointer] = []
        var at = 0
        while at < bytes.count {
            guard let entry = Self.entry(in: bytes, at: at, relations: relations.count) else { return nil }
            if entry.code == wanted { found.append(UnsafeRawBufferPointer(rebasing: bytes[entry.path])) }
            at = entry.next
        }
        return found
    }

    /// The blob's size: what a caller sizes its buffers by (an entry takes at least 6 bytes).
    public var byteCount: Int { bytes.count }

    /// Every entry in order; stops (returning false) at the first the body rejects, or at a
    /// malformed entry.
    public func allSatisfy(_ body: (Entry) -> Bool) -> Bool {
        var entries = makeIterator()
        while let entry = entries.next() { guard body(entry) else { return false } }
        return !entries.malformed
    }

    /// Where a relocated entry's path is: under the task directory or the workspace (its parent),
    /// and the rest of it after that directory and a slash, so that it can be looked up from the
    /// directory held open. nil for an absolute path, a store that is not relocated, or the
    /// directory itself.
    public enum Base: Int { case task = 0, workspace = 1 }
    public func relative(_ stored: UnsafeRawBufferPointer) -> (base: Base, rest: UnsafeRawBufferPointer)? {
        guard relocated, stored.count >= 3, stored[0] == UInt8(ascii: ".") else { return nil }
        let slash = UInt8(ascii: "/")
        if stored[1] == slash { return stored[2] == slash ? nil : (.task, UnsafeRawBufferPointer(rebasing: stored[2...])) }
        guard stored[1] == UInt8(ascii: "."), stored.count >= 4, stored[2] == slash, stored[3] != slash else { return nil }
        return (.workspace, UnsafeRawBufferPointer(rebasing: stored[3...]))
    }

    /// The directory a `Base` means here (the workspace's may be "" for the root).
    public func directoryBytes(_ base: Base) -> [UInt8] { base == .task ? taskBytes : parentBytes }

    /// The absolute path an entry means here, NUL-terminated in `buffer` (reused between calls:
    /// the check allocates nothing per path). False when it does not fit.
    public func absolutePath(_ stored: UnsafeRawBufferPointer, into buffer: inout [UInt8]) -> Bool {
        buffer.removeAll(keepingCapacity: true)
        let dot = UInt8(ascii: "."), slash = UInt8(ascii: "/")
        var rest = stored
        if relocated, stored.first == dot {
            if stored.count == 1 {
                buffer.append(contentsOf: taskBytes)
                rest = UnsafeRawBufferPointer(rebasing: stored[1...])
            } else if stored[1] == slash {
                buffer.append(contentsOf: taskBytes)
                rest = UnsafeRawBufferPointer(rebasing: stored[1...])
            } else if stored[1] == dot, stored.count == 2 || stored[2] == slash {
                // The workspace: the task directory's parent, whatever the workspace is now.
                if parentBytes.isEmpty && stored.count == 2 { buffer.append(slash) }
                buffer.append(contentsOf: parentBytes)
                rest = UnsafeRawBufferPointer(rebasing: stored[2...])
            }
        }
        guard buffer.count + rest.count < 4096, memchr(rest.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, 0, rest.count) == nil else { return false }
        if let base = rest.baseAddress { buffer.append(contentsOf: UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: rest.count)) }
        buffer.append(0)
        return true
    }

    /// The packed form of `dependencies`' path entries (stored refs starting with `/` or `.`);
    /// refs are given already encoded.
    static func pack(_ dependencies: [(dependency: Dependency, storedRef: String)]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(dependencies.count * 100)
        let relations = Dependency.Relation.allCases
        for (d, stored) in dependencies {
            guard let first = stored.utf8.first, first == UInt8(ascii: "/") || first == UInt8(ascii: ".") else { continue }
            var flags: Flags = []
            if d.traced { flags.insert(.traced) }
            if d.fingerprint != nil { flags.insert(.fingerprinted) }
            if d.kind == "infrastructure" { flags.insert(.infrastructure) }
            out.append(UInt8(relations.firstIndex(of: d.relation) ?? 0))
            out.append(flags.rawValue)
            withUnsafeBytes(of: UInt32(stored.utf8.count).littleEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: stored.utf8)
            if let f = d.fingerprint {
                for v in [f.size, f.mtimeNs, f.ctimeNs, Int64(bitPattern: f.inode), Int64(bitPattern: f.device)] {
                    withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
                }
            }
        }
        return out
    }
}
