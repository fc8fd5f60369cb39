import CDgrunSpawn

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

    /// Parses the tracer's log: fixed headers, each followed by its variable parts.
    public static func parse(_ log: dgrun_trace_log) -> [TraceEvent] {
        guard let base = log.bytes, log.length > 0 else { return [] }
        let header = MemoryLayout<dgrun_trace_event>.size
        var events: [TraceEvent] = []
        var order: [(seq: UInt64, index: Int32)] = []
        var at = 0
        while at + header <= log.length {
            let e = UnsafeRawPointer(base + at).loadUnaligned(as: dgrun_trace_event.self)
            var p = at + header
            // A length past the end takes what is left: p never passes the end (fuzzing found that a
            // later part's count went negative once an earlier one had).
            func take(_ n: Int32) -> UnsafeBufferPointer<UInt8> {
                let n = min(Int(max(0, n)), log.length - p)
                defer { p += n }
                return UnsafeBufferPointer(start: base + p, count: n)
            }
            // Strings decoded from the log in place, and the (empty, for most calls) byte parts
            // only copied when there are bytes: two copies a path cost more than the rest.
            let path = take(e.path_len), path2 = take(e.path2_len), address = take(e.addr_len), data = take(e.data_len)
            at = p
            guard let kind = Kind(rawValue: e.kind) else { continue }
            order.append((e.seq, Int32(events.count)))
            events.append(TraceEvent(kind: kind, syscall: e.nr, pid: e.pid, existed: e.exists != 0, flags: e.flags,
                                     path: String(decoding: path, as: UTF8.self),
                                     path2: path2.isEmpty ? "" : String(decoding: path2, as: UTF8.self),
                                     address: address.isEmpty ? [] : Array(address), data: data.isEmpty ? [] : Array(data)))
        }
        // Serving threads log as they finish; the graph wants the order the calls were made in.
        // Stable, as the sort of the events was: equal seqs keep the log's order. The small
        // (seq, index) pairs are sorted, not the events.
        order.sort { $0.seq < $1.seq || ($0.seq == $1.seq && $0.index < $1.index) }
        if order.indices.allSatisfy({ order[$0].index == Int32($0) }) { return events }
        return order.map { events[Int($0.index)] }
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
