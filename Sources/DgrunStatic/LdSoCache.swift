import DgrunSystem

/// /etc/ld.so.cache as ldconfig writes it ("glibc-ld.so.cache1.1", optionally after the old
/// "ld.so-1.7.0" table): library name → path, for this machine's architecture.
public struct LdSoCache: Sendable {
    public private(set) var entries: [String: String] = [:]

    static let newMagic = Array("glibc-ld.so.cache1.1".utf8)
    static let oldMagic = Array("ld.so-1.7.0".utf8)
    /// FLAG_ELF_LIBC6 | FLAG_X8664_LIB64: the entries x86-64 programs use.
    static let x8664Flags: Int32 = 0x0303

    public init(entries: [String: String] = [:]) { self.entries = entries }

    public static func load(path: String = "/etc/ld.so.cache") -> LdSoCache {
        guard let bytes = try? FileIO.readBytes(path) else { return LdSoCache() }
        return parse(bytes)
    }

    public static func parse(_ bytes: [UInt8]) -> LdSoCache {
        bytes.withUnsafeBytes { parse($0) }
    }

    static func parse(_ b: UnsafeRawBufferPointer) -> LdSoCache {
        let r = Reader(bytes: b)
        var start = 0
        if b.count >= oldMagic.count && b.prefix(oldMagic.count).elementsEqual(oldMagic) {
            // Old header: magic (11) + pad to 12, nlibs (4); entries of 12 bytes; then the new table, 8-aligned.
            let count = Int(r.u32(12))
            start = (16 + count * 12 + 7) & ~7
        }
        guard start + 48 <= b.count, b[start..<start + newMagic.count].elementsEqual(newMagic) else { return LdSoCache() }
        let count = Int(r.u32(start + 20))
        var cache = LdSoCache()
        // Header: magic 20, nlibs 4, len_strings 4, flags 1, pad 3, extension offset 4, unused 12 = 48.
        for i in 0..<count {
            let at = start + 48 + i * 24
            guard at + 24 <= b.count else { break }
            let flags = Int32(bitPattern: r.u32(at))
            guard flags == x8664Flags else { continue }
            // String offsets in the new format count from the start of the new table.
            let key = r.cString(start + Int(r.u32(at + 4)), limit: 4096)
            let value = r.cString(start + Int(r.u32(at + 8)), limit: 4096)
            if cache.entries[key] == nil { cache.entries[key] = value }  // the first entry wins, as in ld.so
        }
        return cache
    }
}
