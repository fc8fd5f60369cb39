import DgrunSystem

/// Resolves the libraries a program loads, transitively, in the order the glibc dynamic loader
/// searches: DT_RPATH (of the object and the objects that loaded it, when it has no DT_RUNPATH),
/// LD_LIBRARY_PATH, DT_RUNPATH (of the object only), /etc/ld.so.cache, then the default directories.
public struct LibraryResolver {
    public struct Resolution: Sendable, Equatable {
        public var name: String
        /// Canonical path, or nil when the loader would not find it (the program would fail to start).
        public var path: String?
        /// The canonical path of the object whose DT_NEEDED named it.
        public var neededBy: String
        /// How it was found: "rpath", "ld_library_path", "runpath", "ld.so.cache", "default", "path".
        public var via: String?
    }

    public var cache: LdSoCache
    public var libraryPath: [String]
    public var defaultDirectories = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"]
    /// $LIB and $PLATFORM as this machine's loader expands them.
    public var libToken = "lib/x86_64-linux-gnu"
    public var platformToken = "x86_64"
    /// Reads an ELF file; injectable for tests.
    public var readELF: (String) -> ElfFile?

    public init(cache: LdSoCache = .load(), environment: [String] = [],
                readELF: @escaping (String) -> ElfFile? = { (try? ElfFile.read(path: $0)) ?? nil }) {
        self.cache = cache
        let value = environment.first { $0.hasPrefix("LD_LIBRARY_PATH=") }.map { String($0.dropFirst(16)) } ?? ""
        self.libraryPath = value.split(separator: ":", omittingEmptySubsequences: true).map(String.init)
        self.readELF = readELF
    }

    /// Every library `program` loads, breadth-first, each once (by canonical path), the missing ones too.
    public func resolve(program: String) -> [Resolution] {
        guard let root = FileIO.realPath(program), let elf = readELF(root) else { return [] }
        var results: [Resolution] = []
        var seenPaths: Set<String> = [root]
        var seenNames: Set<String> = []
        // Each queue item: an object and the RPATHs inherited from the chain that loaded it.
        var queue: [(path: String, elf: ElfFile, inheritedRpath: [String])] = [(root, elf, [])]
        while !queue.isEmpty {
            let (path, object, inherited) = queue.removeFirst()
            let origin = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            let ownRpath = object.rpath.map { expand($0, origin: origin) }
            let rpathChain = object.runpath.isEmpty ? ownRpath + inherited : []
            for name in object.needed where !seenNames.contains(name) {
                seenNames.insert(name)
                let found = locate(name, rpath: rpathChain, runpath: object.runpath.map { expand($0, origin: origin) })
                results.append(Resolution(name: name, path: found?.path, neededBy: path, via: found?.via))
                if let found, !seenPaths.contains(found.path), let library = readELF(found.path) {
                    seenPaths.insert(found.path)
                    queue.append((found.path, library, ownRpath + inherited))
                }
            }
        }
        return results
    }

    func locate(_ name: String, rpath: [String], runpath: [String]) -> (path: String, via: String)? {
        if name.contains("/") { return FileIO.realPath(name).map { ($0, "path") } }
        let searches: [(String, [String])] = [("rpath", rpath), ("ld_library_path", libraryPath), ("runpath", runpath)]
        for (via, dirs) in searches {
            for dir in dirs where !dir.isEmpty {
                if let path = loadable(dir + "/" + name) { return (path, via) }
            }
        }
        if let cached = cache.entries[name], let path = loadable(cached) { return (path, "ld.so.cache") }
        for dir in defaultDirectories {
            if let path = loadable(dir + "/" + name) { return (path, "default") }
        }
        return nil
    }

    /// The canonical path, when it is an ELF object the loader could use.
    func loadable(_ candidate: String) -> String? {
        guard let path = FileIO.realPath(candidate), !FileIO.isDirectory(path) else { return nil }
        return path
    }

    /// $ORIGIN, $LIB and $PLATFORM, in both spellings (${ORIGIN}).
    func expand(_ entry: String, origin: String) -> String {
        var s = entry
        for (token, value) in [("ORIGIN", origin), ("LIB", libToken), ("PLATFORM", platformToken)] {
            s = s.replacingAll("${\(token)}", with: value).replacingAll("$\(token)", with: value)
        }
        return s
    }
}

extension String {
    /// Replaces every occurrence without Foundation.
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty, contains(target) else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
