import CDgrunSpawn
#if canImport(Glibc)
import Glibc
#endif

/// One call the discovery tracer saw (see dgrun_trace.h), as it was when the call was made.
public struct TraceEvent: Sendable, Equatable {
    public enum Kind: Int32, Sendable { case open = 1, exec, lookup, modify, connect, bind }

    public var kind: Kind
    public var syscall: Int32
    public var pid: Int32
    /// The path existed (and `path` is canonical) before the call ran.
    public var existed: Bool
    public var flags: Int64
    public var path: String
    public var path2: String
    /// The raw sockaddr of connect/bind/sendto/sendmsg.
    public var address: [UInt8]
    /// The first bytes sent (sendto/sendmsg), for DNS queries.
    public var data: [UInt8]

    /// For a call that rewrites, truncates, removes or renames over a file the task had read
    /// earlier: the sha256 of that content, taken just before (the file is `path2` for a rename).
    public var replacedVersion: String? {
        guard kind == .open || kind == .modify, data.count == 32 else { return nil }
        return ContentHash.version(digest: data)
    }

    /// The syscall's name, for the graph's `traced:NAME` evidence.
    public var syscallName: String {
        dgrun_traced_syscall_name(syscall).map { String(cString: $0) } ?? "syscall-\(syscall)"
    }

    /// An open that can change the file: write access, create or truncate.
    public var writes: Bool {
        switch kind {
        case .modify: return true
        case .open: return flags & 0o3 != 0 || flags & 0o100 != 0 || flags & 0o1000 != 0  // O_WRONLY|O_RDWR, O_CREAT, O_TRUNC
        default: return false
        }
    }

    /// Parses the tracer's log (fixed headers, each followed by its variable parts) into its events
    /// in the order the calls were made; `excluding`: a path whose events are left out (the
    /// preloaded library, which the loader opens for dgrun, not for the task).
    public static func parse(_ log: dgrun_trace_log, excluding: String? = nil) -> [TraceEvent] {
        guard let base = log.bytes, log.length > 0 else { return [] }
        let header = MemoryLayout<dgrun_trace_event>.size
        // A length past the end takes what is left: p never passes the end (fuzzing found that a
        // later part's count went negative once an earlier one had).
        func take(_ n: Int32, at p: inout Int) -> UnsafeBufferPointer<UInt8> {
            let n = min(Int(max(0, n)), log.length - p)
            defer { p += n }
            return UnsafeBufferPointer(start: base + p, count: n)
        }
        // The headers first: serving threads log as they finish, and the graph wants the order
        // the calls were received in. Sorting the small (seq, offset) pairs and decoding in that
        // order makes each event once, where sorting (or filtering) decoded events copied each
        // one, retaining and releasing its four parts (make -j2: 2.8 ms of 15,000 events).
        var order: [(seq: UInt64, offset: Int)] = []
        var at = 0
        while at + header <= log.length {
            let e = UnsafeRawPointer(base + at).loadUnaligned(as: dgrun_trace_event.self)
            if Kind(rawValue: e.kind) != nil { order.append((e.seq, at)) }
            at += header
            // Past the variable parts, to the next header.
            _ = take(e.path_len, at: &at)
            _ = take(e.path2_len, at: &at)
            _ = take(e.addr_len, at: &at)
            _ = take(e.data_len, at: &at)
        }
        // Stable: equal seqs keep the log's order.
        if !order.indices.dropFirst().allSatisfy({ order[$0 - 1].seq <= order[$0].seq }) {
            order.sort { $0.seq < $1.seq || ($0.seq == $1.seq && $0.offset < $1.offset) }
        }
        let skipped = Array((excluding ?? "").utf8)
        var events: [TraceEvent] = []
        events.reserveCapacity(order.count)
        for (_, offset) in order {
            let e = UnsafeRawPointer(base + offset).loadUnaligned(as: dgrun_trace_event.self)
            var p = offset + header
            // Strings decoded from the log in place, and the (empty, for most calls) byte parts
            // only copied when there are bytes: two copies a path cost more than the rest.
            let path = take(e.path_len, at: &p), path2 = take(e.path2_len, at: &p)
            let address = take(e.addr_len, at: &p), data = take(e.data_len, at: &p)
            if !skipped.isEmpty, path.count == skipped.count, skipped.withUnsafeBufferPointer({ memcmp($0.baseAddress!, path.baseAddress!, path.count) == 0 }) {
                continue
            }
            events.append(TraceEvent(kind: Kind(rawValue: e.kind)!, syscall: e.nr, pid: e.pid, existed: e.exists != 0, flags: e.flags,
                                     path: String(decoding: path, as: UTF8.self),
                                     path2: path2.isEmpty ? "" : String(decoding: path2, as: UTF8.self),
                                     address: address.isEmpty ? [] : Array(address), data: data.isEmpty ? [] : Array(data)))
        }
        return events
    }
}

/// What the tracer recorded over a run.
public struct TraceResult: Sendable {
    public init(events: [TraceEvent], notifications: UInt64, lost: UInt64, supervisorSeconds: Double = 0, untrapped: UInt64 = 0) {
        self.events = events
        self.notifications = notifications
        self.untrapped = untrapped
        self.lost = lost
        self.supervisorSeconds = supervisorSeconds
    }
    public var events: [TraceEvent]
    public var notifications: UInt64
    /// Of those, the calls the preloaded fast path recorded without a trap.
    public var untrapped: UInt64 = 0
    /// Calls whose process died before they could be read.
    public var lost: UInt64
    /// CPU time the supervisor spent on the run: next to the run's wall time, how close it came
    /// to being what the traced processes wait on.
    public var supervisorSeconds: Double = 0
}
