/// The parsers' entries, used by the fuzzers (Fuzz/): the sockaddr and DNS-query decoder that
/// turns a traced connect, bind or sendto into the graph's endpoint, otherwise internal.
extension Graph {
    /// What a traced call's sockaddr (and first bytes sent) name; nil for an address the graph ignores.
    public static func endpoint(sockaddr: [UInt8], data: [UInt8], socketType: Int) -> (uri: String, isLoopback: Bool, dnsName: String?)? {
        Endpoint(sockaddr: sockaddr, data: data, socketType: socketType).map { ($0.uri, $0.isLoopback, $0.dnsName) }
    }

    /// Whether a server bound at `server` answers a connection to `client` (both sockaddrs).
    public static func endpointServes(client: [UInt8], server: [UInt8], socketType: Int) -> Bool? {
        guard let c = Endpoint(sockaddr: client, data: [], socketType: socketType),
              let s = Endpoint(sockaddr: server, data: [], socketType: socketType) else { return nil }
        return c.isServed(by: s)
    }
}
