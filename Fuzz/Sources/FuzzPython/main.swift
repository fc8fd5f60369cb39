import DgrunStatic
import FuzzSupport

// Python import statements (continued and parenthesised lists, relative imports).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let modules = PythonImports.modules(in: FuzzInput(data, size).text)
    // Relative names reach resolve's walk up the script's directories; nothing below exists.
    for module in modules.prefix(8) where module.hasPrefix(".") {
        _ = PythonImports.resolve(module, relativeTo: "/nonexistent/fuzz/a/b", searchPath: [])
    }
    return 0
}

runFuzzer(fuzz)
