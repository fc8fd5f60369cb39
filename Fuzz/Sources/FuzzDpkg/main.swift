import DgrunStatic
import FuzzSupport

// dpkg's status file (Packages format) and dgrun's own index cache of the .list files.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = FuzzInput(data, size)
    _ = DebianPackages.installedVersions(status: input.text, packages: ["bash", "libc6", "coreutils", "python3"])
    _ = DebianPackages.indexOwners(input.bytes, paths: ["/bin/bash", "/usr/lib/x86_64-linux-gnu/libc.so.6", ""])
    return 0
}

runFuzzer(fuzz)
