import Dispatch
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Which Debian package (and version) installed a file, from dpkg's own database: the `.list` file
/// of every package in /var/lib/dpkg/info and the versions in /var/lib/dpkg/status. No dpkg
/// process is started (`dpkg -S` takes ~1 s for a few hundred paths). Scanning the 130,000 lines
/// of the lists took ~40 ms per discover, so the mapping is kept as an index (path hash →
/// package=version) in the cache directory, rebuilt when dpkg's database changes.
public enum DebianPackages {
    /// path → "deb:PACKAGE=VERSION" for the paths dpkg knows. Canonical paths on a merged-/usr
    /// system (/usr/lib/…) are also looked up under the names packages ship them by (/lib/…).
    public static func owners(of paths: Set<String>, database: String = "/var/lib/dpkg",
                              cacheDirectory: String = defaultCacheDirectory()) -> [String: String] {
        let list = Array(paths)
        var result: [String: String] = [:]
        for (path, owner) in zip(list, owners(ofPaths: list, database: database, cacheDirectory: cacheDirectory)) {
            if let owner { result[path] = owner }
        }
        return result
    }

    /// The same for a list: "deb:PACKAGE=VERSION" or nil for each path, in order (a discover asks
    /// about thousands: no set or dictionary of them is built).
    public static func owners(ofPaths paths: [String], database: String = "/var/lib/dpkg",
                              cacheDirectory: String = defaultCacheDirectory()) -> [String?] {
        guard !paths.isEmpty, let stamp = Stamp(database: database) else { return paths.map { _ in nil } }
        let index = Index.load(cacheDirectory + "/dpkg-index", stamp: stamp) ?? {
            let built = Index.build(database: database, stamp: stamp)
            built.save(cacheDirectory + "/dpkg-index")
            return built
        }()
        // "deb:" + name made once an owner found, not once a path, nor for every package.
        var labels: [Int: String] = [:]
        let listed = index.ownerIndices(of: paths)
        return paths.indices.map { i in
            // The aliases (merged /usr) only when the path itself is not listed: most are.
            (listed[i] ?? aliases(of: paths[i]).lazy.compactMap(index.ownerIndex(of:)).first).map { owner in
                if let label = labels[owner] { return label }
                let label = "deb:" + index.names[owner]
                labels[owner] = label
                return label
            }
        }
    }

    public static func defaultCacheDirectory() -> String {
        FileSystem.cacheDirectory() ?? "/root/.cache/dgrun"
    }

    static func aliases(of path: String) -> [String] {
        [("/usr/lib/", "/lib/"), ("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/"), ("/usr/lib64/", "/lib64/")]
            .filter { path.hasPrefix($0.0) }.map { $0.1 + path.dropFirst($0.0.count) }
    }

    /// dpkg's database as of now: the status file's and the info directory's change times.
    struct Stamp: Equatable {
        var status: Int64
        var info: Int64
        init(status: Int64, info: Int64) { self.status = status; self.info = info }
        init?(database: String) {
            var a = stat(), b = stat()
            guard stat(database + "/status", &a) == 0, stat(database + "/info", &b) == 0 else { return nil }
            status = Int64(a.st_mtim.tv_sec) * 1_000_000_000 + Int64(a.st_mtim.tv_nsec) ^ Int64(a.st_size)
            info = Int64(b.st_mtim.tv_sec) * 1_000_000_000 + Int64(b.st_mtim.tv_nsec)
        }
    }

    /// Sorted (hash of a listed path, owner) pairs; owners are "package=version". The pairs are
    /// the file's own bytes, searched in place: converting 130,000 of them into arrays was most
    /// of what a discover of a small task spent on packages.
    struct Index {
        var stamp: Stamp
        /// `count` records of 12 bytes from `tableOffset`: the hash (UInt64) and the owner's
        /// index in `names` (UInt32), little-endian, sorted by hash.
        var table: ReadOnlyBytes
        var tableOffset: Int
        var count: Int
        var names: Names

        static let recordSize = 12

