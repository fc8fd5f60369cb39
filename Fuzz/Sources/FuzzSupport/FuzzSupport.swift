import CFuzzDriver
@_exported import DgrunSystem  // DgrunError, for every target
#if canImport(Glibc)
import Glibc
#endif

/// The bytes libFuzzer hands a target, and the few ways the targets cut them up.
public struct FuzzInput {
    public let bytes: [UInt8]

    public init(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        bytes = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    }

    /// As a file's text is read: invalid UTF-8 replaced, as FileIO.read does.
    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// The first byte (a selector), and the rest.
    public var head: (UInt8, ArraySlice<UInt8>) {
        bytes.isEmpty ? (0, []) : (bytes[0], bytes.dropFirst())
    }
}

/// Runs one parse: a thrown DgrunError is the parser saying no, which is fine. A crash, trap,
/// hang or sanitizer report is what the fuzzers look for, and libFuzzer reports those itself.
@inline(never)
public func fuzzParse(_ body: () throws(DgrunError) -> Void) {
    do { try body() } catch { _ = error.message }
}

/// Hands the process to libFuzzer with `callback` as the target (the same function the target
/// exports as LLVMFuzzerTestOneInput); the command line is libFuzzer's.
public func runFuzzer(_ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, callback))
}
