/// dgrun's one error type: what kind of failure, the message a user reads, the cause below it, and
/// the exit status of the contract it maps to. In the manner of swift-subprocess's SubprocessError
/// and apple/containerization's ContainerizationError: one type from the syscall wrappers up to the
/// verbs, so that a face never needs a ladder of `catch … as` to pick an exit status.
public struct DgrunError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable {
        /// A bad flag or argument on the command line (exit 125, with the verb's help named).
        case usage
        /// A malformed task.toml, profile, seccomp profile, or a value out of range (exit 125).
        case invalidInput
        /// The state store could not be opened, read or written (exit 125).
        case store
        /// The sandbox could not be created or prepared (exit 125).
        case sandbox
        /// The command exists but cannot be executed (exit 126).
        case notExecutable
        /// The command was not found (exit 127).
        case notFound
        /// A task could not start: something it needs is missing or unavailable (exit 122).
        case blocked
    }

    public var code: Code
    public var message: String
    /// The failed kernel call below this error, when there was one.
    public var cause: SystemError?
    /// For `.usage`: the verb whose --help to point at.
    public var verb: String?

    public init(_ message: String, code: Code = .invalidInput, cause: SystemError? = nil, verb: String? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
        self.verb = verb
    }

    public static func usage(_ message: String, verb: String? = nil) -> DgrunError {
        DgrunError(message, code: .usage, verb: verb)
    }
    public static func store(_ message: String, cause: SystemError? = nil) -> DgrunError {
        DgrunError(message, code: .store, cause: cause)
    }
    /// A failure to start the sandbox, by the exit status it gives (125, 126 or 127).
    public static func launch(_ message: String, exitCode: Int32 = 125, cause: SystemError? = nil) -> DgrunError {
        DgrunError(message, code: exitCode == 127 ? .notFound : exitCode == 126 ? .notExecutable : .sandbox, cause: cause)
    }

    /// The exit status of the contract: 125 for dgrun's own failures, 126/127 for the command, 122 blocked.
    public var exitStatus: Int32 {
        switch code {
        case .usage, .invalidInput, .store, .sandbox: return 125
        case .notExecutable: return 126
        case .notFound: return 127
        case .blocked: return 122
        }
    }

    public var description: String { message }
}
