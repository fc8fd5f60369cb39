import DgrunGraph
import FuzzSupport

// A traced connect/bind/sendto: the sockaddr bytes the task passed, and the first bytes it sent
// (a DNS query's name). Input: socket type byte, sockaddr length byte, sockaddr, data.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = FuzzInput(data, size).bytes
    guard bytes.count >= 2 else { return 0 }
    let socketType = Int(bytes[0] % 4)
    let length = min(Int(bytes[1]), 128, bytes.count - 2)  // the tracer copies at most 128 bytes
    let address = Array(bytes[2..<2 + length])
    let payload = Array(bytes[(2 + length)...].prefix(512))  // and at most 512 bytes sent
    if let endpoint = Graph.endpoint(sockaddr: address, data: payload, socketType: socketType) {
        _ = endpoint.uri.utf8.count
        // The rest as a server's address: the wildcard match of bind against connect.
        _ = Graph.endpointServes(client: address, server: payload, socketType: socketType)
    }
    return 0
}

runFuzzer(fuzz)
