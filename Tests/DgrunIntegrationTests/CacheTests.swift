import DgrunStore
import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Issue 12: state that moves with a workspace, the local output cache, and a remote cache over
/// the Bazel HTTP protocol (a real nginx with WebDAV on loopback, started and stopped here).
@Suite(.serialized) struct CacheTests {
    static var limitFlags: [String] { WorkspaceTests.limitFlags }

    /// A two-task workspace: `a` writes a file, an executable and a link to a host secret (a
    /// hostile output), and appends to a marker outside the workspace (bound in: never cached);
    /// `b` reads a's file. The marker counts how often the commands really ran.
    static func workspace(marker: String) -> String {
        let ws = Harness.makeTemporaryDirectory()
        mkdir(ws + "/a", 0o755)
        mkdir(ws + "/b", 0o755)
        try? "hello cache\n".write(toFile: ws + "/a/in.txt", atomically: false, encoding: .utf8)
        try? """
            run = "mkdir -p out && cat in.txt in.txt > out/a.txt && printf '#!/bin/sh\\\\necho hi\\\\n' > out/tool.sh && chmod 755 out/tool.sh && ln -sfn /etc/shadow out/secret && echo a >> \(marker)/ran"
            inputs = ["in.txt"]
            outputs = ["out/a.txt", "out/tool.sh", "out/secret"]

            """.write(toFile: ws + "/a/task.toml", atomically: false, encoding: .utf8)
        try? """
            run = "mkdir -p out && wc -c < ../a/out/a.txt > out/b.txt && echo b >> \(marker)/ran"
            inputs = ["../a/out/a.txt"]
            outputs = ["out/b.txt"]

            """.write(toFile: ws + "/b/task.toml", atomically: false, encoding: .utf8)
        return ws
    }

    /// A clone as CI makes one: the sources, no outputs, no state.
    static func clone(_ ws: String) -> String {
        let dir = Harness.makeTemporaryDirectory()
        Harness.run(["cp", "-R", ws + "/.", dir])
        Harness.run(["sh", "-c", "rm -rf */.dgrun */out"], cwd: dir)
        return dir
    }

