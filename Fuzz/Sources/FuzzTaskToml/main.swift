import DgrunSpec
import FuzzSupport

// task.toml: the TOML subset and every key's validation (limits, sandbox, fetch, services).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = FuzzInput(data, size)
    fuzzParse { () throws(DgrunError) in
        let task = try TaskFile.parse(input.text, directory: "/fuzz/task")
        _ = task.workingDirectory
        // What the launcher and the planner do with an accepted file must not trap either: the
        // timeouts become Int64 milliseconds (`timeout = "1e300s"` once parsed and then trapped there).
        for seconds in [task.timeoutSeconds, task.serviceWaitSeconds].compactMap({ $0 }) {
            precondition(seconds.isFinite && seconds > 0 && seconds * 1000 < Double(Int64.max), "duration \(seconds) s accepted")
        }
    }
    return 0
}

runFuzzer(fuzz)
