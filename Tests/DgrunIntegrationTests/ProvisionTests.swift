import DgrunSystem
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Provisioning before a run: [fetch] files through a content-addressed cache, revalidated with
/// the server (a python http.server on loopback), and [services] wait.
@Suite(.serialized) struct ProvisionTests {
    static func freePort() -> UInt16 {
        guard let listener = try? LoopbackListener() else { return 0 }
        defer { listener.close() }
        return listener.port
    }

    /// Whether something accepts TCP connections on 127.0.0.1:port.
    static func accepts(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    func exec(_ task: String, cache: String) -> RunResult {
        Harness.run(["XDG_CACHE_HOME=" + cache, Harness.binary, "exec"] + WorkspaceTests.limitFlags + [task])
    }

    @Test(.enabled(if: Harness.hasCommand("python3") && Harness.hasCommand("curl"), "needs python3 and curl"))
    func fetchedInputsAreCachedRevalidatedAndVerified() throws {
        let served = Harness.makeTemporaryDirectory(), task = Harness.makeTemporaryDirectory(), cache = Harness.makeTemporaryDirectory()
        defer { [served, task, cache].forEach(Harness.removeTree) }
        try "a,1\nb,2\n".write(toFile: served + "/remote.csv", atomically: false, encoding: .utf8)
        let port = Self.freePort()
        var server = Harness.start(["python3", "-m", "http.server", "--bind", "127.0.0.1", String(port)], cwd: served)
        defer { Harness.stop(server) }
        #expect(Harness.waitUntil(timeout: 10) { Self.accepts(port) }, "the server listens")
        try """
        run = "wc -l < data/remote.csv > out.txt"
        [fetch]
        "data/remote.csv" = { url = "http://127.0.0.1:\(port)/remote.csv" }
        """.write(toFile: task + "/task.toml", atomically: false, encoding: .utf8)

        var r = exec(task, cache: cache)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("remote.csv: fetched"))
        #expect(try String(contentsOfFile: task + "/out.txt", encoding: .utf8) == "2\n")
        #expect(FileManager.default.fileExists(atPath: cache + "/dgrun/fetch/sha256/" + DiscoverTests.sha256("a,1\nb,2\n")))

        r = exec(task, cache: cache)
        #expect(r.stderr.contains("not modified"), "revalidated with If-Modified-Since: \(r.stderr)")
        #expect(r.stderr.contains("up to date"))

        // New content on the server (with a later date): fetched again, and the task re-runs.
        try "a,1\nb,2\nc,3\n".write(toFile: served + "/remote.csv", atomically: false, encoding: .utf8)
        Harness.run(["touch", "-d", "@\(Int(Date().timeIntervalSince1970) + 5)", served + "/remote.csv"])
        r = exec(task, cache: cache)
        #expect(r.stderr.contains("remote.csv: fetched"), "\(r.stderr)")
        #expect(r.stderr.contains("running"))
        #expect(try String(contentsOfFile: task + "/out.txt", encoding: .utf8) == "3\n")

        // The server gone: the cached copy serves, nothing changed, up to date.
        Harness.stop(server)
        server = -1
        r = exec(task, cache: cache)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("offline: using the cached copy"))
        #expect(r.stderr.contains("up to date"))

        // A pinned checksum that the content does not have: refused before anything runs.
        let pinned = Harness.makeTemporaryDirectory()
        defer { Harness.removeTree(pinned) }
        server = Harness.start(["python3", "-m", "http.server", "--bind", "127.0.0.1", String(port)], cwd: served)
        #expect(Harness.waitUntil(timeout: 10) { Self.accepts(port) })
        try """
        run = "cat data/remote.csv > out.txt"
        [fetch]
        "data/remote.csv" = { url = "http://127.0.0.1:\(port)/remote.csv", sha256 = "\(String(repeating: "0", count: 64))" }
        """.write(toFile: pinned + "/task.toml", atomically: false, encoding: .utf8)
        r = exec(pinned, cache: cache)
        #expect(r.status == 122, "\(r.stderr)")
        #expect(r.stderr.contains("checksum mismatch"))
        #expect(!FileManager.default.fileExists(atPath: pinned + "/out.txt"))
        #expect(!FileManager.default.fileExists(atPath: pinned + "/data/remote.csv"))
    }

    /// A task that connects to a loopback service, run once while the service was up (so the
    /// service is recorded), then the service stopped. The task appends "ok" to ran.log.
    func taskWhoseServiceStopped(wait: String) throws -> (task: String, port: UInt16) {
        let task = Harness.makeTemporaryDirectory()
        let listener = try LoopbackListener(host: "127.0.0.3")
        let port = listener.port
        try """
        run = "python3 -c \\"import socket; socket.create_connection(('127.0.0.3', \(port)), 2).close()\\" && echo ok >> ran.log"
        [sandbox]
        network = "host"
        [services]
        wait = "\(wait)"
        """.write(toFile: task + "/task.toml", atomically: false, encoding: .utf8)
        #expect(exec(task, cache: task).status == 0)
        listener.close()
        return (task, port)
    }

    /// A service that does not come back within the bound still blocks, once the bound has passed.
    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func serviceWaitBoundThatPassesStillBlocks() throws {
        let (task, port) = try taskWhoseServiceStopped(wait: "1s")
        defer { Harness.removeTree(task) }
        let started = DgrunSystem.Clock.monotonic()
        let r = exec(task, cache: task)
        #expect(r.status == 122, "\(r.stderr)")
        #expect(DgrunSystem.Clock.monotonic() - started >= 1.0, "it waited for the bound first")
        #expect(r.stderr.contains("tcp://127.0.0.3:\(port)"), "\(r.stderr)")
        #expect(try String(contentsOfFile: task + "/ran.log", encoding: .utf8) == "ok\n", "the task did not start again")
    }

    @Test(.enabled(if: Harness.hasCommand("python3"), "needs python3"))
    func serviceWaitBoundLetsALateServiceStart() throws {
        let (task, port) = try taskWhoseServiceStopped(wait: "30s")
        defer { Harness.removeTree(task) }
        let started = DispatchSemaphore(value: 0)
        let late = Thread {
            usleep(3_000_000)  // long after dgrun found the service gone, even on a loaded machine
            let again = try? LoopbackListener(port: port, host: "127.0.0.3")
            started.signal()
            usleep(8_000_000)  // long enough for the run; then the port closes again
            again?.close()
        }
        late.start()
        let r = exec(task, cache: task)
        started.wait()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("waiting up to 30s for tcp://127.0.0.3:\(port)"), "\(r.stderr)")
    }
}