    static func runs(_ marker: String) -> [String] {
        ((try? String(contentsOfFile: marker + "/ran", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func exec(_ dir: String, marker: String, _ extra: [String], env: [String] = []) -> RunResult {
        Harness.run(env + [Harness.binary, "exec", "--rw", marker] + Self.limitFlags + extra + [dir])
    }

    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }

    // MARK: - relocation

    @Test(.enabled(if: Harness.hasCommand("cc"), "needs a C compiler (gcc)"))
    func aCopiedWorkspacePlansAsTheOriginal() throws {
        let ws = WorkspaceTests.pipeline()
        defer { Harness.removeTree(ws) }
        var r = Harness.run([Harness.binary, "exec", "--cache", "off"] + Self.limitFlags + [ws])
        #expect(r.status == 0, "\(r.stderr)")
        for copy in [["cp", "-a"], ["cp", "-R"]] {
            // cp -a keeps times (inodes differ); cp -R gives every file new times: hashed, equal.
            let parent = Harness.makeTemporaryDirectory()
            defer { Harness.removeTree(parent) }
            let moved = parent + "/elsewhere"
            Harness.run(copy + [ws, moved])
            let status = Harness.run([Harness.binary, "status", moved])
            #expect(status.status == 0, "\(copy): \(status.stdout)")
            #expect(!status.stdout.contains("never run"), "\(status.stdout)")
            r = Harness.run([Harness.binary, "exec", "--cache", "off"] + Self.limitFlags + [moved])
            #expect(r.status == 0)
            #expect(WorkspaceTests.outcome(r.stderr).ran.isEmpty, "\(copy): \(r.stderr)")
            #expect(WorkspaceTests.outcome(r.stderr).upToDate.count == 5, "\(r.stderr)")
            // Where the content differs, the copy is stale (not never run), and only downstream of it.
            try "rows 1234\nseed 3\n".write(toFile: moved + "/gen/params.txt", atomically: false, encoding: .utf8)
            let stale = Harness.run([Harness.binary, "status", moved])
            #expect(stale.status == 1)
            #expect(stale.stdout.contains("gen: stale") && stale.stdout.contains("lib: up to date"), "\(stale.stdout)")
            #expect(!stale.stdout.contains("never run"))
        }
    }

    // MARK: - the local cache

    @Test func aFreshCloneIsRestoredFromTheLocalCacheWithoutRunning() throws {
        let marker = Harness.makeTemporaryDirectory(mode: 0o777)
        let cache = Harness.makeTemporaryDirectory()
        let ws = Self.workspace(marker: marker)
        defer { [marker, cache, ws].forEach(Harness.removeTree) }
        var r = exec(ws, marker: marker, ["--cache", cache])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(Self.runs(marker) == ["a", "b"])
        let key = Harness.run([Harness.binary, "cache", "key", "--rw", marker, ws + "/a"])
        #expect(key.status == 0 && key.stdout.count == 65, "\(key.stderr)")

        let clone = Self.clone(ws)
        defer { Harness.removeTree(clone) }
        // No state in the clone: the key comes from the inputs manifest the cache keeps.
        let cloneKey = Harness.run([Harness.binary, "cache", "key", "--rw", marker, "--cache", cache, clone + "/a"])
        #expect(cloneKey.stdout == key.stdout, "\(cloneKey.stderr)")
        let empty = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(empty) }
        #expect(Harness.run([Harness.binary, "cache", "key", "--rw", marker, "--cache", empty, clone + "/a"]).status == 122, "no run, no manifest: no key")
        // b's input is a's output, not there before a is restored: no key yet.
        let b = Harness.run([Harness.binary, "cache", "key", "--rw", marker, "--cache", cache, clone + "/b"])
        #expect(b.status == 122, "\(b.stderr)")

        r = exec(clone, marker: marker, ["--cache", cache])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("a: restored from cache") && r.stderr.contains("b: restored from cache"), "\(r.stderr)")
        #expect(WorkspaceTests.outcome(r.stderr).ran.isEmpty)
        #expect(Self.runs(marker) == ["a", "b"], "nothing ran again")
        for file in ["a/out/a.txt", "a/out/tool.sh", "b/out/b.txt"] {
            #expect(Harness.run(["cmp", ws + "/" + file, clone + "/" + file]).status == 0, "\(file)")
        }
        var st = stat()
        #expect(stat(clone + "/a/out/tool.sh", &st) == 0 && st.st_mode & 0o777 == 0o755, "modes kept")
        // The hostile output: a link to a host secret comes back as the same link, never its content.
        #expect(lstat(clone + "/a/out/secret", &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK)
        #expect(Self.readLink(clone + "/a/out/secret") == "/etc/shadow")

        // dgrun ci on another clone: the outcome is "restored", and it passes.
        let ciClone = Self.clone(ws)
        defer { Harness.removeTree(ciClone) }
        let ci = Harness.run(["/usr/bin/env"] + CITests.clean + ["CI=true", Harness.binary, "ci", "--rw", marker, "--cache", cache,
                                                                 "--json", ciClone + "/ci.json"] + Self.limitFlags + [ciClone])
        #expect(ci.status == 0, "\(ci.stdout)\(ci.stderr)")
        #expect(ci.stdout.contains("restored"), "\(ci.stdout)")
        let report = (try? String(contentsOfFile: ciClone + "/ci.json", encoding: .utf8)) ?? ""
        #expect(report.contains("\"restored\""), "\(report)")
        #expect(Self.runs(marker) == ["a", "b"])

        // Restored is recorded: history says so, and the next exec is a no-op.
        let history = Harness.run([Harness.binary, "history", clone + "/a"])
        #expect(history.stdout.contains("restored from the local cache"), "\(history.stdout)")
        r = exec(clone, marker: marker, ["--cache", cache])
        #expect(WorkspaceTests.outcome(r.stderr).upToDate == ["a", "b"], "\(r.stderr)")
        #expect(Harness.run([Harness.binary, "status", clone]).status == 0)

        // A changed input changes the key: a runs; b's input is then the same content, so b is restored.
        try "other\n".write(toFile: clone + "/a/in.txt", atomically: false, encoding: .utf8)
        let explain = Harness.run([Harness.binary, "explain", clone + "/a"])
        #expect(explain.stdout.contains("changed the key: \(clone)/a/in.txt"), "\(explain.stdout)")
        r = exec(clone, marker: marker, ["--cache", cache])
        #expect(WorkspaceTests.outcome(r.stderr).ran.contains("a"), "\(r.stderr)")
        #expect(Self.runs(marker).count == 4)

        // A poisoned local blob is refused and removed, and the task runs.
        let third = Self.clone(ws)
        defer { Harness.removeTree(third) }
        let digest = String(Harness.run(["sha256sum", ws + "/b/out/b.txt"]).stdout.prefix(64))
        let blob = cache + "/cas/" + digest.prefix(2) + "/" + digest
        #expect(FileIO.exists(blob))
        unlink(blob)
        try "999\n".write(toFile: blob, atomically: false, encoding: .utf8)
        r = exec(third, marker: marker, ["--cache", cache])
        #expect(r.status == 0)
        #expect(r.stderr.contains("does not match its digest"), "\(r.stderr)")
        #expect(r.stderr.contains("b: running"), "\(r.stderr)")
        #expect(Harness.run(["cmp", ws + "/b/out/b.txt", third + "/b/out/b.txt"]).status == 0)
        #expect(try String(contentsOfFile: blob, encoding: .utf8) != "999\n", "the bad blob went; the run stored the good one")

        let stats = Harness.run([Harness.binary, "cache", "stats", "--cache", cache])
        #expect(stats.status == 0 && stats.stdout.contains("blobs"), "\(stats.stdout)")
        let prune = Harness.run([Harness.binary, "cache", "prune", "--cache", cache, "--max-size", "0"])
        #expect(prune.status == 0 && Harness.run([Harness.binary, "cache", "stats", "--cache", cache]).stdout.contains("0 manifests, 0 blobs"))
    }

    @Test func aRestoreNeverWritesThroughALinkedDirectory() throws {
        let marker = Harness.makeTemporaryDirectory(mode: 0o777)
        let cache = Harness.makeTemporaryDirectory()
        let outside = Harness.makeTemporaryDirectory()
        let ws = Self.workspace(marker: marker)
        defer { [marker, cache, outside, ws].forEach(Harness.removeTree) }
        #expect(exec(ws, marker: marker, ["--cache", cache]).status == 0)
        let clone = Self.clone(ws)
        defer { Harness.removeTree(clone) }
        symlink(outside, clone + "/a/out")
        let r = exec(clone, marker: marker, ["--cache", cache, "--no-deps"])
        #expect(r.stderr.contains("not restored from the cache"), "\(r.stderr)")
        #expect(FileIO.listDirectory(outside).isEmpty, "nothing was written through the link")
    }

    /// A poisoned manifest (someone with write access to the cache) that names the task's own
    /// input, or asks for a set-user-id file: the input is never rewritten, the mode is masked.
    @Test func aPoisonedManifestCannotRewriteAnInputNorMakeASetuidFile() throws {
        let marker = Harness.makeTemporaryDirectory(mode: 0o777)
        let cache = Harness.makeTemporaryDirectory()
        let ws = Self.workspace(marker: marker)
        defer { [marker, cache, ws].forEach(Harness.removeTree) }
        #expect(exec(ws, marker: marker, ["--cache", cache]).status == 0)
        let key = Harness.run([Harness.binary, "cache", "key", "--rw", marker, ws + "/a"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let path = cache + "/ac/" + key
        var manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        var entries = manifest["entries"] as? [[String: Any]] ?? []
        let good = try #require(entries.first { $0["path"] as? String == "out/a.txt" })

        var setuid = good
        setuid["mode"] = 0o4755
        entries = entries.map { $0["path"] as? String == "out/a.txt" ? setuid : $0 }
        manifest["entries"] = entries
        try JSONSerialization.data(withJSONObject: manifest).write(to: URL(fileURLWithPath: path))
        let clone = Self.clone(ws)
        defer { Harness.removeTree(clone) }
        var r = exec(clone + "/a", marker: marker, ["--cache", cache, "--no-deps"])
        #expect(r.stderr.contains("a: restored from cache"), "\(r.stderr)")
        var st = stat()
        #expect(stat(clone + "/a/out/a.txt", &st) == 0 && st.st_mode & 0o7777 == 0o755, "no set-user-id bit")

        var input = good
        input["path"] = "in.txt"
        manifest["entries"] = entries + [input]
        try JSONSerialization.data(withJSONObject: manifest).write(to: URL(fileURLWithPath: path))
        let second = Self.clone(ws)
        defer { Harness.removeTree(second) }
        r = exec(second + "/a", marker: marker, ["--cache", cache, "--no-deps"])
        #expect(r.stderr.contains("an input of the task; refused"), "\(r.stderr)")
        #expect(try String(contentsOfFile: second + "/a/in.txt", encoding: .utf8) == "hello cache\n")
    }

    /// A hostile task that makes a directory of its outputs a link to /etc and declares a file
    /// in it: the host's file is never read into the cache (nor uploaded).
    @Test func anOutputThroughALinkedDirectoryIsNeverRead() throws {
        let marker = Harness.makeTemporaryDirectory(mode: 0o777)
        let cache = Harness.makeTemporaryDirectory()
        let ws = Self.workspace(marker: marker)
        defer { [marker, cache, ws].forEach(Harness.removeTree) }
        try "run = \"mkdir -p out && echo x > out/a.txt && ln -sfn /etc etc\"\noutputs = [\"out/a.txt\", \"etc/hostname\", \"etc/passwd\"]\n"
            .write(toFile: ws + "/a/task.toml", atomically: false, encoding: .utf8)
        let r = exec(ws + "/a", marker: marker, ["--cache", cache, "--no-deps"])
        #expect(r.status == 0, "\(r.stderr)")
        for file in ["/etc/hostname", "/etc/passwd"] where FileIO.exists(file) {
            let digest = String(Harness.run(["sha256sum", file]).stdout.prefix(64))
            #expect(!FileIO.exists(cache + "/cas/" + digest.prefix(2) + "/" + digest), "\(file) was read into the cache")
        }
        let blobs = FileIO.listDirectory(cache + "/cas").flatMap { FileIO.listDirectory(cache + "/cas/" + $0) }
        #expect(blobs.count == 1, "only out/a.txt: \(blobs)")
    }

    @Test func aTaskThatWritesElsewhereInTheWorkspaceIsNotCached() throws {
        let marker = Harness.makeTemporaryDirectory(mode: 0o777)
        let cache = Harness.makeTemporaryDirectory()
        let ws = Self.workspace(marker: marker)
        defer { [marker, cache, ws].forEach(Harness.removeTree) }
        try "run = \"mkdir -p out && echo x > out/a.txt\"\noutputs = [\"out/a.txt\", \"../b/shared.txt\"]\n"
            .write(toFile: ws + "/a/task.toml", atomically: false, encoding: .utf8)
        let r = exec(ws + "/a", marker: marker, ["--cache", cache, "--no-deps"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("outputs not cached"), "\(r.stderr)")
        #expect(!FileIO.exists(cache + "/cas"), "no blob stored")
    }

    @Test func badCacheInputIsRejectedBeforeAnythingRuns() throws {
        let marker = Harness.makeTemporaryDirectory(mode: 0o777)
        let ws = Self.workspace(marker: marker)
        defer { [marker, ws].forEach(Harness.removeTree) }
        for (extra, env) in [(["--cache-url", "ftp://x"], [String]()), ([], ["DGRUN_CACHE_URL=not a url"]),
                             ([], ["DGRUN_CACHE_HEADER=no colon"]), (["--cache", ""], [])] {
            let r = exec(ws, marker: marker, extra, env: env)
            #expect(r.status == 125, "\(extra) \(env): \(r.stderr)")
        }
        try "run = \"true\"\n[cache]\nurl = \"gopher://x\"\n".write(toFile: ws + "/a/task.toml", atomically: false, encoding: .utf8)
        let r = exec(ws, marker: marker, [])
        #expect(r.status == 125 && r.stderr.contains("task.toml") && r.stderr.contains("cache.url"), "\(r.stderr)")
        #expect(Self.runs(marker).isEmpty)
        #expect(!FileIO.exists(ws + "/b/.dgrun"), "no partial state")
    }

    // MARK: - the remote cache

    /// nginx with WebDAV on 127.0.0.1, its config, pid file, logs and root in a temporary directory.
    struct Nginx {
        var dir: String
        var port: Int
        var pid: pid_t
        var url: String { "http://127.0.0.1:\(port)/cache" }
        var root: String { dir + "/root" }

        static func start() throws -> Nginx {
            let candidates: [String] = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            guard let binary = candidates.first(where: { (path: String) -> Bool in FileIO.isExecutable(path) }) else {
                try Harness.unavailable("", "nginx is not installed (apt-get install nginx-light): the remote cache tests need a WebDAV server")
            }
            guard dlopen("libcurl.so.4", RTLD_NOW) != nil else {
                try Harness.unavailable("", "libcurl.so.4 is not installed (apt-get install libcurl4): dgrun's remote cache is off without it")
            }
            let dir = Harness.makeTemporaryDirectory()
            mkdir(dir + "/root", 0o777)
            chmod(dir + "/root", 0o777)  // nginx's workers run as an unprivileged user
            mkdir(dir + "/tmp", 0o777)
            chmod(dir + "/tmp", 0o777)
            let port = freePort()
            try """
                daemon off;
                worker_processes 1;
                pid \(dir)/nginx.pid;
                error_log \(dir)/error.log;
                events { worker_connections 64; }
                http {
                    access_log \(dir)/access.log;
                    client_body_temp_path \(dir)/tmp;
                    proxy_temp_path \(dir)/tmp; fastcgi_temp_path \(dir)/tmp; uwsgi_temp_path \(dir)/tmp; scgi_temp_path \(dir)/tmp;
                    server {
                        listen 127.0.0.1:\(port);
                        root \(dir)/root;
                        client_max_body_size 0;
                        location / { dav_methods PUT; create_full_put_path on; dav_access user:rw group:r all:r; }
                    }
                }

                """.write(toFile: dir + "/nginx.conf", atomically: false, encoding: .utf8)
            let pid = Harness.start([binary, "-e", dir + "/error.log", "-p", dir, "-c", dir + "/nginx.conf"])
            let up = Harness.waitUntil(timeout: 10) { connects(port) }
            guard pid > 0, up else {
                Harness.stop(pid)
                let log = (try? String(contentsOfFile: dir + "/error.log", encoding: .utf8)) ?? ""
                Harness.removeTree(dir)
                try Harness.unavailable("", "nginx did not start on 127.0.0.1:\(port): \(log)")
            }
            return Nginx(dir: dir, port: port, pid: pid)
        }

        func stop() {
            Harness.stop(pid)
            Harness.removeTree(dir)
        }

        func requests(_ method: String) -> Int {
            ((try? String(contentsOfFile: dir + "/access.log", encoding: .utf8)) ?? "").split(separator: "\n")
                .filter { $0.contains("\"\(method) /cache/") }.count
        }

        static func freePort() -> Int {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
            return Int(UInt16(bigEndian: address.sin_port))
        }

        static func connects(_ port: Int) -> Bool {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: UInt16(port).bigEndian, sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
            return withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
        }
    }

    @Test func aRemoteRoundTripThroughNginxWithADownServerACorruptBlobAndReadOnlyMode() throws {
        let server = try Nginx.start()
        defer { server.stop() }
        let marker = Harness.makeTemporaryDirectory(mode: 0o777)
        let ws = Self.workspace(marker: marker)
        let caches = (0..<5).map { _ in Harness.makeTemporaryDirectory() }
        defer { ([marker, ws] + caches).forEach(Harness.removeTree) }

        // The first machine runs and uploads.
        var r = exec(ws, marker: marker, ["--cache", caches[0], "--cache-url", server.url])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!r.stderr.contains("warning"), "\(r.stderr)")
        #expect(server.requests("PUT") >= 6, "blobs and manifests uploaded")

        // A second machine: a clone, an empty local cache, the URL from the environment.
        let second = Self.clone(ws)
        defer { Harness.removeTree(second) }
        r = exec(second, marker: marker, ["--cache", caches[1]], env: ["DGRUN_CACHE_URL=" + server.url])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("a: restored from cache (the remote cache"), "\(r.stderr)")
        #expect(r.stderr.contains("b: restored from cache"), "\(r.stderr)")
        #expect(Self.runs(marker) == ["a", "b"], "nothing ran on the second machine")
        #expect(Harness.run(["cmp", ws + "/b/out/b.txt", second + "/b/out/b.txt"]).status == 0)
        #expect(Self.readLink(second + "/a/out/secret") == "/etc/shadow")

        // A server that is down: warned, run locally, never a failure.
        let third = Self.clone(ws)
        defer { Harness.removeTree(third) }
        r = exec(third, marker: marker, ["--cache", caches[2], "--cache-url", "http://127.0.0.1:\(Nginx.freePort())"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("warning: remote cache") && r.stderr.contains("runs locally"), "\(r.stderr)")
        #expect(Self.runs(marker).count == 4)

        // A corrupted blob on the server (overwritten on its disk): refused, and the task runs.
        let digest = String(Harness.run(["sha256sum", ws + "/a/out/a.txt"]).stdout.prefix(64))
        let stored = server.root + "/cache/cas/" + digest
        #expect(FileIO.exists(stored), "the blob is where the Bazel HTTP protocol puts it")
        try "poisoned\n".write(toFile: stored, atomically: false, encoding: .utf8)
        // And b's blob made longer than its manifest says: cut off on the way, refused.
        let bDigest = String(Harness.run(["sha256sum", ws + "/b/out/b.txt"]).stdout.prefix(64))
        try String(repeating: "x", count: 100_000).write(toFile: server.root + "/cache/cas/" + bDigest, atomically: false, encoding: .utf8)
        let fourth = Self.clone(ws)
        defer { Harness.removeTree(fourth) }
        r = exec(fourth, marker: marker, ["--cache", caches[3], "--cache-url", server.url])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("poisoned or truncated; refused"), "\(r.stderr)")
        #expect(r.stderr.contains("a: running"), "\(r.stderr)")
        #expect(Harness.run(["cmp", ws + "/a/out/a.txt", fourth + "/a/out/a.txt"]).status == 0)
        #expect(r.stderr.contains("longer than the 3 bytes expected"), "\(r.stderr)")
        #expect(r.stderr.contains("b: running"), "\(r.stderr)")
        #expect(Harness.run(["cmp", ws + "/b/out/b.txt", fourth + "/b/out/b.txt"]).status == 0)
        #expect(!FileIO.exists(caches[3] + "/cas/" + digest.prefix(2) + "/" + digest + "x"))

        // Read-only (an untrusted pull request): restores, never uploads.
        let fifth = Self.clone(ws)
        defer { Harness.removeTree(fifth) }
        try "changed in a pull request\n".write(toFile: fifth + "/a/in.txt", atomically: false, encoding: .utf8)
        let puts = server.requests("PUT")
        r = exec(fifth, marker: marker, ["--cache", caches[4], "--cache-url", server.url, "--cache-read-only"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(WorkspaceTests.outcome(r.stderr).ran == ["a", "b"], "\(r.stderr)")
        #expect(server.requests("PUT") == puts, "nothing was PUT in read-only mode")
    }
}
