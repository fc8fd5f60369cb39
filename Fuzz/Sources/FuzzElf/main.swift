import DgrunStatic
import FuzzSupport

// The ELF reader: interpreter, DT_NEEDED, rpath/runpath, soname, build-id of any file a task runs.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = FuzzInput(data, size)
    if let elf = try? ElfFile.parse(input.bytes) { _ = elf.isStatic }
    return 0
}

runFuzzer(fuzz)
