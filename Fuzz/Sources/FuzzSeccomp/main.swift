import DgrunSeccomp
import FuzzSupport

// An OCI seccomp profile: the JSON decode, then libseccomp's compile to BPF (in-process, no
// kernel call: it only exports to a memfd), which is what a profile named by a task gets.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = FuzzInput(data, size)
    fuzzParse { () throws(DgrunError) in
        let profile = try SeccompProfile.decode(input.bytes, path: "/fuzz/seccomp.json")
        let program = try SeccompCompiler.compile(profile, path: "/fuzz/seccomp.json")
        precondition(program.count % 8 == 0, "a BPF program is a whole number of 8-byte instructions")
    }
    return 0
}

runFuzzer(fuzz)
