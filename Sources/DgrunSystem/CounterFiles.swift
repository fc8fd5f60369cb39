#if canImport(Glibc)
import Glibc
#endif

/// Small counter files (cgroupfs, /proc) that a monitor reads many times a second: each is opened
/// once and read again with pread at offset 0, which makes the kernel generate it anew, into a
/// stack buffer that the caller parses as bytes (CounterText). Opening, reading into a String and
/// splitting it on Characters cost ~0.4 ms of CPU a sample of ten files (perf, make -j2: 19 ms of
/// a 0.47 s run, beside a task that had both CPUs busy).
public final class CounterFiles: Sendable {
    /// The largest read: the counter files are a few hundred bytes. A longer file is cut here,
    /// which leaves /proc/stat's first line and /proc/meminfo's first lines intact.
    public static let capacity = 4096
    /// The files, by the index the caller reads them by; "" for one this layout does not have.
    public let paths: [String]
    private let descriptors: Locked<[Int32]>

    public init(_ paths: [String]) {
        self.paths = paths
        descriptors = Locked([Int32](repeating: -1, count: paths.count))
    }

    deinit { close() }

    /// `parse` of file `index`'s bytes now, or nil when it cannot be opened or read (a removed
    /// cgroup). Inlinable, so that each caller's `parse` is specialized rather than looked up.
    @inlinable public func read<T>(_ index: Int, _ parse: (UnsafeRawBufferPointer) -> T?) -> T? {
        let fd = descriptor(index)
        return fd < 0 ? nil : Self.read(fd, parse)
    }

    /// One read of a file that is not read again (opened, read, closed).
    @inlinable public static func readOnce<T>(_ path: String, _ parse: (UnsafeRawBufferPointer) -> T?) -> T? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        return read(fd, parse)
    }

    @inlinable static func read<T>(_ fd: Int32, _ parse: (UnsafeRawBufferPointer) -> T?) -> T? {
        withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 8) { buffer -> T? in
            var n: Int
            repeat { n = pread(fd, buffer.baseAddress, buffer.count, 0) } while n < 0 && errno == EINTR
            guard n >= 0 else { return nil }
            return parse(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }

    /// Closes every file (a later read opens it again).
    public func close() {
        descriptors.withLock { fds in
            for i in fds.indices where fds[i] >= 0 {
                Glibc.close(fds[i])
                fds[i] = -1
            }
        }
    }

    /// File `index`, opened on its first read; -1 when it cannot be.
    @usableFromInline func descriptor(_ index: Int) -> Int32 {
        descriptors.withLock { fds -> Int32 in
            if fds[index] >= 0 || paths[index].isEmpty { return fds[index] }
            fds[index] = Glibc.open(paths[index], O_RDONLY | O_CLOEXEC)
            return fds[index]
        }
    }
}

/// Parsers of the counter files' text, on bytes (no String is made): a number alone
/// (memory.current), `key value` lines (cpu.stat, memory.events, memory.oom_control,
/// /proc/meminfo's `Key: value kB`), the `some ... total=N` line of a PSI file, and the numbers of
/// a line that starts with a given word (/proc/stat's `cpu`).
public enum CounterText {
    /// The decimal number the text starts with (after blanks); nil for anything else ("max").
    public static func number(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        var i = 0
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 }
        return digits(bytes, from: &i)
    }

    /// The value of the line that starts with `key` followed by a blank or a colon.
    public static func value(of key: StaticString, in bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard var i = lineStart(key, in: bytes, colon: true) else { return nil }
        if bytes[i] == 0x3a { i += 1 }  // "Key:" (/proc/meminfo)
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 }
        let value = digits(bytes, from: &i)
        return i == bytes.count || bytes[i] == 0x0a || bytes[i] == 0x20 ? value : nil
    }

    /// The `total=` of the `some` line of a PSI file.
    public static func psiSomeTotal(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard var i = lineStart("some", in: bytes, colon: false) else { return nil }
        while i < bytes.count, bytes[i] != 0x0a {
            if bytes[i] == 0x20, i + 7 <= bytes.count, matches("total=", bytes, at: i + 1) {
                var j = i + 7
                return digits(bytes, from: &j)
            }
            i += 1
        }
        return nil
    }

    /// The numbers after `word` on the first line that starts with it (blank-separated, up to
    /// the first field that is not a number).
    public static func numbers(after word: StaticString, in bytes: UnsafeRawBufferPointer) -> [UInt64] {
        guard var i = lineStart(word, in: bytes, colon: false) else { return [] }
        var result: [UInt64] = []
        while i < bytes.count, bytes[i] != 0x0a {
            while i < bytes.count, bytes[i] == 0x20 { i += 1 }
            guard let n = digits(bytes, from: &i) else { break }
            result.append(n)
        }
        return result
    }

    /// A String's bytes to a parser (tests and the fuzzers).
    public static func parse<T>(_ text: String, _ parse: (UnsafeRawBufferPointer) -> T) -> T {
        var text = text
        return text.withUTF8 { parse(UnsafeRawBufferPointer($0)) }
    }

    /// Decimal digits at `i` (advanced past them), nil when there are none or they overflow.
    private static func digits(_ bytes: UnsafeRawBufferPointer, from i: inout Int) -> UInt64? {
        var value: UInt64 = 0
        let start = i
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times.addingReportingOverflow(UInt64(bytes[i] - 0x30))
            if o1 || o2 { return nil }
            value = sum
            i += 1
        }
        return i > start ? value : nil
    }

    /// Where the text after `key` starts on the first line that begins with it and a blank (or,
    /// with `colon`, a colon): "oom_kill" is not the line "oom_kill_disable 0".
    private static func lineStart(_ key: StaticString, in bytes: UnsafeRawBufferPointer, colon: Bool) -> Int? {
        let n = key.utf8CodeUnitCount
        var i = 0
        while i < bytes.count {
            if i + n < bytes.count, matches(key, bytes, at: i) {
                let next = bytes[i + n]
                if next == 0x20 || next == 0x09 || (colon && next == 0x3a) { return i + n }
            }
            while i < bytes.count, bytes[i] != 0x0a { i += 1 }
            i += 1
        }
        return nil
    }

    private static func matches(_ key: StaticString, _ bytes: UnsafeRawBufferPointer, at i: Int) -> Bool {
        let n = key.utf8CodeUnitCount
        guard i + n <= bytes.count, let base = bytes.baseAddress else { return false }
        return memcmp(base + i, key.utf8Start, n) == 0
    }
}
