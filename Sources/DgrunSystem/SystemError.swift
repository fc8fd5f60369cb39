#if canImport(Glibc)
import Glibc
#endif

/// A failed kernel call: which operation, on what, the errno, and what the user can do about it.
public struct SystemError: Error, CustomStringConvertible, Sendable, Equatable {
    public var operation: String
    public var path: String?
    public var errno: Int32
    public var hint: String?

    public init(_ operation: String, path: String? = nil, errno: Int32, hint: String? = nil) {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.hint = hint
    }

    public var errnoName: String { String(cString: strerror(errno)) }

    public var description: String {
        var text = operation
        if let path { text += " \(path)" }
        text += ": \(errnoName) (errno \(errno))"
        if let hint { text += "; \(hint)" }
        return text
    }
}

/// Runs one syscall, retrying EINTR; a -1 result becomes a SystemError naming the operation and path.
@inlinable
public func valueOrErrno<T: BinaryInteger>(
    _ operation: String, path: String? = nil, hint: String? = nil, _ call: () -> T
) throws(SystemError) -> T {
    while true {
        let result = call()
        if result != -1 { return result }
        let err = Glibc.errno
        if err == EINTR { continue }
        throw SystemError(operation, path: path, errno: err, hint: hint)
    }
}
