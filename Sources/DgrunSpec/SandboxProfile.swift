import FoundationEssentials
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// A sandbox profile: the security and isolation defaults of a run (profiles/*.json).
/// Flags on the command line override it. The format is documented in profiles/README.md.
public struct SandboxProfile: Sendable, Equatable {
    public enum Network: String, Sendable, CaseIterable { case host, none }
    /// Whether the task may create user namespaces of its own (clone, clone3 and unshare with
    /// CLONE_NEWUSER): the largest kernel surface an unprivileged process reaches, denied by default
    /// as Docker's profile does; a browser's own sandbox or a nested dgrun needs "allow".
    public enum UserNamespaces: String, Sendable, CaseIterable { case deny, allow }

    /// Kernel files bound read-only over themselves (OCI's readonlyPaths, runc's defaults): a task
    /// whose uid 0 is the host's could otherwise write /proc/sys/kernel/core_pattern, which the
    /// kernel runs as host root outside every namespace.
    public static let defaultReadonlyPaths = [
        "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
    ]
    /// Kernel files hidden behind an empty read-only file or directory (OCI's maskedPaths, runc's
    /// defaults and Docker's): kernel memory, keys, timers and firmware.
    public static let defaultMaskedPaths = [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    ]

    public var name: String
    public var description: String?
    /// Seccomp profile in OCI/Docker JSON, relative to this profile's directory; nil: no filter.
    public var seccomp: String?
    /// Capabilities kept (CAP_NET_BIND_SERVICE, ...); everything else is dropped.
    public var capabilities: [String]
    /// Network for `exec -- CMD` when --net is not given.
    public var network: Network
    /// Run the command in a new session (no controlling terminal: no TIOCSTI injection).
    public var newSession: Bool
    /// Start from an empty environment plus these variables from dgrun's (PATH, HOME, ...).
    public var clearEnv: Bool
    public var keepEnv: [String]
    /// Extra mounts.
    public var readonly: [String]
    public var writable: [String]
    public var tmpfs: [String]
    /// Paths inside the sandbox made read-only, and masked; a path that does not exist is skipped.
    public var readonlyPaths: [String]
    public var maskedPaths: [String]
    public var userNamespaces: UserNamespaces

    /// Where the profile was loaded from, to resolve `seccomp`.
    public var directory: String = ""

    static let keys = ["name", "description", "seccomp", "capabilities", "network", "readonly", "writable", "tmpfs",
                       "new_session", "clear_env", "keep_env", "readonly_paths", "masked_paths", "user_namespaces"]

    init(_ json: JSONValue) throws(DgrunError) {
        let c = try JSONObject(json)
        // A misspelt key ("masked_path") would silently weaken the sandbox: refuse it.
        if let unknown = c.unknownKey(known: Self.keys) {
            throw DgrunError("unknown key \"\(unknown)\" (known: \(Self.keys.joined(separator: ", ")))")
        }
        guard let name = try c.string("name") else { throw DgrunError("missing key \"name\"") }
        self.name = name
        description = try c.string("description")
        seccomp = try c.string("seccomp")
        capabilities = try c.strings("capabilities") ?? []
        network = try c.choice("network", Network.self) ?? .host
        newSession = try c.bool("new_session") ?? false
        clearEnv = try c.bool("clear_env") ?? false
        keepEnv = try c.strings("keep_env") ?? []
        readonly = try c.strings("readonly") ?? []
        writable = try c.strings("writable") ?? []
        tmpfs = try c.strings("tmpfs") ?? []
        // Absent: the safe defaults; a profile turns them off only by saying so (`[]`).
        readonlyPaths = try c.strings("readonly_paths") ?? Self.defaultReadonlyPaths
        maskedPaths = try c.strings("masked_paths") ?? Self.defaultMaskedPaths
        userNamespaces = try c.choice("user_namespaces", UserNamespaces.self) ?? .deny
        for path in readonlyPaths + maskedPaths where !path.hasPrefix("/") || path.split(separator: "/").contains("..") {
            throw DgrunError("readonly_paths and masked_paths take absolute paths inside the sandbox without \"..\" (got \"\(path)\")")
        }
    }

    /// The absolute path of the seccomp profile, or nil.
    public var seccompPath: String? {
        guard let seccomp else { return nil }
        return seccomp.hasPrefix("/") ? seccomp : directory + "/" + seccomp
    }

