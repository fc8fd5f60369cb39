import DgrunStatic
import FuzzSupport

// /etc/ld.so.cache (a --rootfs brings its own): the old and new table formats.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = FuzzInput(data, size)
    let cache = LdSoCache.parse(input.bytes)
    _ = cache.entries.count
    return 0
}

runFuzzer(fuzz)
