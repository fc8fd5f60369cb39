import DgrunSpec
import FuzzSupport

// A sandbox profile (profiles/*.json), as `--profile FILE` reads it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = FuzzInput(data, size)
    fuzzParse { () throws(DgrunError) in
        let profile = try SandboxProfile.decode(input.bytes, path: "/fuzz/profiles/p.json")
        _ = profile.seccompPath
    }
    return 0
}

runFuzzer(fuzz)
