/// A wait(2) status word, decoded once for everyone (the launcher, the init's report).
public struct WaitStatus: Sendable, Equatable {
    public var raw: Int32
    public init(_ raw: Int32) { self.raw = raw }

    /// Ended by a signal (not stopped).
    public var signaled: Bool { (raw & 0x7f) != 0 && (raw & 0x7f) != 0x7f }
    public var signal: Int32? { signaled ? raw & 0x7f : nil }
    public var exitCode: Int32 { (raw >> 8) & 0xff }
    /// The status of the contract: the code, or 128+N for signal N.
    public var shellStatus: Int32 { signal.map { 128 + $0 } ?? exitCode }
}
