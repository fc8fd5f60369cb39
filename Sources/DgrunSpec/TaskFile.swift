import DgrunSystem

/// A task directory's task.toml (the contract of the design notes). Unknown keys are errors, so
/// that a typo never silently drops a limit.
public struct TaskFile: Sendable {
    public var directory: String
    public var name: String
    /// `command = [...]`, or `run = "..."` as ["/bin/sh", "-c", run].
    public var argv: [String]
    public var workdir: String
    public var env: [(key: String, value: String)]
    public var inputs: [String]
    public var outputs: [String]
    /// [limits], validated when the file is read.
    public var memoryBytes: UInt64?
    public var cpus: Double?
    public var pids: Int?
    public var timeoutSeconds: Double?
    public var profile: String?
    public var network: SandboxProfile.Network?
    public var priority: Int
    /// [fetch]: files of the task directory that come from a URL, each with an optional checksum.
    public var fetches: [Fetch] = []
    /// [services] wait: how long to wait for an unavailable service before the run is blocked.
    public var serviceWaitSeconds: Double?
    /// [ci] require: the sandbox layers `dgrun ci` must have for this task (never less than these).
    public var ciRequire: [String] = []
    /// [cache]: where this task's outputs are cached (dir, or "off"), a remote (url), read_only.
    public var cache = TaskCacheSettings()

    /// The layers [ci] require and `dgrun ci --require` name.
    public static let sandboxLayers = ["limits", "seccomp", "userns", "network", "confine"]

    public struct Fetch: Sendable, Equatable {
        /// Relative to the task directory.
        public var path: String
        public var url: String
        /// Expected sha256 (hex) of the content; a download that differs is refused.
        public var sha256: String?
    }

    /// Loads DIR/task.toml; every error names the file and what to fix.
    public static func load(directory: String) throws(DgrunError) -> TaskFile {
        guard let dir = FileIO.realPath(directory), FileIO.isDirectory(dir) else {
            throw DgrunError("\(directory) is not a directory")
        }
        let path = dir + "/task.toml"
        guard FileIO.exists(path) else {
            throw DgrunError("\(directory) has no task.toml (a task directory needs one; see README, \"Task directories\")")
        }
        let text: String
        do { text = try FileIO.read(path) } catch { throw DgrunError("cannot read \(path): \(error)") }
        do {
            return try parse(text, directory: dir)
        } catch {
            throw DgrunError("\(path): \(error.message)")
        }
    }

    static let topLevelKeys: Set<String> = ["command", "run", "workdir", "env", "inputs", "outputs", "priority", "limits", "sandbox",
                                            "fetch", "services", "ci", "cache"]
    static let limitKeys: Set<String> = ["memory", "cpus", "pids", "timeout"]
    static let sandboxKeys: Set<String> = ["profile", "network"]
    static let fetchKeys: Set<String> = ["url", "sha256"]
    static let serviceKeys: Set<String> = ["wait"]
    static let ciKeys: Set<String> = ["require"]
    static let cacheKeys: Set<String> = ["dir", "url", "read_only"]

