import DgrunCache
import DgrunEngine
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// `dgrun cache key TASKDIR`, `dgrun cache stats`, `dgrun cache prune [--max-size SIZE]`.
struct CacheVerb {
    enum Action: String { case key, stats, prune }
    var action: Action = .stats
    var directory: String?
    var request = RunRequest()
    var maxSize: Int64?

    static let verb = VerbSpec<CacheVerb>(
        name: "cache",
        usage: "dgrun cache key [options] TASKDIR | dgrun cache stats [--cache DIR] | dgrun cache prune [--cache DIR] [--max-size SIZE]",
        abstract: "Show a task's action key, or the local output cache's size, or shrink it.",
        discussion: """
        key: the action key the next `dgrun exec [OPTIONS] TASKDIR` would look up (give the same
        sandbox options as that exec: they are part of the key) (a digest of the command, the
        environment, the sandbox settings, the content of every input of its last graph and
        dgrun's schema): the same key on another machine means the same run. For CI cache keys
        (actions/cache, GitLab cache:key). It is computed from the last recorded run, or from the
        inputs manifest a cache keeps for the task; when neither exists there is no key: exit 122.
        stats: entries, blobs and bytes of the local cache. prune: remove the least recently used
        files until it is within --max-size (default: $DGRUN_CACHE_MAX_SIZE, else 5g).
        EXIT STATUS: 0; 122 when a task has no key yet; 125 on bad input.
        """,
        options: [
            .value("max-size", "size", "prune: the size to shrink the cache to (like 2g).") {
                (target: inout CacheVerb, text: String) throws(DgrunError) in
                do throws(DgrunError) { target.maxSize = Int64(try ByteSize.parse(text)) } catch {
                    throw DgrunError.usage("--max-size: \(error.message)", verb: "cache")
                }
            },
        // exec's options: the key is that of `dgrun exec [the same options] TASKDIR`.
        ] + (Exec.sandboxOptions + Exec.planningOptions).filter { $0.long != "report" }.map(lift))

    static func lift(_ option: OptionSpec<Exec>) -> OptionSpec<CacheVerb> {
        OptionSpec<CacheVerb>(long: option.long, short: option.short, valueName: option.valueName, help: option.help) {
            (target: inout CacheVerb, value: String) throws(DgrunError) in
            var exec = Exec()
            exec.request = target.request
            do throws(DgrunError) { try option.apply(&exec, value) } catch {
                var error = error
                error.verb = "cache"
                throw error
            }
            target.request = exec.request
        }
    }

    static func parse(_ args: ArraySlice<String>) throws(DgrunError) -> CacheVerb? {
        var verb = CacheVerb()
        guard let parsed = try Self.verb.parseOrShowHelp(args, into: &verb) else { return nil }
        guard parsed.command.isEmpty, let first = parsed.positionals.first, let action = Action(rawValue: first) else {
            throw DgrunError.usage("give key, stats or prune; usage: \(Self.verb.usage)", verb: "cache")
        }
        verb.action = action
        let rest = parsed.positionals.dropFirst()
        switch action {
        case .key:
            guard rest.count == 1 else { throw DgrunError.usage("cache key takes one task directory; usage: \(Self.verb.usage)", verb: "cache") }
            verb.directory = rest.first
        case .stats, .prune:
            guard rest.isEmpty else { throw DgrunError.usage("cache \(action.rawValue) takes no directory; usage: \(Self.verb.usage)", verb: "cache") }
        }
        try Exec.applyCacheEnvironment(&verb.request.cache)
        return verb
    }

    func run() -> Int32 {
        switch action {
        case .key:
            let engine = Engine.forHost(sink: Terminal.render)
            do throws(DgrunError) {
                let task = try TaskFile.load(directory: directory!)
                switch try engine.cacheKey(task, request: request) {
                case .key(let key, _, _, _, _, _):
                    CLI.write(1, key + "\n")
                    return 0
                case .none(let why):
                    Terminal.line("dgrun: no action key: \(why)")
                    return DgrunExit.blocked
                }
            } catch {
                Terminal.line("dgrun: \(error.message)")
                return error.exitStatus
            }
        case .stats, .prune:
            guard !request.cache.off else {
                Terminal.line("dgrun: cache \(action.rawValue) needs a cache directory, not --cache off")
                return 125
            }
            guard let cache = OutputCache.resolve(request.cache, task: nil, warn: { _ in }) else {
                Terminal.line("dgrun: no cache directory: set XDG_CACHE_HOME or HOME, or pass --cache DIR")
                return 125
            }
            var local = cache.local
            if action == .prune {
                let bound = maxSize ?? local.maxBytes ?? LocalCache.defaultMaxBytes
                let removed = local.prune(maxBytes: bound)
                CLI.write(1, "removed \(removed.files) files (\(ByteSize.describe(UInt64(removed.bytes)))) to stay within \(ByteSize.describe(UInt64(bound)))\n")
                local.maxBytes = bound
            }
            let stats = local.stats()
            CLI.write(1, """
                cache: \(stats.directory)
                entries: \(stats.actions) manifests, \(stats.blobs) blobs
                size: \(ByteSize.describe(UInt64(stats.bytes)))\(stats.maxBytes.map { " of at most \(ByteSize.describe(UInt64($0)))" } ?? "")

                """)
            return 0
        }
    }
}
