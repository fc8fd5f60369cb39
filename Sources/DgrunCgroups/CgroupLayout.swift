import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// How cgroups are mounted on this host, detected like youki does: by the filesystem type of
/// /sys/fs/cgroup (cgroup2 → unified; tmpfs → v1, hybrid when /sys/fs/cgroup/unified is cgroup2).
public enum CgroupLayout: String, Sendable, Equatable {
    case unified = "v2", hybrid, legacy = "v1", none

    static let cgroup2Magic: UInt = 0x6367_7270
    static let cgroup1Magic: UInt = 0x0027_e0eb
    static let tmpfsMagic: UInt = 0x0102_1994

    static func magic(_ path: String) -> UInt? { FileSystem.magic(path) }

    public static func detect(root: String = "/sys/fs/cgroup") -> CgroupLayout {
        switch magic(root) {
        case cgroup2Magic: return .unified
        case tmpfsMagic?, cgroup1Magic?:
            return magic(root + "/unified") == cgroup2Magic ? .hybrid : .legacy
        default: return .none
        }
    }
}

/// One line of /proc/self/cgroup: `ID:controllers:path`.
public struct CgroupMembership: Sendable, Equatable {
    public var hierarchy: Int
    public var controllers: [String]
    public var path: String

    public static func parse(_ text: String) -> [CgroupMembership] {
        // Bytes, not Characters (split on Characters cost ~0.18 M instructions at every start).
        Array(text.utf8).split(separator: UInt8(ascii: "\n")).compactMap { line in
            let parts = line.split(separator: UInt8(ascii: ":"), maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, let id = Int(String(decoding: parts[0], as: UTF8.self)) else { return nil }
            let controllers = parts[1].split(separator: UInt8(ascii: ",")).map { String(decoding: $0, as: UTF8.self) }
            return CgroupMembership(hierarchy: id, controllers: controllers, path: String(decoding: parts[2], as: UTF8.self))
        }
    }
}

/// A cgroup mount from /proc/self/mountinfo.
public struct CgroupMount: Sendable, Equatable {
    public var mountPoint: String
    public var root: String
    public var version: Int
    public var controllers: [String]

    static let knownControllers: Set<String> = [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio",
        "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc",
    ]

    public static func parse(mountinfo: String) -> [CgroupMount] {
        // Bytes, not Characters: this runs on every start, and a host can have hundreds of mounts.
        var mounts: [CgroupMount] = []
        let cgroup = Array("cgroup".utf8)
        for line in Array(mountinfo.utf8).split(separator: UInt8(ascii: "\n")) {
            // Most mounts are not cgroups: skip a line without the word before splitting it.
            guard line.withUnsafeBufferPointer({ b in
                b.count >= 6 && (0...(b.count - 6)).contains { i in b[i] == cgroup[0] && b[i + 1] == cgroup[1] && memcmp(b.baseAddress! + i, cgroup, 6) == 0 }
            }) else { continue }
            let fields = line.split(separator: UInt8(ascii: " "))
            guard let dash = fields.firstIndex(where: { $0.count == 1 && $0.first == UInt8(ascii: "-") }),
                  dash >= 5, fields.count > dash + 3 else { continue }
            let fstype = String(decoding: fields[dash + 1], as: UTF8.self)
            guard fstype == "cgroup" || fstype == "cgroup2" else { continue }
            let superOptions = fields[dash + 3].split(separator: UInt8(ascii: ",")).map { String(decoding: $0, as: UTF8.self) }
            mounts.append(CgroupMount(
                mountPoint: unescape(String(decoding: fields[4], as: UTF8.self)),
                root: unescape(String(decoding: fields[3], as: UTF8.self)),
                version: fstype == "cgroup2" ? 2 : 1,
                controllers: superOptions.filter { knownControllers.contains($0) }))
        }
        return mounts
    }

    /// mountinfo escapes space, tab, newline and backslash as octal.
    static func unescape(_ s: String) -> String {
        // By bytes: String.contains compares Characters, ~2.4 K instructions a mount point.
        guard s.utf8.contains(UInt8(ascii: "\\")) else { return s }
        var out: [UInt8] = []
        let bytes = Array(s.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count,
               let v = UInt8(String(decoding: bytes[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The directory of the cgroup at `path` (from /proc/self/cgroup) in this mount.
    public func directory(for path: String) -> String {
        var relative = path
        if root != "/", relative.hasPrefix(root) { relative = String(relative.dropFirst(root.count)) }
        if relative == "/" { relative = "" }
        return mountPoint + relative
    }
}
