import CSeccomp
import DgrunSpec
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// Compiles an OCI seccomp profile to a BPF program with libseccomp, in the parent: the child only
/// loads the bytes with seccomp(2), because libseccomp allocates.
public enum SeccompCompiler {
    public static func action(_ name: String, errnoRet: UInt32?, defaultErrno: UInt32?) throws(DgrunError) -> UInt32 {
        switch name {
        case "SCMP_ACT_ALLOW": return dgrun_act_allow()
        case "SCMP_ACT_ERRNO": return dgrun_act_errno(UInt16(truncatingIfNeeded: errnoRet ?? defaultErrno ?? UInt32(EPERM)))
        case "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD": return dgrun_act_kill_thread()
        case "SCMP_ACT_KILL_PROCESS": return dgrun_act_kill_process()
        case "SCMP_ACT_TRAP": return dgrun_act_trap()
        case "SCMP_ACT_LOG": return dgrun_act_log()
        case "SCMP_ACT_TRACE": return dgrun_act_trace(UInt16(truncatingIfNeeded: errnoRet ?? 0))
        case "SCMP_ACT_NOTIFY": return dgrun_act_notify()
        default: throw DgrunError("unknown seccomp action \"\(name)\"")
        }
    }

    static func compare(_ op: String) throws(DgrunError) -> scmp_compare {
        switch op {
        case "SCMP_CMP_NE": return SCMP_CMP_NE
        case "SCMP_CMP_LT": return SCMP_CMP_LT
        case "SCMP_CMP_LE": return SCMP_CMP_LE
        case "SCMP_CMP_EQ": return SCMP_CMP_EQ
        case "SCMP_CMP_GE": return SCMP_CMP_GE
        case "SCMP_CMP_GT": return SCMP_CMP_GT
        case "SCMP_CMP_MASKED_EQ": return SCMP_CMP_MASKED_EQ
        default: throw DgrunError("unknown seccomp comparison \"\(op)\"")
        }
    }

    /// The BPF program (an array of struct sock_filter, 8 bytes each) for this machine's architecture.
    /// Syscall names this libseccomp does not know are skipped, as runc and Docker do.
    public static func compile(_ profile: SeccompProfile, path: String) throws(DgrunError) -> [UInt8] {
        let defaultAction = try action(profile.defaultAction, errnoRet: profile.defaultErrnoRet, defaultErrno: nil)
        guard let ctx = seccomp_init(defaultAction) else {
            throw DgrunError("libseccomp could not start a filter for \(path) (default action \(profile.defaultAction))")
        }
        defer { seccomp_release(ctx) }
        // dgrun sets no_new_privs itself, just before loading the program.
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)
        optimizeAsTree(ctx)
        for rule in profile.syscalls {
            let act = try action(rule.action, errnoRet: rule.errnoRet, defaultErrno: profile.defaultErrnoRet)
            if act == defaultAction && (rule.args ?? []).isEmpty { continue }  // libseccomp rejects these
            var comparisons: [scmp_arg_cmp] = []
            for arg in rule.args ?? [] {
                comparisons.append(scmp_arg_cmp(arg: arg.index, op: try compare(arg.op),
                                                datum_a: arg.value, datum_b: arg.valueTwo ?? 0))
            }
            for name in rule.names {
                let nr = seccomp_syscall_resolve_name(name)
                if nr == __NR_SCMP_ERROR { continue }
                let rc = comparisons.withUnsafeBufferPointer {
                    seccomp_rule_add_array(ctx, act, nr, UInt32($0.count), $0.baseAddress)
                }
                if rc != 0 && rc != -EEXIST {
                    throw DgrunError("seccomp profile \(path): rule for \(name) rejected by libseccomp: \(String(cString: strerror(-rc)))")
                }
            }
        }
        return try export(ctx, what: path)
    }

    static let cloneNewUser: UInt64 = 0x1000_0000

    /// Syscall numbers in a binary tree, not a chain of comparisons. When a filter is loaded, the
    /// kernel runs it for every syscall number to find the ones it always allows (seccomp's action
    /// cache); through the default profile's chain of 66 comparisons that took ~150 µs of each
    /// start, through the tree ~60 µs (bench/floor/seccomp-load.c, run by bench/startup.sh). Best effort: a libseccomp
    /// without the attribute builds the chain, which is as correct.
    static func optimizeAsTree(_ ctx: scmp_filter_ctx) {
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)
    }

    /// The sandbox profile's `user_namespaces: "deny"`, as a filter of its own, stacked on the
    /// profile's: clone and unshare with CLONE_NEWUSER get EPERM, clone3 (whose flags live in
    /// memory a filter cannot read) ENOSYS, so that libc falls back to clone (as Docker's default
    /// does). The kernel applies the strictest answer of all filters, so no rule of the seccomp
    /// profile, allow-list or not, can undo it.
    public static func userNamespaceGuard() throws(DgrunError) -> [UInt8] {
        guard let ctx = seccomp_init(dgrun_act_allow()) else { throw DgrunError("libseccomp could not start the user-namespace filter") }
        defer { seccomp_release(ctx) }
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)
        let newUser = [scmp_arg_cmp(arg: 0, op: SCMP_CMP_MASKED_EQ, datum_a: cloneNewUser, datum_b: cloneNewUser)]
        let rules: [(String, UInt32, [scmp_arg_cmp])] = [
            ("clone", dgrun_act_errno(UInt16(EPERM)), newUser), ("unshare", dgrun_act_errno(UInt16(EPERM)), newUser),
            ("clone3", dgrun_act_errno(UInt16(ENOSYS)), []),
        ]
        for (name, action, comparisons) in rules {
            let nr = seccomp_syscall_resolve_name(name)
            guard nr != __NR_SCMP_ERROR else { continue }
            let rc = comparisons.withUnsafeBufferPointer { seccomp_rule_add_array(ctx, action, nr, UInt32($0.count), $0.baseAddress) }
            guard rc == 0 else { throw DgrunError("libseccomp rejected the user-namespace rule for \(name): \(String(cString: strerror(-rc)))") }
        }
        return try export(ctx, what: "the user-namespace filter")
    }

    /// The BPF bytes of a libseccomp filter, through a memfd (libseccomp 2.5 exports only to an fd).
    static func export(_ ctx: scmp_filter_ctx, what: String) throws(DgrunError) -> [UInt8] {
        let fd = dgrun_memfd_cloexec()
        guard fd >= 0 else { throw DgrunError("memfd_create for the seccomp program failed: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let rc = seccomp_export_bpf(ctx, fd)
        guard rc == 0 else { throw DgrunError("libseccomp could not export the filter of \(what): \(String(cString: strerror(-rc)))") }
        let size = Int(lseek(fd, 0, SEEK_END))
        var bytes = [UInt8](repeating: 0, count: size)
        let got = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, 0) }
        guard got == size, size % 8 == 0, size / 8 <= Int(UInt16.max) else {
            throw DgrunError("the seccomp program of \(what) could not be read back (\(got) of \(size) bytes)")
        }
        return bytes
    }

    public static func load(path: String) throws(DgrunError) -> [UInt8] {
        let bytes: [UInt8]
        do { bytes = try FileIO.readBytes(path) } catch { throw DgrunError("cannot read seccomp profile: \(error)") }
        return try compile(SeccompProfile.decode(bytes, path: path), path: path)
    }
}
