import DgrunSystem
import CDgrunSpawn
import CSeccomp
import DgrunSpec
#if canImport(Glibc)
import Glibc
#endif

/// The seccomp user-notification filter of `dgrun discover`: every file, exec and network call
/// goes to dgrun's tracer, except the two that would only cost time or deadlock it.
public enum TraceFilter {
    /// `socket`: the fd number (in the command) over which the listener is sent; that one
    /// sendmsg must not wait for a tracer that does not have the listener yet.
    /// `fastPath`: the calls the preloaded library makes from its stub page pass (its prefix,
    /// dgrun_fasttrace_prefix, comes first: libseccomp cannot compare the instruction pointer, and
    /// it must be this filter that allows them, since a USER_NOTIF here outranks any later ALLOW).
    public static func program(socket: Int32, fastPath: Bool = false) throws(DgrunError) -> [UInt8] {
        guard let ctx = seccomp_init(dgrun_act_allow()) else { throw DgrunError("libseccomp could not start the tracer's filter") }
        defer { seccomp_release(ctx) }
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)
        let notify = dgrun_act_notify()
        let atEmptyPath: UInt64 = 0x1000
        for i in 0..<dgrun_traced_syscall_count() {
            let nr = dgrun_traced_syscall(i)
            var args: [scmp_arg_cmp] = []
            switch nr {
            case Int32(SYS_sendmsg):
                args = [scmp_arg_cmp(arg: 0, op: SCMP_CMP_NE, datum_a: UInt64(socket), datum_b: 0)]
            case Int32(SYS_newfstatat):
                // glibc's fstat is newfstatat(fd, "", AT_EMPTY_PATH): no path, only cost.
                args = [scmp_arg_cmp(arg: 3, op: SCMP_CMP_MASKED_EQ, datum_a: atEmptyPath, datum_b: 0)]
            case Int32(SYS_statx):
                args = [scmp_arg_cmp(arg: 2, op: SCMP_CMP_MASKED_EQ, datum_a: atEmptyPath, datum_b: 0)]
            default:
                break
            }
            let rc = args.withUnsafeBufferPointer { seccomp_rule_add_array(ctx, notify, nr, UInt32($0.count), $0.baseAddress) }
            guard rc == 0 else { throw DgrunError("libseccomp rejected the tracer rule for syscall \(nr): \(String(cString: strerror(-rc)))") }
        }
        let program = try SeccompCompiler.export(ctx, what: "the tracer's filter")
        guard fastPath else { return program }
        var prefix = [dgrun_bpf_insn](repeating: dgrun_bpf_insn(), count: Int(DGRUN_FASTTRACE_PREFIX_LEN))
        let n = prefix.withUnsafeMutableBufferPointer { dgrun_fasttrace_prefix($0.baseAddress, DGRUN_FASTTRACE_STUB) }
        let bytes = prefix.prefix(Int(n)).withUnsafeBytes { Array($0) }
        guard (bytes.count + program.count) / 8 <= 4096 else { throw DgrunError("the tracer's filter is too long with the fast path's prefix") }
        return bytes + program
    }
}
