import CDgrunSpawn
import DgrunSpec
import DgrunStore
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The output cache a task uses: the local one and, when configured, a remote one. Every remote
/// failure becomes a warning (the task runs locally); a local failure the same: a cache never
/// fails a task.
public struct OutputCache: Sendable {
    public var local: LocalCache
    public var remote: RemoteCache?
    public var readOnly: Bool
    public var warn: @Sendable (String) -> Void

    /// The cache for `task` under `request`, or nil when it is off. Precedence: flag or
    /// environment (already in the request) > task.toml [cache] > the default.
    public static func resolve(_ request: CacheRequest, task: TaskFile?, warn: @escaping @Sendable (String) -> Void) -> OutputCache? {
        if request.off || (request.directory == nil && task?.cache.off == true) { return nil }
        guard let dir = request.directory ?? task?.cache.directory ?? FileSystem.cacheDirectory("cas") else { return nil }
        let readOnly = request.readOnly || task?.cache.readOnly == true
        var local = LocalCache(directory: dir)
        if let env = getenv("DGRUN_CACHE_MAX_SIZE"), let bytes = try? ByteSize.parse(String(cString: env)) { local.maxBytes = Int64(bytes) }
        var remote: RemoteCache? = nil
        if let url = request.url ?? task?.cache.url {
            let header = getenv("DGRUN_CACHE_HEADER").map { String(cString: $0) }.flatMap { try? RemoteCache.checkedHeader($0) }
            remote = RemoteCache(url: url, header: header, readOnly: readOnly)
        }
        return OutputCache(local: local, remote: remote, readOnly: readOnly, warn: warn)
    }

    public var remoteTraffic: RemoteCache.Traffic { remote?.traffic.withLock { $0 } ?? .init() }

    func remoteFailed(_ failure: RemoteCache.Failure, _ what: String, then: String = "the task runs locally") {
        if case .skipped = failure { return }
        warn("dgrun: warning: remote cache \(remote?.url ?? ""): \(what): \(failure); \(then)")
    }

    /// A manifest under KEY: the local one, else the remote one (kept locally).
    func action(_ key: String) -> (bytes: [UInt8], source: String)? {
        if let bytes = local.readAction(key) { return (bytes, "local cache") }
        guard let remote else { return nil }
        switch remote.get("/ac/" + key) {
        case .failure(let failure): remoteFailed(failure, "GET /ac/\(key)"); return nil
        case .success(nil): return nil
        case .success(let bytes?):
            try? local.writeAction(key, bytes)
            return (bytes, "remote cache \(remote.url)")
        }
    }

    public func inputs(taskKey: String) -> InputsManifest? {
        guard let found = action(taskKey), let manifest = ManifestJSON.decode(InputsManifest.self, found.bytes),
              manifest.schema == InputsManifest.schema, manifest.taskKey == taskKey else { return nil }
        return manifest
    }

    public func outputs(key: String) -> (manifest: OutputsManifest, source: String)? {
        guard let found = action(key) else { return nil }
        guard let manifest = ManifestJSON.decode(OutputsManifest.self, found.bytes), manifest.key == key,
              let valid = try? manifest.validated() else {
            warn("dgrun: warning: the cache entry \(key) (\(found.source)) is not a valid outputs manifest; refused and removed")
            unlink(local.actionPath(key))
            return nil
        }
        return (valid, found.source)
    }

    /// Every blob of the manifest in the local cache, fetched from the remote when missing, each
    /// checked against its digest on the way in. false (with a warning) when one cannot be had.
    public func fetchBlobs(_ manifest: OutputsManifest) -> Bool {
        for entry in manifest.entries where entry.type == "file" {
            let digest = entry.digest!
            if local.hasBlob(digest) { continue }
            guard let remote else { return false }
            let fd = dgrun_memfd("dgrun-blob")
            guard fd >= 0 else { return false }
            defer { close(fd) }
            // A body longer than the manifest's size is cut off: the digest check then refuses it.
            switch remote.get("/cas/" + digest, into: fd, maxBytes: max(1, entry.size ?? 0)) {
            case .failure(let failure): remoteFailed(failure, "GET /cas/\(digest)"); return false
            case .success(false):
                warn("dgrun: warning: remote cache \(remote.url): the blob \(digest) of \(entry.path) is missing; the task runs")
                return false
            case .success(true):
                lseek(fd, 0, SEEK_SET)
                do throws(DgrunError) { _ = try local.storeBlob(from: fd, expected: digest) } catch {
                    warn("dgrun: warning: remote cache \(remote.url): \(entry.path): \(error.message); the task runs")
                    return false
                }
            }
        }
        return true
    }

    /// After a successful run: the outputs' blobs and manifest under the action key, the inputs
    /// manifest under the task key, in the local cache; pushed to the remote unless read-only
    /// (read-only is the remote's: an untrusted run fills nobody's cache but its own machine's). Returns the outputs
    /// manifest's digest, nil when nothing was stored.
    public func store(taskKey: String, key: String, inputs: InputsManifest, outputs paths: [String], taskDirectory: String)
        -> OutputsManifest? {
        let manifest: OutputsManifest
        do {
            manifest = OutputsManifest(key: key, entries: try OutputFiles.collect(paths, taskDirectory: taskDirectory, into: local))
            try local.writeAction(key, ManifestJSON.encode(manifest))
            try local.writeAction(taskKey, ManifestJSON.encode(inputs))
        } catch {
            warn("dgrun: warning: the outputs were not cached: \(error.message)")
            return nil
        }
        if let maxBytes = local.maxBytes { local.pruneIfDue(maxBytes: maxBytes) }
        if let remote, !remote.readOnly {
            // Blobs first, the manifests last: a reader that finds a manifest finds its blobs.
            for entry in manifest.entries where entry.type == "file" {
                guard let bytes = try? FileIO.readBytes(local.blobPath(entry.digest!), limit: Int.max) else { continue }
                if case .failure(let failure) = remote.put("/cas/" + entry.digest!, bytes) {
                    remoteFailed(failure, "PUT /cas/\(entry.digest!)", then: "the outputs stay in the local cache only")
                    return manifest
                }
            }
            for (k, bytes) in [(key, ManifestJSON.encode(manifest)), (taskKey, ManifestJSON.encode(inputs))] {
                if case .failure(let failure) = remote.put("/ac/" + k, bytes) {
                    remoteFailed(failure, "PUT /ac/\(k)", then: "the outputs stay in the local cache only")
                    return manifest
                }
            }
        }
        return manifest
    }
}
