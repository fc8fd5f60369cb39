import CDgrunSpawn
import DgrunSystem
import FuzzSupport

// The tracer's log as TraceEvent.parse reads it: fixed headers, each followed by its
// variable parts (paths, sockaddr, data), whatever the lengths say.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var bytes = FuzzInput(data, size).bytes
    bytes.withUnsafeMutableBufferPointer { buffer in
        var log = dgrun_trace_log()
        log.bytes = buffer.baseAddress
        log.length = buffer.count
        log.capacity = buffer.count
        for event in TraceEvent.parse(log) {
            _ = event.writes
            _ = event.replacedVersion
            _ = event.syscallName
        }
    }
    return 0
}

runFuzzer(fuzz)