    /// Decodes a profile; errors name the file and what is wrong with it.
    public static func decode(_ bytes: [UInt8], path: String) throws(DgrunError) -> SandboxProfile {
        let json: JSONValue
        do { json = try JSONReader.parse(bytes) } catch {
            throw DgrunError("profile \(path) is not a valid dgrun profile: \(error.message)")
        }
        do {
            var profile = try SandboxProfile(json)
            // The path up to its last slash (split and joined the same, without the generic
            // joined(separator:) the runtime instantiates by name on first use).
            profile.directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ""
            if profile.directory.isEmpty { profile.directory = "." }
            for name in profile.capabilities {
                _ = try Capabilities.number(of: name)
            }
            return profile
        } catch {
            throw DgrunError("profile \(path): \(error.message)")
        }
    }
}

/// Finds profiles by name: $DGRUN_PROFILE_DIR, /etc/dgrun/profiles, the install prefix, and the
/// source tree the binary was built in (so a fresh clone works without installing).
public enum ProfileLocator {
    public static func searchDirectories(executable: String) -> [String] {
        var dirs: [String] = []
        forEachSearchDirectory(executable: executable) { dirs.append($0); return false }
        return dirs
    }

    /// The search directories in order, until `body` returns true. <prefix>/bin/dgrun →
    /// <prefix>/share/dgrun/profiles; <repo>/.build/.../dgrun → <repo>/profiles: each directory
    /// above the executable, the nearest first, then the root. The ancestors are cut from the
    /// path's bytes: split, reversed and joined are generic code the runtime instantiated on first
    /// use, ~0.1 ms of every sandboxed start.
    static func forEachSearchDirectory(executable: String, _ body: (String) -> Bool) {
        if let env = getenv("DGRUN_PROFILE_DIR"), body(String(cString: env)) { return }
        if body("/etc/dgrun/profiles") { return }
        // The executable's directory, with empty components (a doubled slash) dropped.
        var path: [UInt8] = []
        var component: [UInt8] = []
        for byte in executable.utf8 {
            if byte == UInt8(ascii: "/") {
                if !component.isEmpty { path.append(UInt8(ascii: "/")); path += component; component.removeAll(keepingCapacity: true) }
            } else {
                component.append(byte)
            }
        }
        while true {
            let base = String(decoding: path, as: UTF8.self)
            if body(base + "/share/dgrun/profiles") || body(base + "/profiles") { return }
            guard let slash = path.lastIndex(of: UInt8(ascii: "/")) else { return }
            path.removeSubrange(slash...)
        }
    }

    /// A NAME (looked up) or a FILE path (contains '/' or ends in .json).
    public static func locate(_ nameOrPath: String, executable: String) throws(DgrunError) -> String {
        if nameOrPath.contains("/") || nameOrPath.hasSuffix(".json") {
            guard FileIO.exists(nameOrPath) else { throw DgrunError("profile file \(nameOrPath) does not exist") }
            return nameOrPath
        }
        var found: String?
        forEachSearchDirectory(executable: executable) { dir in
            let candidate = dir + "/" + nameOrPath + ".json"
            if FileIO.exists(candidate) { found = candidate }
            return found != nil
        }
        if let found { return found }
        let dirs = searchDirectories(executable: executable)
        throw DgrunError("no profile named \"\(nameOrPath)\" (looked in \(dirs.prefix(4).joined(separator: ", ")), ...); give a path to a profile file or set DGRUN_PROFILE_DIR")
    }

    /// Each profile is read once per command: a workspace asks for it once per task.
    private static let loaded = Locked([String: SandboxProfile]())

    public static func load(_ nameOrPath: String, executable: String) throws(DgrunError) -> SandboxProfile {
        try loaded.cached(nameOrPath + "\u{0}" + executable) { () throws(DgrunError) in try read(nameOrPath, executable: executable) }
    }

    static func read(_ nameOrPath: String, executable: String) throws(DgrunError) -> SandboxProfile {
        let path = try locate(nameOrPath, executable: executable)
        let bytes: [UInt8]
        do { bytes = try FileIO.readBytes(path) } catch { throw DgrunError("cannot read profile: \(error)") }
        return try SandboxProfile.decode(bytes, path: path)
    }
}

/// Turns DecodingError into one line that says where in the file the problem is.
public enum JSONErrorText {
    public static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        func at(_ path: [any CodingKey]) -> String {
            path.isEmpty ? "at the top level" : "at " + path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let ctx): return "missing key \"\(key.stringValue)\" \(at(ctx.codingPath))"
        case .typeMismatch(let type, let ctx): return "expected \(type) \(at(ctx.codingPath))"
        case .valueNotFound(let type, let ctx): return "expected \(type) \(at(ctx.codingPath))"
        case .dataCorrupted(let ctx):
            let underlying = ctx.underlyingError.map { " (\($0))" } ?? ""
            return "\(ctx.debugDescription) \(at(ctx.codingPath))\(underlying)"
        @unknown default: return "\(error)"
        }
    }
}
