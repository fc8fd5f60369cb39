import DgrunSystem
import FoundationEssentials
import DgrunSpec

/// A seccomp profile in the OCI runtime-spec / Docker JSON format (the subset that is not Docker's
/// capability-conditional `includes`/`excludes`, which dgrun rejects rather than misreads).
public struct SeccompProfile: Sendable, Equatable, Decodable {
    public struct Rule: Sendable, Equatable, Decodable {
        public var names: [String]
        public var action: String
        public var errnoRet: UInt32?
        public var args: [Argument]?
        public var comment: String?
    }

    public struct Argument: Sendable, Equatable, Decodable {
        public var index: UInt32
        public var value: UInt64
        public var valueTwo: UInt64?
        public var op: String
    }

    public var defaultAction: String
    public var defaultErrnoRet: UInt32?
    public var architectures: [String]?
    public var syscalls: [Rule]

    enum CodingKeys: String, CodingKey { case defaultAction, defaultErrnoRet, architectures, syscalls }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        defaultAction = try c.decode(String.self, forKey: .defaultAction)
        defaultErrnoRet = try c.decodeIfPresent(UInt32.self, forKey: .defaultErrnoRet)
        architectures = try c.decodeIfPresent([String].self, forKey: .architectures)
        syscalls = try c.decodeIfPresent([Rule].self, forKey: .syscalls) ?? []
    }

    public static func decode(_ bytes: [UInt8], path: String) throws(DgrunError) -> SeccompProfile {
        do {
            return try JSONDecoder().decode(SeccompProfile.self, from: Data(bytes))
        } catch {
            throw DgrunError("seccomp profile \(path) is not valid OCI seccomp JSON: \(JSONErrorText.describe(error))")
        }
    }
}
