import DgrunStore
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The real host: stat, sha256, a short connect to services, /proc/meminfo.
public struct HostEnvironment: PlanEnvironment {
    /// How long a service may take to accept a connection before it counts as unavailable.
    public var connectTimeoutMilliseconds: Int32

    public init(connectTimeoutMilliseconds: Int32 = 1000) { self.connectTimeoutMilliseconds = connectTimeoutMilliseconds }

    public func fingerprint(_ path: String) -> FileFingerprint? { Fingerprints.of(path) }
    public func fingerprint(cPath: UnsafePointer<CChar>) -> FileFingerprint? { Fingerprints.of(cPath: cPath) }

    public func openDirectory(cPath: UnsafePointer<CChar>) -> Int32? {
        let fd = open(cPath, Self.openPath | O_DIRECTORY | O_CLOEXEC)
        return fd >= 0 ? fd : nil
    }

    public func fingerprint(directory: Int32, name: UnsafePointer<CChar>) -> FileFingerprint? {
        Fingerprints.of(directory: directory, name: name)
    }

    public func closeDirectory(_ fd: Int32) { close(fd) }

    /// O_PATH (Linux's, not exported by Glibc's module): a handle for lookups, nothing read.
    static let openPath: Int32 = 0o10000000

    public func contentVersion(_ path: String) -> String? { ContentHash.version(of: path) }

    public func outputVersion(_ path: String) -> String? { ContentHash.outputVersion(of: path) }

    public func unreachable(_ uri: String) -> String? {
        if uri.hasPrefix("dns:") { return ServiceProbe.resolve(String(uri.dropFirst(4))) }
        if uri.hasPrefix("unix:") { return ServiceProbe.connectUnix(String(uri.dropFirst(5))) }
        if uri.hasPrefix("tcp://") { return ServiceProbe.connectTCP(String(uri.dropFirst(6)), timeoutMilliseconds: connectTimeoutMilliseconds) }
        return nil
    }

    public func memoryAvailableBytes() -> Int64? { HostMemory.available().map { Int64($0) } }

    public func cpuCount() -> Int { DgrunSystem.ProcessInfo.cpuCount }
}

public enum Fingerprints {
    /// stat(2) of a path (following symlinks: refs are canonical); nil when it does not exist.
    /// Directories get size -1 (see FileFingerprint.isDirectory).
    public static func of(_ path: String) -> FileFingerprint? {
        path.withCString { of(cPath: $0) }
    }

    public static func of(cPath path: UnsafePointer<CChar>) -> FileFingerprint? {
        of(directory: AT_FDCWD, name: path)
    }

    /// `name` looked up from an open directory, as stat(2) would (the final link followed).
    public static func of(directory: Int32, name: UnsafePointer<CChar>) -> FileFingerprint? {
        var st = stat()
        guard fstatat(directory, name, &st, 0) == 0 else { return nil }
        return of(st)
    }

    /// The fingerprint of a stat already taken (a graph builder's).
    public static func of(_ st: stat) -> FileFingerprint {
        let isDirectory = (st.st_mode & S_IFMT) == S_IFDIR
        return FileFingerprint(size: isDirectory ? -1 : Int64(st.st_size),
                               mtimeNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                               ctimeNs: Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec),
                               inode: UInt64(st.st_ino), device: UInt64(st.st_dev))
    }

    /// A fingerprint worth remembering: not one taken within the file system's timestamp
    /// granularity of the last write, when a further write could leave every field the same
    /// (git's "racy clean" problem). Such a file is hashed at the next check instead.
    public static func settled(_ path: String, now: Double) -> FileFingerprint? {
        of(path).flatMap { settled($0, now: now) }
    }

    /// The same test of a stat already taken.
    public static func settled(_ f: FileFingerprint, now: Double) -> FileFingerprint? {
        let modified = Double(max(f.mtimeNs, f.ctimeNs)) / 1e9
        return now - modified < 0.05 ? nil : f
    }
}

/// Short liveness checks of the services a task reached.
enum ServiceProbe {
    /// "host:port" or "[v6]:port"; nil when a TCP connection is accepted within the timeout.
    static func connectTCP(_ authority: String, timeoutMilliseconds: Int32) -> String? {
        guard let colon = authority.lastIndex(of: ":"), let port = UInt16(authority[authority.index(after: colon)...]) else {
            return "not a host:port"
        }
        var host = String(authority[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else { return "cannot resolve \(host): \(String(cString: gai_strerror(rc)))" }
        defer { freeaddrinfo(list) }
        var failure = "no address"
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let a = entry {
            if let problem = connect(family: a.pointee.ai_family, address: a.pointee.ai_addr, length: a.pointee.ai_addrlen,
                                     timeoutMilliseconds: timeoutMilliseconds) {
                failure = problem
            } else {
                return nil
            }
            entry = a.pointee.ai_next
        }
        return failure
    }

    static func connect(family: Int32, address: UnsafePointer<sockaddr>, length: socklen_t, timeoutMilliseconds: Int32) -> String? {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "socket: \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        if Glibc.connect(fd, address, length) == 0 { return nil }
        guard errno == EINPROGRESS else { return "connect: \(String(cString: strerror(errno)))" }
        var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&poller, 1, timeoutMilliseconds)
        if ready == 0 { return "no answer within \(timeoutMilliseconds) ms" }
        var error: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size)
        return error == 0 ? nil : "connect: \(String(cString: strerror(error)))"
    }

    static func connectUnix(_ path: String) -> String? {
        if path.hasPrefix("@") { return nil }  // abstract sockets live in a network namespace; not checkable from here
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "socket: \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return "path too long" }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc == 0 { return nil }
        // A socket that does not speak stream (a datagram socket) still exists and is served.
        if errno == EPROTOTYPE { return nil }
        return "connect: \(String(cString: strerror(errno)))"
    }

    static func resolve(_ name: String) -> String? {
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(name, nil, nil, &list)
        if rc == 0 { freeaddrinfo(list); return nil }
        return "cannot resolve: \(String(cString: gai_strerror(rc)))"
    }
}
