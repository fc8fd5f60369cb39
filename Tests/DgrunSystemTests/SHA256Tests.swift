import DgrunSystem
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The built-in SHA-256 for short byte strings against FIPS 180-4's vectors, and against
/// libcrypto's (the long-input path) for every length around the block boundaries.
@Suite struct SHA256Tests {
    @Test func knownVectors() {
        #expect(ContentHash.version(ofBytes: []) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(ContentHash.version(ofBytes: Array("abc".utf8)) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(ContentHash.version(ofBytes: Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "sha256:248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(ContentHash.version(ofBytes: [UInt8](repeating: 0x61, count: 1_000_000))
                == "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func theShortPathAgreesWithLibcryptoAtEveryBoundary() throws {
        try #require(ContentHash.isAvailable, "libcrypto is not installed")
        let dir = "/tmp/dgrun-sha-\(getpid())"
        FileSystem.makeDirectories(dir)
        defer { FileIO.listDirectory(dir).forEach { unlink(dir + "/" + $0) }; rmdir(dir) }
        for length in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 65536] {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let path = dir + "/\(length)"
            try FileSystem.writeAtomically(path, bytes)
            #expect(ContentHash.version(ofBytes: bytes) == ContentHash.version(of: path), "length \(length)")
        }
    }
}

@Suite struct HostMemoryTests {
    @Test func availableIsMeminfosMemAvailableInBytes() throws {
        let text = try FileIO.read("/proc/meminfo")
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("MemAvailable:") })
        let kib = try #require(UInt64(line.split(separator: " ")[1]))
        let got = try #require(HostMemory.available())
        // The value moves between the two reads; within 64 MiB is the same reading.
        #expect(got > 0 && (got > kib * 1024 ? got - kib * 1024 : kib * 1024 - got) < 64 << 20, "\(got) vs \(kib) KiB")
    }
}

@Suite struct ListDirectoryTests {
    /// Names of every length, enough to fill many getdents buffers: each record is read in place
    /// (a copy of the whole struct dirent read past the end of a buffer: a crash on a large /tmp).
    @Test func everyNameOfALargeDirectory() throws {
        let dir = "/tmp/dgrun-list-\(getpid())"
        FileSystem.makeDirectories(dir)
        defer { FileIO.listDirectory(dir).forEach { unlink(dir + "/" + $0) }; rmdir(dir) }
        var expected: Set<String> = []
        for i in 0..<3000 {
            let name = String(i) + String(repeating: "x", count: i % 200)
            expected.insert(name)
            close(open(dir + "/" + name, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644))
        }
        #expect(Set(FileIO.listDirectory(dir)) == expected)
    }
}