    public static func parse(_ text: String, directory: String) throws(DgrunError) -> TaskFile {
        let root = try TOMLSubset.parse(text)
        /// A value's error, prefixed with where the key is written.
        func at<T>(_ table: TOMLTable, _ key: String, _ body: () throws(DgrunError) -> T) throws(DgrunError) -> T {
            do throws(DgrunError) { return try body() } catch {
                throw DgrunError((table.place(of: key).map { $0 + ": " } ?? "") + error.message, code: error.code)
            }
        }
        try checkKeys(root, allowed: topLevelKeys, in: nil)
        var task = TaskFile(directory: directory, name: String(directory.split(separator: "/").last ?? "task"),
                            argv: [], workdir: ".", env: [], inputs: [], outputs: [], priority: 0)
        switch (root["command"], root["run"]) {
        case (.some, .some): throw DgrunError("give either command or run, not both")
        case (nil, nil): throw DgrunError("missing command = [\"prog\", \"arg\"] or run = \"shell line\"")
        case (let command?, nil):
            task.argv = try strings(command, key: "command")
            if task.argv.isEmpty { throw DgrunError("command is empty") }
        case (nil, let run?):
            task.argv = ["/bin/sh", "-c", try string(run, key: "run")]
        }
        if let value = root["workdir"] {
            task.workdir = try string(value, key: "workdir")
            if task.workdir.hasPrefix("/") { throw DgrunError("workdir must be relative to the task directory") }
        }
        if let value = root["env"] {
            guard case .table(let table) = value else { throw DgrunError("env must be a table, like env = { LANG = \"C.UTF-8\" }") }
            for key in table.keys { task.env.append((key, try string(table[key]!, key: "env.\(key)"))) }
        }
        if let value = root["inputs"] { task.inputs = try strings(value, key: "inputs") }
        if let value = root["outputs"] { task.outputs = try strings(value, key: "outputs") }
        if let value = root["priority"] { task.priority = try integer(value, key: "priority") }
        if let value = root["limits"] {
            guard case .table(let limits) = value else { throw DgrunError("limits must be a [limits] table") }
            try checkKeys(limits, allowed: limitKeys, in: "limits")
            if let v = limits["memory"] {
                task.memoryBytes = try at(limits, "memory") { () throws(DgrunError) in
                    try ByteSize.parse(try string(v, key: "limits.memory"))
                }
            }
            if let v = limits["cpus"] {
                task.cpus = try at(limits, "cpus") { () throws(DgrunError) -> Double in
                    switch v {
                    case .float(let d) where d > 0: return d
                    case .integer(let i) where i > 0: return Double(i)
                    default: throw DgrunError("limits.cpus must be a positive number, like 1.5")
                    }
                }
            }
            if let v = limits["pids"] {
                task.pids = try at(limits, "pids") { () throws(DgrunError) -> Int in
                    let n = try integer(v, key: "limits.pids")
                    guard n >= 1 else { throw DgrunError("limits.pids must be at least 1") }
                    return n
                }
            }
            if let v = limits["timeout"] {
                task.timeoutSeconds = try at(limits, "timeout") { () throws(DgrunError) in
                    try DurationText.parse(try string(v, key: "limits.timeout"))
                }
            }
        }
        if let value = root["sandbox"] {
            guard case .table(let sandbox) = value else { throw DgrunError("sandbox must be a [sandbox] table") }
            try checkKeys(sandbox, allowed: sandboxKeys, in: "sandbox")
            if let v = sandbox["profile"] { task.profile = try string(v, key: "sandbox.profile") }
            if let v = sandbox["network"] {
                task.network = try at(sandbox, "network") { () throws(DgrunError) in
                    let text = try string(v, key: "sandbox.network")
                    guard let network = SandboxProfile.Network(rawValue: text) else {
                        throw DgrunError("sandbox.network \"\(text)\": use host or none")
                    }
                    return network
                }
            }
        }
        if let value = root["fetch"] {
            guard case .table(let table) = value else { throw DgrunError("fetch must be a [fetch] table of \"path\" = { url = \"...\" }") }
            for path in table.keys {
                guard case .table(let entry) = table[path]! else {
                    throw DgrunError("fetch.\"\(path)\" must be an inline table like { url = \"https://...\", sha256 = \"...\" }")
                }
                try checkKeys(entry, allowed: fetchKeys, in: "fetch.\"\(path)\"")
                guard let url = entry["url"] else { throw DgrunError("fetch.\"\(path)\" needs a url") }
                let text = try string(url, key: "fetch.\"\(path)\".url")
                guard text.hasPrefix("http://") || text.hasPrefix("https://") || text.hasPrefix("file://") else {
                    throw DgrunError("fetch.\"\(path)\".url \"\(text)\": use an http://, https:// or file:// URL")
                }
                if path.hasPrefix("/") || path.split(separator: "/").contains("..") {
                    throw DgrunError("fetch.\"\(path)\": the path must stay inside the task directory")
                }
                var fetch = Fetch(path: path, url: text, sha256: nil)
                if let sum = entry["sha256"] {
                    let hex = try string(sum, key: "fetch.\"\(path)\".sha256").lowercased()
                    guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit }) else {
                        throw DgrunError("fetch.\"\(path)\".sha256 must be 64 hexadecimal digits")
                    }
                    fetch.sha256 = hex
                }
                task.fetches.append(fetch)
            }
        }
        if let value = root["services"] {
            guard case .table(let services) = value else { throw DgrunError("services must be a [services] table") }
            try checkKeys(services, allowed: serviceKeys, in: "services")
            if let v = services["wait"] {
                task.serviceWaitSeconds = try at(services, "wait") { () throws(DgrunError) in
                    try DurationText.parse(try string(v, key: "services.wait"))
                }
            }
        }
        if let value = root["ci"] {
            guard case .table(let ci) = value else { throw DgrunError("ci must be a [ci] table") }
            for key in ci.keys where !ciKeys.contains(key) {
                throw DgrunError((ci.place(of: key).map { $0 + ": " } ?? "") + "unknown key \"\(key)\" in [ci] (allowed: require)")
            }
            if let v = ci["require"] {
                task.ciRequire = try at(ci, "require") { () throws(DgrunError) in
                    let names = try strings(v, key: "ci.require")
                    for name in names where !sandboxLayers.contains(name) {
                        throw DgrunError("ci.require: unknown layer \"\(name)\" (use \(sandboxLayers.joined(separator: ", ")))")
                    }
                    return names
                }
            }
        }
        if let value = root["cache"] {
            guard case .table(let cache) = value else { throw DgrunError("cache must be a [cache] table") }
            for key in cache.keys where !cacheKeys.contains(key) {
                throw DgrunError((cache.place(of: key).map { $0 + ": " } ?? "") + "unknown key \"\(key)\" in [cache] (allowed: dir, read_only, url)")
            }
            if let v = cache["dir"] {
                let dir = try at(cache, "dir") { () throws(DgrunError) in try string(v, key: "cache.dir") }
                guard !dir.isEmpty else { throw DgrunError((cache.place(of: "dir").map { $0 + ": " } ?? "") + "cache.dir is empty (give a directory, or \"off\")") }
                if dir == "off" { task.cache.off = true } else { task.cache.directory = TaskFile.absolute(dir, in: directory) }
            }
            if let v = cache["url"] {
                task.cache.url = try at(cache, "url") { () throws(DgrunError) in
                    try CacheRequest.checkedURL(try string(v, key: "cache.url"), what: "cache.url")
                }
            }
            if let v = cache["read_only"] {
                task.cache.readOnly = try at(cache, "read_only") { () throws(DgrunError) -> Bool in
                    guard case .bool(let b) = v else { throw DgrunError("cache.read_only must be true or false, not \(v.typeName)") }
                    return b
                }
            }
        }
        return task
    }

    /// The working directory of the command: the task directory joined with `workdir`.
    public var workingDirectory: String {
        workdir == "." ? directory : directory + "/" + workdir
    }

    static func checkKeys(_ table: TOMLTable, allowed: Set<String>, in section: String?) throws(DgrunError) {
        for key in table.keys where !allowed.contains(key) {
            let place = section.map { "in [\($0)] " } ?? ""
            throw DgrunError("unknown key \"\(key)\" \(place)(allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    static func string(_ value: TOMLValue, key: String) throws(DgrunError) -> String {
        guard case .string(let s) = value else { throw DgrunError("\(key) must be a string, not \(value.typeName)") }
        return s
    }

    static func integer(_ value: TOMLValue, key: String) throws(DgrunError) -> Int {
        guard case .integer(let i) = value else { throw DgrunError("\(key) must be an integer, not \(value.typeName)") }
        return i
    }

    static func strings(_ value: TOMLValue, key: String) throws(DgrunError) -> [String] {
        guard case .array(let items) = value else { throw DgrunError("\(key) must be an array of strings") }
        var result: [String] = []
        for item in items { result.append(try string(item, key: key + "[]")) }
        return result
    }
}
