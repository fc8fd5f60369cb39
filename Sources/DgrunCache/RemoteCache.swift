import CDgrunSpawn
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// A remote cache over the Bazel HTTP remote-cache protocol: `GET`/`PUT BASE/ac/KEY` (dgrun's
/// JSON manifests) and `BASE/cas/SHA256` (blobs). Served by bazel-remote, BuildBuddy, nginx with
/// WebDAV (`dav_methods PUT; create_full_put_path on;`) and others. libcurl is loaded on first
/// use. Bounded: a connect timeout, a total timeout and one retry; every failure is an error the
/// caller turns into a warning (the task then runs locally).
public struct RemoteCache: Sendable {
    public var url: String
    /// One "Name: value" header (from $DGRUN_CACHE_HEADER), e.g. "Authorization: Bearer ...".
    public var header: String?
    public var readOnly: Bool
    public var connectMilliseconds = 2_000
    public var totalMilliseconds = 30_000
    public let traffic = Locked(Traffic())

    public struct Traffic: Sendable, Equatable {
        public var downloaded: Int64 = 0
        public var uploaded: Int64 = 0
    }

    public init(url: String, header: String?, readOnly: Bool) {
        self.url = url
        self.header = header
        self.readOnly = readOnly
    }

    public static var isAvailable: Bool { dgrun_http_available() != 0 }

    /// A "Name: value" header line, checked (no line breaks: it would smuggle more headers).
    public static func checkedHeader(_ text: String) throws(DgrunError) -> String {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex,
              !text.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) else {
            throw DgrunError("DGRUN_CACHE_HEADER must be one \"Name: value\" line, like \"Authorization: Bearer TOKEN\"")
        }
        return text
    }

    public enum Failure: Error, Sendable {
        /// libcurl is not there: the remote cache is off.
        case unavailable
        /// The server could not be reached, timed out, or answered with an error status.
        case failed(String)
        /// It failed earlier in this dgrun: not asked again (said once, not once per task).
        case skipped
        var text: String {
            switch self {
            case .unavailable: return "libcurl (libcurl.so.4) is not installed, so the remote cache is off (apt-get install libcurl4)"
            case .failed(let why): return why
            case .skipped: return "it failed earlier in this run"
            }
        }
    }

    /// The remotes that failed in this process: a server that is down costs its timeouts once per
    /// dgrun, not once per task and file.
    static let down = Locked(Set<String>())

    /// The most a manifest may be.
    public static let maxDocumentBytes: Int64 = 64 << 20

    func exchange(_ method: String, _ path: String, body: [UInt8], outfd: Int32, maxBytes: Int64 = 0) -> Result<Int, Failure> {
        if Self.down.withLock({ $0.contains(url) }) { return .failure(.skipped) }
        let target = url + path
        var lastError = ""
        for attempt in 0..<2 {
            if outfd >= 0 { _ = ftruncate(outfd, 0); _ = lseek(outfd, 0, SEEK_SET) }
            var status = 0
            var err = [CChar](repeating: 0, count: 512)
            let rc = body.withUnsafeBytes { raw in
                dgrun_http(method, target, header, raw.baseAddress, raw.count, outfd, maxBytes, connectMilliseconds, totalMilliseconds,
                           &status, &err, err.count)
            }
            let message = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if rc == -ENOSYS {
                Self.down.withLock { _ = $0.insert(url) }
                return .failure(.unavailable)
            }
            if rc == 0, status < 500 { return .success(status) }
            // Longer than it may be: this answer is refused, the server is not taken as down.
            if rc == -EFBIG { return .failure(.failed("\(method) \(target): \(message)")) }
            lastError = rc == 0 ? "\(method) \(target): HTTP \(status)" : "\(method) \(target): \(message)"
            if attempt == 0 { usleep(200_000) }
        }
        Self.down.withLock { _ = $0.insert(url) }
        return .failure(.failed(lastError))
    }

    /// The body of BASE/PATH into `fd` when it is there (200); false for a miss (404).
    public func get(_ path: String, into fd: Int32, maxBytes: Int64) -> Result<Bool, Failure> {
        switch exchange("GET", path, body: [], outfd: fd, maxBytes: maxBytes) {
        case .failure(let f): return .failure(f)
        case .success(let status):
            if status == 200 {
                var st = stat()
                if fstat(fd, &st) == 0 { traffic.withLock { $0.downloaded += Int64(st.st_size) } }
                return .success(true)
            }
            if status == 404 { return .success(false) }
            return .failure(.failed("GET \(url + path): HTTP \(status)"))
        }
    }

    /// A small document (a manifest) in memory; nil on a miss.
    public func get(_ path: String) -> Result<[UInt8]?, Failure> {
        let fd = dgrun_memfd("dgrun-get")
        guard fd >= 0 else { return .failure(.failed("memfd_create: \(String(cString: strerror(errno)))")) }
        defer { close(fd) }
        switch get(path, into: fd, maxBytes: Self.maxDocumentBytes) {
        case .failure(let f): return .failure(f)
        case .success(false): return .success(nil)
        case .success(true):
            lseek(fd, 0, SEEK_SET)
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                bytes += buffer[0..<n]
            }
            return .success(bytes)
        }
    }

    public func put(_ path: String, _ body: [UInt8]) -> Result<Void, Failure> {
        switch exchange("PUT", path, body: body, outfd: -1) {
        case .failure(let f): return .failure(f)
        case .success(let status):
            guard (200..<300).contains(status) else { return .failure(.failed("PUT \(url + path): HTTP \(status)")) }
            traffic.withLock { $0.uploaded += Int64(body.count) }
            return .success(())
        }
    }
}

extension RemoteCache.Failure: CustomStringConvertible {
    public var description: String { text }
}
