import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Files a task takes from a URL ([fetch] in task.toml), kept in a content-addressed cache:
/// `CACHE/sha256/<hex>` holds each content once, `CACHE/urls/<key>` what the server said last
/// (ETag, Last-Modified, the content's hash). Each exec revalidates with a conditional GET (curl),
/// unless a pinned sha256 is already in the cache: pinned content cannot change.
public struct Fetcher: Sendable {
    public var cacheDirectory: String

    /// The task's copies are checked against the cache on every exec: remembered by stat, not
    /// hashed again each time (a dataset of gigabytes would be).
    let hashes: ContentHashCache

    public init(cacheDirectory: String = Fetcher.defaultCacheDirectory(), hashes: ContentHashCache? = nil) {
        self.cacheDirectory = cacheDirectory
        self.hashes = hashes ?? ContentHashCache(path: ContentHashCache.defaultPath())
    }

    /// $XDG_CACHE_HOME/dgrun/fetch, else ~/.cache/dgrun/fetch.
    public static func defaultCacheDirectory() -> String {
        FileSystem.cacheDirectory("fetch") ?? "/root/.cache/dgrun/fetch"
    }

    public enum Outcome: Sendable, Equatable {
        /// In place; what happened ("fetched", "not modified", "pinned copy", "offline: cached copy").
        case ready(String)
        case failed(why: String, remedy: String)
    }

    /// What the server said about a URL last time.
    struct Validators {
        var etag: String?
        var lastModified: String?
        var sha256: String?
    }

    public func provision(_ fetch: TaskFile.Fetch, in taskDirectory: String) -> Outcome {
        for dir in [cacheDirectory, cacheDirectory + "/sha256", cacheDirectory + "/urls"] { FileSystem.makeDirectories(dir) }
        let target = taskDirectory + "/" + fetch.path
        var known = readValidators(fetch.url)
        // A pinned checksum already in the cache: no request at all.
        if let pinned = fetch.sha256, FileIO.exists(blob(pinned)) {
            return place(blob(pinned), at: target, note: "pinned copy (sha256 \(pinned.prefix(12))…)")
        }
        let temporary = cacheDirectory + "/urls/.download-\(getpid())"
        let headers = temporary + ".headers"
        let errors = temporary + ".err"
        defer { unlink(temporary); unlink(headers); unlink(errors) }
        var argv = ["curl", "--silent", "--show-error", "--location", "--fail", "--max-time", "120",
                    "--output", temporary, "--dump-header", headers]
        // Revalidate only a cached copy that could satisfy the pin (or when nothing is pinned).
        var cached: String? = nil
        if let hex = known.sha256, fetch.sha256 == nil || fetch.sha256 == hex, FileIO.exists(blob(hex)) { cached = blob(hex) }
        if cached != nil {
            if let etag = known.etag { argv += ["--header", "If-None-Match: \(etag)"] }
            if let date = known.lastModified { argv += ["--header", "If-Modified-Since: \(date)"] }
        }
        argv.append(fetch.url)
        let status: Int32
        do { status = Subprocess.wait(try Subprocess.spawn(argv, stdout: "/dev/null", stderr: errors)) } catch {
            return .failed(why: "cannot run curl to fetch \(fetch.url): \(error)", remedy: "install curl")
        }
        let problem = (FileIO.readSmall(errors) ?? "").trimmingCharacters(in: " \n")
        guard status == 0 else {
            if let cached {
                return place(cached, at: target, note: "offline: using the cached copy (\(problem.isEmpty ? "curl exit \(status)" : problem))")
            }
            return .failed(why: "cannot fetch \(fetch.url): \(problem.isEmpty ? "curl exit \(status)" : problem)",
                           remedy: "check the URL and the network; nothing is cached for it yet")
        }
        let response = Self.parse(headers: FileIO.readSmall(headers) ?? "")
        if response.code == 304, let cached {
            return place(cached, at: target, note: "not modified")
        }
        guard let version = ContentHash.version(of: temporary) else {
            return .failed(why: "cannot hash the download of \(fetch.url)", remedy: "install libssl3 (libcrypto)")
        }
        let hex = String(version.dropFirst("sha256:".count))
        if let expected = fetch.sha256, expected != hex {
            return .failed(why: "checksum mismatch for \(fetch.url): expected sha256 \(expected), got \(hex)",
                           remedy: "the content changed on the server: check it, then update sha256 in task.toml")
        }
        if !FileIO.exists(blob(hex)) {
            guard rename(temporary, blob(hex)) == 0 else {
                return .failed(why: "cannot store \(blob(hex)): \(String(cString: strerror(errno)))", remedy: "check the cache directory")
            }
        }
        known = Validators(etag: response.etag, lastModified: response.lastModified, sha256: hex)
        writeValidators(known, for: fetch.url)
        return place(blob(hex), at: target, note: "fetched")
    }

