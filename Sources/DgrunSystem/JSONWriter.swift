/// JSON written directly into one byte buffer: the graph (JSONEncoder took 107 ms for 8,235
/// nodes, the first version of this 24–28 ms, this one ~5 ms) and the store's small JSON columns.
public struct JSONWriter {
    /// The bytes, in a buffer of its own rather than an Array: `Array.append(contentsOf:)` cost
    /// ~90 instructions a call, and a large graph makes ~200,000 of them. The pointer and counts
    /// live in the struct (a class's stored properties are checked for exclusive access at run
    /// time, on every byte written); the class only frees the memory. Copied when a copy of the
    /// writer is written to, so that the writer is still a value.
    @usableFromInline final class Memory {
        @usableFromInline var base: UnsafeMutablePointer<UInt8>
        @usableFromInline init(_ base: UnsafeMutablePointer<UInt8>) { self.base = base }
        deinit { base.deallocate() }
    }

    @usableFromInline var base: UnsafeMutablePointer<UInt8>
    @usableFromInline var count = 0
    @usableFromInline var capacity: Int
    @usableFromInline var memory: Memory

    // @inlinable throughout: the graph's renderer calls these ~100,000 times for a large graph,
    // and across the module boundary each was an unspecialized call.
    @inlinable public init(capacity: Int = 1 << 20) {
        self.capacity = max(capacity, 16)
        base = .allocate(capacity: self.capacity)
        memory = Memory(base)
    }

    public var bytes: [UInt8] { withBytes { Array($0) } }

    public var text: String { withBytes { String(decoding: $0, as: UTF8.self) } }

    /// The bytes written so far, without a copy.
    @inlinable public func withBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        try withExtendedLifetime(memory) { try body(UnsafeBufferPointer(start: base, count: count)) }
    }

    /// Room for `n` more bytes, in a buffer no other copy of the writer shares.
    @inlinable mutating func reserve(_ n: Int) {
        if count + n <= capacity, isKnownUniquelyReferenced(&memory) { return }
        moveToNewBuffer(holding: count + n)
    }

    @usableFromInline mutating func moveToNewBuffer(holding needed: Int) {
        var size = capacity
        while size < needed { size *= 2 }
        let new = UnsafeMutablePointer<UInt8>.allocate(capacity: size)
        new.update(from: base, count: count)
        base = new
        capacity = size
        memory = Memory(new)  // the old buffer goes with the last copy that holds it
    }

    @inlinable mutating func append(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        reserve(bytes.count)
        (base + count).update(from: source, count: bytes.count)
        count += bytes.count
    }

    @inlinable mutating func append(_ byte: UInt8) {
        reserve(1)
        base[count] = byte
        count += 1
    }

    /// A literal, copied from the binary's constant bytes (no String made of it).
    @inlinable public mutating func literal(_ text: StaticString) {
        text.withUTF8Buffer { append($0) }
    }

    @inlinable public mutating func raw(_ text: String) {
        var text = text
        text.withUTF8 { append($0) }
    }

    @inlinable public mutating func indent(_ level: Int) {
        reserve(2 * level)
        for _ in 0..<(2 * level) {
            base[count] = UInt8(ascii: " ")
            count += 1
        }
    }

    @inlinable public mutating func key(_ name: String, indent level: Int) {
        indent(level)
        string(name)
        raw(" : ")
    }

    @inlinable public mutating func field(_ name: String, _ value: String, indent level: Int, last: Bool = false) {
        key(name, indent: level)
        string(value)
        raw(last ? "\n" : ",\n")
    }

    @inlinable public mutating func array<T>(_ items: [T], indent level: Int, _ element: (inout JSONWriter, T) -> Void) {
        guard !items.isEmpty else { return raw("[]") }
        raw("[\n")
        for i in items.indices {
            indent(level + 1)
            element(&self, items[i])
            raw(i == items.count - 1 ? "\n" : ",\n")
        }
        indent(level)
        append(UInt8(ascii: "]"))
    }

    /// A JSON string: quotes, backslashes and control characters escaped; everything else,
    /// slashes and non-ASCII included, as it is, copied in runs between the escapes.
    @inlinable public mutating func string(_ text: String) {
        // Native strings are contiguous: read in place, no copy of the string to make it so.
        if let done: Void = text.utf8.withContiguousStorageIfAvailable({ string(utf8: $0) }) { return done }
        var text = text
        text.withUTF8 { string(utf8: $0) }
    }

    @inlinable mutating func string(utf8: UnsafeBufferPointer<UInt8>) {
        reserve(utf8.count + 2)
        base[count] = UInt8(ascii: "\"")
        count += 1
        var i = Self.firstEscape(utf8, from: 0)
        if i == utf8.count, let source = utf8.baseAddress {
            // Nothing to escape (nearly every string): one copy into the room just reserved.
            (base + count).update(from: source, count: utf8.count)
            count += utf8.count
            base[count] = UInt8(ascii: "\"")
            count += 1
            return
        }
        var start = 0
        while i < utf8.count {
            append(UnsafeBufferPointer(rebasing: utf8[start..<i]))
            escape(utf8[i])
            start = i + 1
            i = Self.firstEscape(utf8, from: start)
        }
        append(UnsafeBufferPointer(rebasing: utf8[start...]))
        append(UInt8(ascii: "\""))
    }

    /// The index of the first byte from `start` that needs an escape (a control character, a
    /// quote or a backslash), or the count: eight bytes a step, as most strings have none.
    @inlinable static func firstEscape(_ b: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        var i = start
        if let base = b.baseAddress {
            let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
            while i + 8 <= b.count {
                let w = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
                // A zero byte in w - 0x20…, w ^ '"'…, w ^ '\'…: the classic "has a byte less than n".
                let control = (w &- ones &* 0x20) & ~w & highs
                let quote = ((w ^ (ones &* 0x22)) &- ones) & ~(w ^ (ones &* 0x22)) & highs
                let backslash = ((w ^ (ones &* 0x5C)) &- ones) & ~(w ^ (ones &* 0x5C)) & highs
                if control | quote | backslash != 0 { break }
                i += 8
            }
        }
        while i < b.count {
            let byte = b[i]
            if byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { return i }
            i += 1
        }
        return i
    }

    public mutating func escape(_ byte: UInt8) {
        switch byte {
        case UInt8(ascii: "\""): raw("\\\"")
        case UInt8(ascii: "\\"): raw("\\\\")
        case 0x0A: raw("\\n")
        case 0x0D: raw("\\r")
        case 0x09: raw("\\t")
        case 0x08: raw("\\b")
        case 0x0C: raw("\\f")
        default:
            let hex = Array("0123456789abcdef".utf8)
            raw("\\u00")
            append(hex[Int(byte >> 4)])
            append(hex[Int(byte & 15)])
        }
    }

    /// Whole numbers without a fraction (byte counts), others as Swift's shortest round-trip
    /// form; JSON has no infinity or NaN, so those are null.
    public mutating func number(_ value: Double) {
        if !value.isFinite {
            raw("null")
        } else if value == value.rounded(), abs(value) < 9.0e15 {
            raw(String(Int64(value)))
        } else {
            raw(String(value))
        }
    }
}
