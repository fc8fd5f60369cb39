import CDgrunSpawn
import DgrunProvision
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// The tracer's fast path (dgrun_fasttrace.h, preload/dgrun_preload.c): libdgrun-preload.so,
/// preloaded into a traced task, makes libc's read-only file calls from a stub page the notify
/// filter lets through and records them into a ring that dgrun drains. Without the library, or
/// where the sandbox could not load it, every call traps as before: slower, never less complete.
public enum FastTrace {
    public static let libraryName = "libdgrun-preload.so"

    /// Where the library is: `DGRUN_PRELOAD` (a path, or `off`), else beside the binary
    /// (`<repo>/.build/<config>/`) or in `<prefix>/lib/dgrun/` for `<prefix>/bin/dgrun`.
    public static let installed: String? = {
        #if arch(x86_64)
        if let forced = getenv("DGRUN_PRELOAD").map({ String(cString: $0) }), !forced.isEmpty {
            if forced == "off" || forced == "0" { return nil }
            return FileIO.realPath(forced).flatMap { isRegularFile($0) ? $0 : nil }
        }
        guard let exe = FileIO.realPath("/proc/self/exe"), let slash = exe.lastIndex(of: "/") else { return nil }
        let dir = String(exe[..<slash])
        for candidate in [dir + "/" + libraryName, dir + "/../lib/dgrun/" + libraryName] {
            if let path = FileIO.realPath(candidate), isRegularFile(path) { return path }
        }
        return nil
        #else
        return nil  // the stub is x86-64 code
        #endif
    }()

    private static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// The library, when the sandbox sees it at the same path: the host's root, and nothing
    /// mounted over it. A preload that is missing inside would make the loader print an error
    /// into the task's output.
    static func library(for spec: SandboxSpec) -> String? {
        guard let path = installed, spec.rootfs == nil else { return nil }
        func covers(_ root: String) -> Bool { root == "/" || path == root || path.hasPrefix(root.hasSuffix("/") ? root : root + "/") }
        if spec.tmpfs.contains(where: covers) || spec.maskedPaths.contains(where: covers) { return nil }
        if spec.binds.contains(where: { covers($0.target) && $0.source != $0.target }) { return nil }
        // --userns auto: the loader opens it as an id of the subordinate range, an "other" here.
        if spec.subordinateIDs != nil && !readableByOthers(path) { return nil }
        return path
    }

    /// The file readable, and every directory above it searchable, by any user.
    static func readableByOthers(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0, st.st_mode & S_IROTH != 0 else { return false }
        var dir = path
        while let slash = dir.lastIndex(of: "/"), slash != dir.startIndex {
            dir = String(dir[..<slash])
            guard stat(dir, &st) == 0, st.st_mode & S_IXOTH != 0 else { return false }
        }
        return true
    }

    /// The command's environment with the library preloaded (before any the task asked for) and
    /// the stub and ring named for it.
    static func environment(_ environment: [String], library: String, ring: Int32) -> [String] {
        var env = environment.filter { !$0.hasPrefix(DGRUN_FASTTRACE_ENV + "=") }
        let config = DGRUN_FASTTRACE_ENV + "=" + String(DGRUN_FASTTRACE_STUB, radix: 16) + ":" + String(ring)
        if let index = env.firstIndex(where: { $0.hasPrefix("LD_PRELOAD=") }) {
            let theirs = env[index].dropFirst("LD_PRELOAD=".count)
            env[index] = "LD_PRELOAD=" + library + (theirs.isEmpty ? "" : ":" + theirs)
        } else {
            env.append("LD_PRELOAD=" + library)
        }
        env.append(config)
        return env
    }
}