    func blob(_ hex: String) -> String { cacheDirectory + "/sha256/" + hex }

    func key(_ url: String) -> String {
        cacheDirectory + "/urls/" + ShortHash.hex(url)
    }

    func readValidators(_ url: String) -> Validators {
        var v = Validators()
        guard let text = FileIO.readSmall(key(url)) else { return v }
        var matches = false
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon], value = String(line[line.index(after: colon)...]).trimmingCharacters(in: " ")
            switch name {
            case "url": matches = value == url
            case "etag": v.etag = value
            case "last-modified": v.lastModified = value
            case "sha256": v.sha256 = value
            default: break
            }
        }
        return matches ? v : Validators()
    }

    func writeValidators(_ v: Validators, for url: String) {
        var text = "url: \(url)\n"
        if let etag = v.etag { text += "etag: \(etag)\n" }
        if let date = v.lastModified { text += "last-modified: \(date)\n" }
        if let sum = v.sha256 { text += "sha256: \(sum)\n" }
        let path = key(url)
        if (try? FileIO.write(path + ".tmp", text, create: true)) != nil { rename(path + ".tmp", path) }
    }

    /// The status code and validators of the last response (curl follows redirects).
    static func parse(headers: String) -> (code: Int?, etag: String?, lastModified: String?) {
        var code: Int?, etag: String?, lastModified: String?
        for raw in headers.split(whereSeparator: \.isNewline) {  // "\r\n" is one Character
            let line = String(raw).trimmingCharacters(in: "\r ")
            if line.hasPrefix("HTTP/") {
                code = line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
                etag = nil
                lastModified = nil
            } else if let colon = line.firstIndex(of: ":") {
                let name = line[..<colon].lowercased()
                let value = String(line[line.index(after: colon)...]).trimmingCharacters(in: " ")
                if name == "etag" { etag = value }
                if name == "last-modified" { lastModified = value }
            }
        }
        return (code, etag, lastModified)
    }

    /// Copies the cached content to the task's path unless it is already there (same hash), so an
    /// unchanged fetch leaves the file, and the task's up-to-date state, alone. A copy, not a link:
    /// the task may edit its file, never the cache.
    func place(_ source: String, at target: String, note: String) -> Outcome {
        let hex = String(source.split(separator: "/").last ?? "")
        let present = hashes.version(of: target, now: Clock.now())
        hashes.save()
        if present == "sha256:" + hex { return .ready(note) }
        let parent = String(target[..<(target.lastIndex(of: "/") ?? target.endIndex)])
        FileSystem.makeDirectories(parent)
        let temporary = target + ".dgrun-\(getpid())"
        do {
            try FileSystem.copy(source, to: temporary)
            _ = try valueOrErrno("rename", path: target) { rename(temporary, target) }
        } catch {
            unlink(temporary)
            return .failed(why: "cannot write \(target): \(error)", remedy: "check that the task directory is writable")
        }
        return .ready(note)
    }
}
