import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The host id range a `--userns auto` sandbox runs as: from /etc/subuid and /etc/subgid (an entry
/// for the user "dgrun", else for the caller, by name or number, as podman and shadow's
/// newuidmap read them), else the range dgrun reserves: 1879048192 (0x70000000) and the 65,535
/// after it, which systemd leaves unallocated. The block is shared by concurrent sandboxes, which
/// are kept apart by their pid and mount namespaces.
public struct SubordinateIDs: Sendable, Equatable {
    public static let reservedStart: UInt32 = 0x7000_0000
    public static let blockSize: UInt32 = 65536

    public var uid: UInt32
    public var gid: UInt32
    public var count: UInt32
    /// The caller's own ids: files it owns in a bound directory are root's inside.
    public var callerUID: UInt32
    public var callerGID: UInt32
    /// Where the range came from, for messages and the report.
    public var source: String

    public init(uid: UInt32, gid: UInt32, count: UInt32, callerUID: UInt32, callerGID: UInt32, source: String) {
        self.uid = uid
        self.gid = gid
        self.count = count
        self.callerUID = callerUID
        self.callerGID = callerGID
        self.source = source
    }

    /// The first usable `name:start:count` line of a subuid/subgid file for one of `owners`
    /// (in that order of preference); the count is capped at one block.
    public static func parse(_ text: String, owners: [String]) -> (start: UInt32, count: UInt32)? {
        var found: [String: (UInt32, UInt32)] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let trimmed = String(line).trimmingCharacters(in: " \t")
            if trimmed.hasPrefix("#") { continue }
            let fields = trimmed.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count == 3, let start = UInt32(fields[1]), let count = UInt32(fields[2]), count > 0,
                  start > 0, UInt64(start) + UInt64(count) <= UInt64(UInt32.max) else { continue }
            let owner = String(fields[0])
            if found[owner] == nil { found[owner] = (start, min(count, blockSize)) }
        }
        for owner in owners { if let hit = found[owner] { return hit } }
        return nil
    }

    /// The range for this caller (root: checked by the provisioner).
    public static func forCaller() -> SubordinateIDs {
        let uid = getuid(), gid = getgid()
        var owners = ["dgrun"]
        if let pw = getpwuid(uid), let name = pw.pointee.pw_name { owners.append(String(cString: name)) }
        owners.append(String(uid))
        let subuid = FileIO.readSmall("/etc/subuid").flatMap { parse($0, owners: owners) }
        let subgid = FileIO.readSmall("/etc/subgid").flatMap { parse($0, owners: owners) }
        if let subuid, let subgid {
            return SubordinateIDs(uid: subuid.start, gid: subgid.start, count: min(subuid.count, subgid.count),
                                  callerUID: uid, callerGID: gid, source: "/etc/subuid and /etc/subgid")
        }
        return SubordinateIDs(uid: reservedStart, gid: reservedStart, count: blockSize, callerUID: uid, callerGID: gid,
                              source: "dgrun's reserved range \(reservedStart)-\(reservedStart + blockSize - 1)")
    }
}
