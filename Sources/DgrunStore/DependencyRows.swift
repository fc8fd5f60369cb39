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
        var storedNodeID: String
    }
    /// In the canonical order; the same key twice keeps both, the later last (INSERT OR REPLACE).
    let rows: [Row]
    /// sha256 of every field of every row, in that order.
    let digest: String?

    init(_ dependencies: [Dependency], storedRef: (String) -> String, storedNodeID: (Dependency) -> String) {
        var rows: [Row] = []
        rows.reserveCapacity(dependencies.count)
        for (i, d) in dependencies.enumerated() {
            rows.append(Row(dependency: i, storedRef: storedRef(d.ref), storedNodeID: storedNodeID(d)))
        }
        // By bytes (memcmp), as SQLite's BINARY collation orders the key; stable, so that a key
        // seen twice keeps the trace's order.
        rows.sort { a, b in
            var c = Bytewise.compare(a.storedRef, b.storedRef)
            if c == 0 { c = Bytewise.compare(dependencies[a.dependency].relation.rawValue, dependencies[b.dependency].relation.rawValue) }
            if c == 0 { c = Bytewise.compare(a.storedNodeID, b.storedNodeID) }
            return c < 0
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(dependencies.count * 160)
        for row in rows {
            let d = dependencies[row.dependency]
            Self.append(row.storedRef, to: &bytes)
            Self.append(d.relation.rawValue, to: &bytes)
            Self.append(row.storedNodeID, to: &bytes)
            Self.append(d.kind, to: &bytes)
            if let version = d.version { bytes.append(1); Self.append(version, to: &bytes) } else { bytes.append(0) }
            if let f = d.fingerprint {
                bytes.append(1)
                for v in [f.size, f.mtimeNs, f.ctimeNs, Int64(bitPattern: f.inode), Int64(bitPattern: f.device)] { Self.append(v, to: &bytes) }
            } else {
                bytes.append(0)
            }
            Self.append(Int64(d.priority), to: &bytes)
            Self.append(d.costBytes, to: &bytes)
            bytes.append(d.traced ? 1 : 0)
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
