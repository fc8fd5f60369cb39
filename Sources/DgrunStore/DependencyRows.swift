import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// A run's dependency rows as the store writes them (refs and node ids in their stored form), in
/// one canonical order (ref, relation, node id, by bytes: the table's own key order) and with a
/// digest of every field. A re-run whose rows are the same as the recorded ones writes none of
/// them, as ninja's deps log skips an unchanged record: rewriting a pipeline's 8,000 rows was ~60
/// ms of its recording, most of it the WAL and the checkpoint that followed. The order is the
/// table's, not the trace's: a parallel task's events interleave differently on every run.
struct DependencyRows {
    struct Row {
        var dependency: Int
        var storedRef: String
        var relation: String
        var storedNodeID: String
    }
    /// In the canonical order; the same key twice keeps both, the later last (INSERT OR REPLACE).
    let rows: [Row]
    /// sha256 of every field of every row, in that order.
    let digest: String?

    init(_ dependencies: [Dependency], storedRef: (String) -> String, storedNodeID: (Dependency) -> String) {
        var made: [Row] = []
        made.reserveCapacity(dependencies.count)
        // Each row's key (ref, relation, node id, NUL between: none of them holds a NUL) in one
        // arena, sorted as indices by memcmp: sorting the rows themselves, three Strings each,
        // was 18 ms of retains for 8,000 rows.
        var keys: [UInt8] = [], starts: [Int] = []
        keys.reserveCapacity(dependencies.count * 80)
        starts.reserveCapacity(dependencies.count + 1)
        // Dependencies are read in place, not copied (a copy retains and releases five strings).
        for i in dependencies.indices {
            let row = Row(dependency: i, storedRef: storedRef(dependencies[i].ref), relation: dependencies[i].relation.rawValue,
                          storedNodeID: storedNodeID(dependencies[i]))
            starts.append(keys.count)
            keys.append(contentsOf: row.storedRef.utf8)
            keys.append(0)
            keys.append(contentsOf: row.relation.utf8)
            keys.append(0)
            keys.append(contentsOf: row.storedNodeID.utf8)
            made.append(row)
        }
        starts.append(keys.count)
        // The same key twice keeps the trace's order.
        let rows = ByteOrder.sortedIndices(arena: keys, starts: starts).map { made[$0] }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(dependencies.count * 160)
        for row in rows {
            let i = row.dependency
            Self.append(row.storedRef, to: &bytes)
            Self.append(row.relation, to: &bytes)
            Self.append(row.storedNodeID, to: &bytes)
            Self.append(dependencies[i].kind, to: &bytes)
            if let version = dependencies[i].version { bytes.append(1); Self.append(version, to: &bytes) } else { bytes.append(0) }
            if let f = dependencies[i].fingerprint {
                bytes.append(1)
                Self.append(f.size, to: &bytes)
                Self.append(f.mtimeNs, to: &bytes)
                Self.append(f.ctimeNs, to: &bytes)
                Self.append(Int64(bitPattern: f.inode), to: &bytes)
                Self.append(Int64(bitPattern: f.device), to: &bytes)
            } else {
                bytes.append(0)
            }
            Self.append(Int64(dependencies[i].priority), to: &bytes)
            Self.append(dependencies[i].costBytes, to: &bytes)
            bytes.append(dependencies[i].traced ? 1 : 0)
        }
        self.rows = rows
        self.digest = ContentHash.version(ofBytes: bytes)  // nil (no sha256 here): always written
    }

    static func append(_ text: String, to bytes: inout [UInt8]) {
        append(Int64(text.utf8.count), to: &bytes)
        bytes.append(contentsOf: text.utf8)
    }

    static func append(_ value: Int64, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}
