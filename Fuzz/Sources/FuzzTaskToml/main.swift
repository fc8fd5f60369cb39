import DgrunSpec
import FuzzSupport

// task.toml: the TOML subset and every key's validation (limits, sandbox, fetch, services).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = FuzzInput(data, size)
    fuzzParse { () throws(DgrunError) in
        let task = try TaskFile.parse(input.text, directory: "/fuzz/task")
        _ = task.workingDirectory
    }
    return 0
}

runFuzzer(fuzz)
