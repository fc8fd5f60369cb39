import DgrunStatic
import FuzzSupport

// The shell-script scanner: commands, and literal paths, URLs and host:port in any script.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = FuzzInput(data, size).text
    _ = ScriptScanner.commands(inShellScript: text)
    // Every absolute path "exists", so that the path branch runs without touching the disk.
    _ = ScriptScanner.literals(in: text, pathExists: { _ in true })
    return 0
}

runFuzzer(fuzz)
