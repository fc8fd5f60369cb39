@testable import DgrunSystem
import Foundation
import Testing

/// The stat-keyed content hash cache: a hit only for the same identity, nothing kept for a file
/// that changed too recently, and a changed file hashed again.
@Suite struct ContentHashCacheTests {
    static func temporaryDirectory() -> String {
        let dir = NSTemporaryDirectory() + "dgrun-hash-cache-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// After `path` changed: the cache no longer finds its identity, and hashes it again to a
    /// version other than `old`.
    static func expectHashedAgain(_ cache: ContentHashCache, _ path: String, old: String,
                                  sourceLocation: SourceLocation = #_sourceLocation) {
        var st = stat()
        #expect(stat(path, &st) == 0, sourceLocation: sourceLocation)
        #expect(cache.find(st) == nil, sourceLocation: sourceLocation)
        #expect(cache.version(of: path, now: Clock.now() + 10) == ContentHash.version(of: path), sourceLocation: sourceLocation)
        #expect(cache.version(of: path, now: Clock.now() + 10) != old, sourceLocation: sourceLocation)
    }

    @Test func remembersSettledFilesAndHashesChangedOnesAgain() throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/data.txt", cacheFile = dir + "/cache/content-hashes"
        try "first version\n".write(toFile: file, atomically: false, encoding: .utf8)
        let expected = try #require(ContentHash.version(of: file))

        // Just written: hashed, but not remembered (a write in the same timestamp tick would not show).
        let early = ContentHashCache(path: cacheFile)
        #expect(early.version(of: file, now: Clock.now()) == expected)
        early.save()
        #expect(!FileManager.default.fileExists(atPath: cacheFile))

        // Seen as settled (now is later than its last change by more than the margin): remembered.
        let later = Clock.now() + 2 * ContentHashCache.settleSeconds
        let first = ContentHashCache(path: cacheFile)
        #expect(first.version(of: file, now: later) == expected)
        first.save()
        let second = ContentHashCache(path: cacheFile)
        #expect(second.count == 1)
        var st = stat()
        #expect(stat(file, &st) == 0)
        #expect(second.find(st) != nil)
        #expect(second.version(of: file, now: later) == expected)

        // Rewritten with content of the same size: the identity moved (ctime), so it is hashed again.
        try "other version\n".write(toFile: file, atomically: false, encoding: .utf8)
        Self.expectHashedAgain(second, file, old: expected)
    }

    @Test func directoriesAndMissingFilesGoTheUsualWay() {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cache = ContentHashCache(path: dir + "/cache")
        #expect(cache.version(of: dir + "/absent", now: Clock.now()) == nil)
        #expect(cache.version(of: dir, now: Clock.now()) == ContentHash.version(of: dir))
    }

    /// A directory's version (its sorted names) is remembered like a file's, on a file system
    /// that keeps directory times; an entry added moves its identity, and it is listed again.
    @Test func directoriesAreRememberedUntilAnEntryChanges() throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let listed = dir + "/listed", cacheFile = dir + "/cache/content-hashes"
        mkdir(listed, 0o755)
        for name in ["b", "a"] { _ = FileManager.default.createFile(atPath: listed + "/" + name, contents: Data()) }
        let expected = try #require(ContentHash.version(of: listed))
        let later = Clock.now() + 2 * ContentHashCache.settleSeconds
        let first = ContentHashCache(path: cacheFile)
        #expect(first.version(of: listed, now: later) == expected)
        first.save()
        let second = ContentHashCache(path: cacheFile)
        var st = stat()
        #expect(stat(listed, &st) == 0)
        let keepsTimes = FileSystem.magic(listed).map(ContentHashCache.directoryMtimeFileSystems.contains) == true
        #expect((second.find(st) != nil) == keepsTimes, "remembered where directory times are kept")
        #expect(second.version(of: listed, stat: st, now: later) == expected)
        _ = FileManager.default.createFile(atPath: listed + "/c", contents: Data())
        Self.expectHashedAgain(second, listed, old: expected)
    }

    /// /proc's listings change without its directories' times: never remembered.
    @Test func pseudoFileSystemDirectoriesAreNotRemembered() {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cache = ContentHashCache(path: dir + "/cache")
        #expect(cache.version(of: "/proc", now: Clock.now() + 10) != nil)
        cache.save()
        #expect(ContentHashCache(path: dir + "/cache").count == 0)
    }

    @Test func aDamagedCacheFileIsAnEmptyCache() throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "dgrun-content-hashes 1\ntruncated".write(toFile: dir + "/cache", atomically: false, encoding: .utf8)
        #expect(ContentHashCache(path: dir + "/cache").count == 0)
        // A torn record at the end of the journal (a crash mid-append) is left out, the rest kept.
        try "dgrun-content-hashes 1\n".write(toFile: dir + "/cache", atomically: false, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: dir + "/cache.new", contents: Data(repeating: 7, count: 72 + 10))
        #expect(ContentHashCache(path: dir + "/cache").count == 1)
    }

    /// Past the journal's capacity a save merges the journal into the sorted file, and every entry
    /// is still found.
    @Test func theJournalIsMergedIntoTheSortedFile() throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cacheFile = dir + "/cache/content-hashes"
        let later = Clock.now() + 2 * ContentHashCache.settleSeconds
        var files: [String] = []
        for i in 0..<3 {
            let file = dir + "/f\(i)"
            try "content \(i)\n".write(toFile: file, atomically: false, encoding: .utf8)
            files.append(file)
            let cache = ContentHashCache(path: cacheFile)
            _ = cache.version(of: file, now: later)
            cache.save()
        }
        #expect(FileManager.default.fileExists(atPath: cacheFile + ".new"), "small saves append to the journal")
        #expect(ContentHashCache(path: cacheFile).count == 3)
        // Fill the journal past its capacity with one run's worth of entries: a compaction.
        let many = ContentHashCache(path: cacheFile)
        for i in 0..<ContentHashCache.journalCapacity {
            _ = FileManager.default.createFile(atPath: dir + "/m\(i)", contents: Data("m\(i)".utf8))
        }
        let settled = Clock.now() + 2 * ContentHashCache.settleSeconds
        for i in 0..<ContentHashCache.journalCapacity { _ = many.version(of: dir + "/m\(i)", now: settled) }
        many.save()
        #expect(!FileManager.default.fileExists(atPath: cacheFile + ".new"), "merged")
        let merged = ContentHashCache(path: cacheFile)
        #expect(merged.count == 3 + ContentHashCache.journalCapacity)
        var st = stat()
        for file in files { #expect(stat(file, &st) == 0 && merged.find(st) != nil) }
    }
}
