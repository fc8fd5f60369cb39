import Dispatch
import DgrunSystem

/// Which Debian package (and version) installed a file, from dpkg's own database: the `.list` file
/// of every package in /var/lib/dpkg/info and the versions in /var/lib/dpkg/status. No dpkg
/// process is started (`dpkg -S` takes ~1 s for a few hundred paths).
public enum DebianPackages {
    /// path → "deb:PACKAGE=VERSION" for the paths dpkg knows. Canonical paths on a merged-/usr
    /// system (/usr/lib/…) are also looked up under the names packages ship them by (/lib/…).
    public static func owners(of paths: Set<String>, database: String = "/var/lib/dpkg") -> [String: String] {
        guard !paths.isEmpty, FileIO.exists(database + "/status") else { return [:] }
        var wanted: [String: String] = [:]  // name as dpkg may list it → the path asked for
        for path in paths {
            wanted[path] = path
            for (merged, legacy) in [("/usr/lib/", "/lib/"), ("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/"), ("/usr/lib64/", "/lib64/")]
            where path.hasPrefix(merged) {
                wanted[legacy + path.dropFirst(merged.count)] = path
            }
        }
        let lists = FileIO.listDirectory(database + "/info").filter { $0.hasSuffix(".list") }
        let found = Found(count: lists.count)
        let keys = wanted
        // 130,000 lines on this machine, a few hundred wanted: a hash of the bytes first, a String
        // only for a line whose hash matches.
        let hashes = Set(wanted.keys.map { ShortHash.value($0.utf8) })
        DispatchQueue.concurrentPerform(iterations: lists.count) { i in
            guard let bytes = try? FileIO.readBytes(database + "/info/" + lists[i]) else { return }
            var hits: [String] = []
            bytes.withUnsafeBufferPointer { buffer in
                var start = 0
                var hash = ShortHash.seed
                for index in 0..<buffer.count {
                    let byte = buffer[index]
                    if byte != 0x0a { hash = ShortHash.step(hash, byte); continue }
                    if hashes.contains(hash),
                       let path = keys[String(decoding: UnsafeBufferPointer(rebasing: buffer[start..<index]), as: UTF8.self)] {
                        hits.append(path)
                    }
                    start = index + 1
                    hash = ShortHash.seed
                }
            }
            found.set(i, hits)
        }
        var packageOf: [String: String] = [:]
        for (i, name) in lists.enumerated() {
            let package = String(name.dropLast(".list".count).prefix { $0 != ":" })
            for path in found.get(i) where packageOf[path] == nil { packageOf[path] = package }
        }
        guard !packageOf.isEmpty else { return [:] }
        let status = (try? FileIO.readBytes(database + "/status")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let versions = installedVersions(status, of: Set(packageOf.values))
        return packageOf.compactMapValues { package in versions[package].map { "deb:\(package)=\($0)" } }
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
        private var slots: [[String]]
        private let lock = DispatchQueue(label: "dgrun.dpkg")
        init(count: Int) { slots = Array(repeating: [], count: count) }
        func set(_ i: Int, _ value: [String]) { lock.sync { slots[i] = value } }
        func get(_ i: Int) -> [String] { lock.sync { slots[i] } }
    }
}