        /// The packages' "name=version", by owner index: in memory for an index just built, or
        /// the lines of the mapped file, each decoded when asked for. Decoding all 757 of them
        /// (and a label for each) was most of the 0.83 ms a discover of a small task spent here.
        struct Names: RandomAccessCollection {
            private enum Storage { case strings([String]), lines(ReadOnlyBytes, starts: [Int]) }
            private let storage: Storage
            init(_ strings: [String]) { storage = .strings(strings) }
            /// `starts`: each line's first byte, then one past the last line's newline.
            init(lines bytes: ReadOnlyBytes, starts: [Int]) { storage = .lines(bytes, starts: starts) }
            var startIndex: Int { 0 }
            var endIndex: Int {
                switch storage {
                case .strings(let strings): strings.count
                case .lines(_, let starts): starts.count - 1
                }
            }
            subscript(i: Int) -> String {
                switch storage {
                case .strings(let strings): return strings[i]
                case .lines(let bytes, let starts):
                    return bytes.withUnsafeBytes { String(decoding: UnsafeRawBufferPointer(rebasing: $0[starts[i]..<(starts[i + 1] - 1)]), as: UTF8.self) }
                }
            }
        }

        var hashes: [UInt64] { (0..<count).map(hash(at:)) }

        func hash(at i: Int) -> UInt64 {
            table.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: tableOffset + i * Self.recordSize, as: UInt64.self)) }
        }

        func owner(at i: Int) -> UInt32 {
            table.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: tableOffset + i * Self.recordSize + 8, as: UInt32.self)) }
        }

        func owner(of path: String) -> String? { ownerIndex(of: path).map { names[$0] } }

        /// The index in `names` of the package that lists `path`.
        func ownerIndex(of path: String) -> Int? { ownerIndices(of: [path])[0] }

        /// The owner of each path, looked up in the order of their hashes: each search
        /// gallops on from where the last one ended, so a graph's 8,000 paths walk the table
        /// (130,000 records, 1.5 MB) once, nearby, instead of 17 probes each all over it (the
        /// binary searches were half of what a pipeline's discover spent on packages, perf).
        func ownerIndices(of paths: [String]) -> [Int?] {
            var hashes = [UInt64](repeating: 0, count: paths.count)
            for i in paths.indices {
                var path = paths[i], h = ShortHash.seed
                path.withUTF8 { for byte in $0 { h = ShortHash.step(h, byte) } }
                hashes[i] = h
            }
            let order = paths.indices.sorted { hashes[$0] < hashes[$1] }
            var result = [Int?](repeating: nil, count: paths.count)
            let count = self.count, tableOffset = self.tableOffset, names = self.names.count
            table.withUnsafeBytes { raw in
                func hash(_ i: Int) -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: tableOffset + i * Self.recordSize, as: UInt64.self)) }
                var start = 0  // every record before it hashes below the hash looked up now
                for i in order {
                    let h = hashes[i]
                    var low = start, high = start, step = 1
                    while high < count && hash(high) < h { low = high + 1; high = low + step; step *= 2 }
                    high = min(high, count)
                    while low < high {
                        let mid = (low + high) / 2
                        if hash(mid) < h { low = mid + 1 } else { high = mid }
                    }
                    start = low
                    guard low < count, hash(low) == h else { continue }
                    // Checked here, not for all 130,000 records at load: a damaged file names no package.
                    let owner = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: tableOffset + low * Self.recordSize + 8, as: UInt32.self)))
                    if owner < names { result[i] = owner }
                }
            }
            return result
        }

        static func build(database: String, stamp: Stamp) -> Index {
            let lists = FileIO.listDirectory(database + "/info").filter { $0.hasSuffix(".list") }
            let packages = lists.map { String($0.dropLast(".list".count).prefix { $0 != ":" }) }
            let status = (try? FileIO.readBytes(database + "/status")).map { String(decoding: $0, as: UTF8.self) } ?? ""
            let versions = installedVersions(status, of: Set(packages))
            let found = Found(count: lists.count)
            DispatchQueue.concurrentPerform(iterations: lists.count) { i in
                guard let bytes = try? FileIO.readBytes(database + "/info/" + lists[i]) else { return }
                var hashes: [UInt64] = []
                var hash = ShortHash.seed
                var empty = true
                for byte in bytes {
                    if byte != 0x0a { hash = ShortHash.step(hash, byte); empty = false; continue }
                    if !empty { hashes.append(hash) }
                    hash = ShortHash.seed
                    empty = true
                }
                found.set(i, hashes)
            }
            var names: [String] = []
            var pairs: [(UInt64, UInt32)] = []
            for (i, package) in packages.enumerated() {
                guard let version = versions[package] else { continue }  // listed but not installed
                names.append(package + "=" + version)
                for h in found.get(i) { pairs.append((h, UInt32(names.count - 1))) }
            }
            pairs.sort { $0.0 < $1.0 }
            var table: [UInt8] = []
            table.reserveCapacity(pairs.count * recordSize)
            for (h, o) in pairs {
                withUnsafeBytes(of: h.littleEndian) { table.append(contentsOf: $0) }
                withUnsafeBytes(of: o.littleEndian) { table.append(contentsOf: $0) }
            }
            return Index(stamp: stamp, table: ReadOnlyBytes(table), tableOffset: 0, count: pairs.count, names: Names(names))
        }

        // File: "dgrun-dpkg-index 1\n", the stamp, the count, the names, then the pairs.
        func save(_ path: String) {
            var text = "dgrun-dpkg-index 1\n\(stamp.status) \(stamp.info) \(count) \(names.count)\n"
            text += names.joined(separator: "\n") + "\n"
            var bytes = Array(text.utf8)
            table.withUnsafeBytes { bytes.append(contentsOf: $0[tableOffset..<(tableOffset + count * Self.recordSize)]) }
            FileSystem.replaceCache(path, with: bytes)
        }

        static func load(_ path: String, stamp: Stamp) -> Index? {
            guard let bytes = ReadOnlyBytes(mapping: path) else { return nil }
            return parse(bytes, stamp: stamp)
        }

        /// The index in `bytes` when its stamp is `stamp` (nil: any stamp, for the fuzzer).
        static func parse(_ data: ReadOnlyBytes, stamp: Stamp?) -> Index? {
            // The two header lines, then `names` lines; the binary pairs follow.
            let parsed = data.withUnsafeBytes { bytes -> (stamp: Stamp, count: Int, starts: [Int], offset: Int)? in
                var offset = 0
                // The next newline from `offset` on.
                func newline() -> Int? {
                    guard offset < bytes.count, let base = bytes.baseAddress,
                          let found = memchr(base + offset, 0x0a, bytes.count - offset) else { return nil }
                    return base.distance(to: UnsafeRawPointer(found))
                }
                func line() -> String? {
                    guard let end = newline() else { return nil }
                    defer { offset = end + 1 }
                    return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<end]), as: UTF8.self)
                }
                guard line() == "dgrun-dpkg-index 1", let header = line() else { return nil }
                let fields = header.split(separator: " ")
                guard fields.count == 4, let status = Int64(fields[0]), let info = Int64(fields[1]),
                      let count = Int(fields[2]), let nameCount = Int(fields[3]),
                      // Counts the file cannot hold: a negative range or count * 12 overflowing trapped.
                      count >= 0, nameCount >= 0, count <= bytes.count / recordSize, nameCount <= bytes.count else { return nil }
                let found = Stamp(status: status, info: info)
                if let stamp, stamp != found { return nil }
                // Where each name's line starts: the names are decoded only for the owners a
                // lookup finds.
                var starts: [Int] = [offset]
                starts.reserveCapacity(nameCount + 1)
                for _ in 0..<nameCount {
                    guard let end = newline() else { return nil }
                    offset = end + 1
                    starts.append(offset)
                }
                guard bytes.count - offset == count * recordSize else { return nil }
                return (found, count, starts, offset)
            }
            guard let parsed else { return nil }
            return Index(stamp: parsed.stamp, table: data, tableOffset: parsed.offset, count: parsed.count,
                         names: Names(lines: data, starts: parsed.starts))
        }
    }

    /// Package → version of the installed packages among `packages`, from dpkg's status file.
    static func installedVersions(_ status: String, of packages: Set<String>) -> [String: String] {
        var result: [String: String] = [:]
        var package: String?, version: String?, installed = false
        func flush() {
            if let package, let version, installed, packages.contains(package) { result[package] = version }
            package = nil; version = nil; installed = false
        }
        for line in status.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { flush(); continue }
            if line.hasPrefix("Package: ") { package = String(line.dropFirst(9)) }
            else if line.hasPrefix("Version: ") { version = String(line.dropFirst(9)) }
            else if line.hasPrefix("Status: ") { installed = line.hasSuffix(" installed") }
        }
        flush()
        return result
    }

    /// One result slot per list file, each written by one iteration only.
    final class Found: @unchecked Sendable {
        private var slots: [[UInt64]]
        private let lock = DispatchQueue(label: "dgrun.dpkg")
        init(count: Int) { slots = Array(repeating: [], count: count) }
        func set(_ i: Int, _ value: [UInt64]) { lock.sync { slots[i] = value } }
        func get(_ i: Int) -> [UInt64] { lock.sync { slots[i] } }
    }
}
