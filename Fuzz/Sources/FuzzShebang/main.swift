import DgrunStatic
import FuzzSupport

// The #! line of any file a task executes (env's own options included).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = FuzzInput(data, size)
    // As Shebang.read gives it: at most 256 bytes of the head.
    if let shebang = Shebang.parse(Array(input.bytes.prefix(256))) { _ = shebang.envProgram }
    _ = Shebang.parse(input.bytes)
    return 0
}

runFuzzer(fuzz)
