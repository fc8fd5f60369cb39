import CDgrunSpawn
#if canImport(Glibc)
import Glibc
#endif

/// Content versions of files: `sha256:<hex>`, through the system's libcrypto (loaded on demand).
public enum ContentHash {
    /// nil when the file cannot be read or libcrypto is missing.
    /// A directory's version is that of its sorted entry names: what a task that lists it sees.
    public static func version(of path: String) -> String? {
        var digest = [UInt8](repeating: 0, count: 32)
        let rc = dgrun_sha256_file(path, &digest)
        if rc == -EINVAL, FileIO.isDirectory(path) {
            return version(ofBytes: listingBytes(FileIO.listDirectory(path)))
        }
        guard rc == 0 else { return nil }
        return version(digest: digest)
    }

    /// The digest `version(of:)` gives a directory (the sha256 of its sorted names), nil when it
    /// cannot be listed (where `version(of:)` could not open it) or hashing is unavailable.
    public static func directoryDigest(of path: String) -> [UInt8]? {
        guard let names = FileIO.listDirectoryOrNil(path) else { return nil }
        let bytes = listingBytes(names)
        var digest = [UInt8](repeating: 0, count: 32)
        guard dgrun_sha256_bytes(bytes, bytes.count, &digest) == 0 else { return nil }
        return digest
    }

    static func listingBytes(_ names: [String]) -> [UInt8] {
        Array(names.sorted().joined(separator: "\0").utf8)
    }

    /// The version of a file a task wrote: a symbolic link is its own target text ("link:<hex>"),
    /// never what it points to. A task may point an output at a file only dgrun can read
    /// (/etc/shadow, another user's key): following it would put that file's digest in the graph,
    /// and its bytes in an output cache.
    public static func outputVersion(of path: String) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK else { return version(of: path) }
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = buffer.withUnsafeMutableBufferPointer { readlink(path, $0.baseAddress!, $0.count) }
        guard n >= 0, let digest = version(ofBytes: Array(buffer[0..<n])) else { return nil }
        return "link:" + digest.dropFirst("sha256:".count)
    }

    /// sha256 of a byte string, same format.
    public static func version(ofBytes bytes: [UInt8]) -> String? {
        var digest = [UInt8](repeating: 0, count: 32)
        guard dgrun_sha256_bytes(bytes, bytes.count, &digest) == 0 else { return nil }
        return version(digest: digest)
    }

    public static var isAvailable: Bool { dgrun_sha256_available() != 0 }
    /// Loads libcrypto on a thread of its own, for a caller that will hash soon (a traced run is
    /// recorded after it ends): the load (1.2 ms of dlopen and relocations here) then overlaps the
    /// steps before the launch, on the other CPU. Started at the launch instead, it delayed the
    /// command's exec by as much. A clone meanwhile is safe: the child side takes no lock of the
    /// loader's (lazy binding does not) and allocates nothing.
    /// Once loaded (a workspace's second task), nothing: no thread.
    public static func loadAhead() {
        guard dgrun_sha256_started() == 0 else { return }
        try? Threads.detach { _ = dgrun_sha256_available() }
    }

    /// Whether a hash was asked for and could not be made (no libcrypto): false while every
    /// version came from the memo, without loading the library to find out.
    public static var wasUnavailable: Bool { dgrun_sha256_missed() != 0 }

    /// A 32-byte sha256 digest in the version format, `sha256:<hex>`.
    public static func version(digest: [UInt8]) -> String {
        digest.withUnsafeBytes { version(digest: $0) }
    }

    static func version(digest: UnsafeRawBufferPointer) -> String {
        let prefix: StaticString = "sha256:"
        return String(unsafeUninitializedCapacity: prefix.utf8CodeUnitCount + digest.count * 2) { out in
            prefix.withUTF8Buffer { for (i, c) in $0.enumerated() { out[i] = c } }
            var at = prefix.utf8CodeUnitCount
            for b in digest {
                out[at] = hexDigit(b >> 4)
                out[at + 1] = hexDigit(b & 15)
                at += 2
            }
            return at
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        // Written in place: thousands of versions a discover; an array and a copy each was ~2 k
        // instructions a version.
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            for (i, b) in bytes.enumerated() {
                out[2 * i] = hexDigit(b >> 4)
                out[2 * i + 1] = hexDigit(b & 15)
            }
            return bytes.count * 2
        }
    }

    @inline(__always) static func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : 0x57 + v }
}

/// FNV-1a, 64 bits, as hex: short stable names for cache files, locks and history keys. Not a
/// content version: whatever it names is checked by other means (or is only a key).
public enum ShortHash {
    public static let seed: UInt64 = 0xcbf2_9ce4_8422_2325

    /// One step: callers that scan bytes themselves hash as they go.
    @inlinable public static func step(_ hash: UInt64, _ byte: UInt8) -> UInt64 { (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }

    public static func value<S: Sequence>(_ bytes: S) -> UInt64 where S.Element == UInt8 {
        // Contiguous bytes in a plain loop: the generic reduce, not specialised across modules,
        // cost 1.3 M instructions for a 4 KB seccomp profile, once per task of a workspace.
        if let hash = bytes.withContiguousStorageIfAvailable(value(buffer:)) { return hash }
        var h = seed
        for byte in bytes { h = step(h, byte) }
        return h
    }

    public static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        hex(value: value(bytes))
    }

    static func value(buffer: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h = seed
        for byte in buffer { h = step(h, byte) }
        return h
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        hex(value: bytes.withUnsafeBufferPointer(value(buffer:)))
    }

    /// A String's UTF-8 without the generic path: across modules that is unspecialised, and its
    /// first call made the runtime look up String.UTF8View's witnesses (~0.17 M instructions).
    public static func hex(_ text: String) -> String {
        var text = text
        return hex(value: text.withUTF8(value(buffer:)))
    }

    /// `String(value, radix: 16)`'s digits (lowercase, no leading zeros), which name files that
    /// outlive a dgrun (the BPF cache, task locks, history ids). That initialiser is generic and
    /// ran unspecialised here: its first call was ~25 µs of every sandboxed start.
    public static func hex(value: UInt64) -> String {
        let digits = max(1, (64 - value.leadingZeroBitCount + 3) / 4)
        return String(unsafeUninitializedCapacity: digits) { buffer in
            var rest = value
            for index in stride(from: digits - 1, through: 0, by: -1) {
                let nibble = UInt8(truncatingIfNeeded: rest & 0xf)
                buffer[index] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
                rest >>= 4
            }
            return digits
        }
    }
}

/// The host's memory that is free for new work (MemAvailable), nil when /proc/meminfo is unreadable.
public enum HostMemory {
    public static func available() -> UInt64? { CounterFiles.readOnce("/proc/meminfo", available(in:)) }

    /// MemAvailable in /proc/meminfo's bytes. One scan of the bytes for the one line: splitting
    /// all of it into Strings cost 640 k instructions, once per planned task of a workspace.
    public static func available(in bytes: UnsafeRawBufferPointer) -> UInt64? {
        CounterText.value(of: "MemAvailable", in: bytes).map { $0 * 1024 }
    }
}
