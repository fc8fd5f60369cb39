import Foundation

/// The unit tests' directories, all under one per-process root removed at exit (they were left
/// in /tmp, one per test run).
enum TemporaryRoot {
    static let path: String = {
        let root = "/tmp/dgrun-unit-\(getpid())"
        mkdir(root, 0o755)
        atexit { try? FileManager.default.removeItem(atPath: "/tmp/dgrun-unit-\(getpid())") }
        return root
    }()

    static func directory(_ prefix: String) -> String {
        var template = Array((path + "/" + prefix + "-XXXXXX").utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }
}
