import CSeccomp
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Compiled BPF programs, keyed by the exact profile bytes (crun caches its BPF the same way).
/// Decoding the JSON and compiling it with libseccomp is a third of what dgrun does at start-up;
/// a cache entry stores the profile and libseccomp's version beside the program, and is used only
/// when both match byte for byte, so a hash collision can never load the wrong filter.
public enum SeccompCache {
    /// Version 2: programs are binary trees (SeccompCompiler.optimizeAsTree); version-1 entries,
    /// linear programs, are compiled again rather than used.
    static let magic = Array("dgrun-bpf-2\n".utf8)

    public static func directory() -> String? { FileSystem.cacheDirectory("seccomp") }

    static func libraryVersion() -> String {
        guard let v = seccomp_version() else { return "?" }
        return "\(v.pointee.major).\(v.pointee.minor).\(v.pointee.micro)"
    }

    /// FNV-1a: only a file name; the entry itself is checked byte for byte. The format's version is
    /// in it, so that dgruns of two versions on one machine do not overwrite each other's entries.
    static func fileName(for profile: [UInt8]) -> String {
        ShortHash.hex(magic + profile) + ".bpf"
    }

    static func header(for profile: [UInt8]) -> [UInt8] {
        magic + Array("\(libraryVersion()) \(profile.count)\n".utf8) + profile
    }

    /// The user-namespace filter (`SeccompCompiler.userNamespaceGuard`), cached as a profile's is
    /// (under a key no profile file can have: it is not JSON): compiling it started libseccomp,
    /// whose feature probes and export took ~65 µs of every sandboxed start.
    public static func userNamespaceGuard() throws(DgrunError) -> [UInt8] {
        try guardProgram.get()
    }
    static let guardKey = Array("dgrun: user-namespace guard\n".utf8)
    static let guardProgram: Result<[UInt8], DgrunError> = Result { () throws(DgrunError) in
        try cachedProgram(key: guardKey) { () throws(DgrunError) in try SeccompCompiler.userNamespaceGuard() }
    }

    /// The BPF program for the seccomp profile at `path`: from the cache, or compiled and cached.
    /// Each program is looked up once per command: a workspace asks once per task.
    private static let programs = Locked([String: [UInt8]]())

    public static func program(path: String) throws(DgrunError) -> [UInt8] {
        try programs.cached(path) { () throws(DgrunError) in try lookUp(path: path) }
    }

    static func lookUp(path: String) throws(DgrunError) -> [UInt8] {
        let profile: [UInt8]
        do { profile = try FileIO.readBytes(path) } catch { throw DgrunError("cannot read seccomp profile: \(error)") }
        return try cachedProgram(key: profile) { () throws(DgrunError) in
            try SeccompCompiler.compile(SeccompProfile.decode(profile, path: path), path: path)
        }
    }

    /// The program cached for `key` (a profile's bytes), or `compile`'s, then cached.
    static func cachedProgram(key: [UInt8], compile: () throws(DgrunError) -> [UInt8]) throws(DgrunError) -> [UInt8] {
        let entry = directory().map { $0 + "/" + fileName(for: key) }
        let expected = header(for: key)
        if let entry, let cached = try? FileIO.readBytes(entry), cached.count > expected.count,
           cached.starts(with: expected), (cached.count - expected.count) % 8 == 0 {
            return Array(cached[expected.count...])
        }
        let program = try compile()
        // Best effort: a cache that cannot be written only costs time.
        if let entry { FileSystem.replaceCache(entry, with: expected + program, mode: 0o600, directoryMode: 0o700) }
        return program
    }
}
