import DgrunSystem

/// What a caller asks of the output cache (issue 12). Precedence: a flag, then the environment
/// (DGRUN_CACHE_URL, DGRUN_CACHE_READ_ONLY), then task.toml's [cache], then the default (the
/// local cache in $XDG_CACHE_HOME/dgrun/cas, no remote).
public struct CacheRequest: Sendable, Equatable {
    /// --cache off: neither restore nor store.
    public var off = false
    /// --cache DIR (absolute).
    public var directory: String?
    /// --cache-url URL or $DGRUN_CACHE_URL: a Bazel HTTP remote cache (GET/PUT /ac/KEY, /cas/SHA256).
    public var url: String?
    /// --cache-read-only or $DGRUN_CACHE_READ_ONLY=1: restore, never store (untrusted pull requests).
    public var readOnly = false

    public init() {}

    /// An http:// or https:// URL without a query or fragment, its trailing slashes removed.
    public static func checkedURL(_ text: String, what: String) throws(DgrunError) -> String {
        var url = text
        while url.hasSuffix("/") { url.removeLast() }
        let scheme = url.hasPrefix("http://") ? 7 : url.hasPrefix("https://") ? 8 : 0
        guard scheme > 0, url.count > scheme, !url.contains(where: { $0 == " " || $0 == "?" || $0 == "#" || $0.isNewline }),
              !url.dropFirst(scheme).hasPrefix("/") else {
            throw DgrunError("\(what) \"\(text)\" is not a cache URL: give http://HOST[:PORT][/PREFIX] or https://...")
        }
        return url
    }
}

/// A task's [cache] table: dir, url, read_only.
public struct TaskCacheSettings: Sendable, Equatable {
    /// Absolute (a relative dir is the task directory's).
    public var directory: String?
    public var off = false
    public var url: String?
    public var readOnly: Bool?
    public init() {}
}
