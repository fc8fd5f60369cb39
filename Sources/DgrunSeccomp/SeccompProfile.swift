import DgrunSystem
import DgrunSpec

/// A seccomp profile in the OCI runtime-spec / Docker JSON format (the subset that is not Docker's
/// capability-conditional `includes`/`excludes`, which dgrun rejects rather than misreads).
public struct SeccompProfile: Sendable, Equatable {
    public struct Rule: Sendable, Equatable {
        public var names: [String]
        public var action: String
        public var errnoRet: UInt32?
        public var args: [Argument]?
        public var comment: String?
    }

    public struct Argument: Sendable, Equatable {
        public var index: UInt32
        public var value: UInt64
        public var valueTwo: UInt64?
        public var op: String
    }

    public var defaultAction: String
    public var defaultErrnoRet: UInt32?
    public var architectures: [String]?
    public var syscalls: [Rule]

    /// OCI's keys are read; others (Docker's `archMap`, `flags`, a rule's `includes`…) are left to
    /// the compiler's checks, as the OCI format allows extensions.
    init(_ json: JSONValue) throws(DgrunError) {
        let c = try JSONObject(json)
        guard let defaultAction = try c.string("defaultAction") else { throw DgrunError("missing key \"defaultAction\"") }
        self.defaultAction = defaultAction
        defaultErrnoRet = try c.unsigned("defaultErrnoRet", max: UInt64(UInt32.max)).map { UInt32($0) }
        architectures = try c.strings("architectures")
        syscalls = []
        for (i, rule) in (try c.array("syscalls") ?? []).enumerated() {
            let r = try JSONObject(rule, path: "syscalls[\(i)]")
            guard let names = try r.strings("names") else { throw DgrunError("missing key \"names\" at syscalls[\(i)]") }
            guard let action = try r.string("action") else { throw DgrunError("missing key \"action\" at syscalls[\(i)]") }
            var args: [Argument]? = nil
            if let list = try r.array("args") {
                args = []
                for (j, arg) in list.enumerated() {
                    let a = try JSONObject(arg, path: "syscalls[\(i)].args[\(j)]")
                    guard let index = try a.unsigned("index", max: UInt64(UInt32.max)) else { throw DgrunError("missing key \"index\" at \(a.path)") }
                    guard let value = try a.unsigned("value") else { throw DgrunError("missing key \"value\" at \(a.path)") }
                    guard let op = try a.string("op") else { throw DgrunError("missing key \"op\" at \(a.path)") }
                    args!.append(Argument(index: UInt32(index), value: value, valueTwo: try a.unsigned("valueTwo"), op: op))
                }
            }
            syscalls.append(Rule(names: names, action: action,
                                 errnoRet: try r.unsigned("errnoRet", max: UInt64(UInt32.max)).map { UInt32($0) },
                                 args: args, comment: try r.string("comment")))
        }
    }

    public static func decode(_ bytes: [UInt8], path: String) throws(DgrunError) -> SeccompProfile {
        do {
            return try SeccompProfile(JSONReader.parse(bytes))
        } catch {
            throw DgrunError("seccomp profile \(path) is not valid OCI seccomp JSON: \(error.message)")
        }
    }
}
