import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

/// What static analysis needs from an ELF file: its interpreter, the libraries it needs, where it
/// asks for them to be searched, and its build-id. 64-bit little-endian (x86-64, aarch64) only.
public struct ElfFile: Sendable, Equatable {
    public var interpreter: String?
    public var needed: [String]
    public var soname: String?
    public var rpath: [String]
    public var runpath: [String]
    public var buildID: String?
    /// ET_EXEC or ET_DYN with an interpreter: a program; ET_DYN without one: a library (or a static-pie).
    public var type: UInt16

    public var isStatic: Bool { interpreter == nil && needed.isEmpty }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case notELF, unsupported(String), truncated(String)
        public var description: String {
            switch self {
            case .notELF: return "not an ELF file"
            case .unsupported(let what): return "unsupported ELF: \(what)"
            case .truncated(let what): return "truncated ELF: \(what)"
            }
        }
    }

    /// Maps the file and touches only the headers and the tables they point to (a compiler's
    /// binary is tens of MB); nil for a file that is not ELF.
    public static func read(path: String) throws(SystemError) -> ElfFile? {
        let fd = try valueOrErrno("open", path: path) { open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size >= 64 else { return nil }
        let size = Int(st.st_size)
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw SystemError("mmap", path: path, errno: errno)
        }
        defer { munmap(map, size) }
        return try? parse(UnsafeRawBufferPointer(start: map, count: size))
    }

    public static func parse(_ bytes: [UInt8]) throws(ParseError) -> ElfFile {
        var result: Result<ElfFile, ParseError> = .failure(.notELF)
        bytes.withUnsafeBytes { buffer in
            do throws(ParseError) { result = .success(try parse(buffer)) } catch { result = .failure(error) }
        }
        return try result.get()
    }

    public static func parse(_ b: UnsafeRawBufferPointer) throws(ParseError) -> ElfFile {
        guard b.count >= 64, b[0] == 0x7f, b[1] == 0x45, b[2] == 0x4c, b[3] == 0x46 else { throw .notELF }
        guard b[4] == 2 else { throw .unsupported("32-bit") }
        guard b[5] == 1 else { throw .unsupported("big-endian") }
        let r = Reader(bytes: b)
        let type = r.u16(16)
        let phoff = r.offset(32), phentsize = Int(r.u16(54)), phnum = Int(r.u16(56))
        guard phoff + phentsize * phnum <= b.count, phentsize >= 56 else { throw .truncated("program headers") }

        struct Segment { var type: UInt32; var offset: Int; var vaddr: UInt64; var filesz: Int }
        let segments = (0..<phnum).map { i -> Segment in
            let at = phoff + i * phentsize
            return Segment(type: r.u32(at), offset: r.offset(at + 8), vaddr: r.u64(at + 16), filesz: r.offset(at + 32))
        }
        var elf = ElfFile(interpreter: nil, needed: [], soname: nil, rpath: [], runpath: [], buildID: nil, type: type)

        if let interp = segments.first(where: { $0.type == 3 }) {  // PT_INTERP
            elf.interpreter = r.cString(interp.offset, limit: interp.filesz)
        }
        for note in segments where note.type == 4 {  // PT_NOTE: look for NT_GNU_BUILD_ID
            var at = note.offset
            let end = min(b.count, note.offset + note.filesz)
            while at + 12 <= end {
                let namesz = Int(r.u32(at)), descsz = Int(r.u32(at + 4)), kind = r.u32(at + 8)
                let name = at + 12, desc = name + (namesz + 3) & ~3
                guard desc + descsz <= end else { break }
                if kind == 3, namesz == 4, r.cString(name, limit: 4) == "GNU" {
                    elf.buildID = (desc..<desc + descsz).map { String(b[$0], radix: 16).leftPadded(2) }.joined()
                }
                at = desc + (descsz + 3) & ~3
            }
        }
        guard let dynamic = segments.first(where: { $0.type == 2 }) else { return elf }  // PT_DYNAMIC
        // Dynamic entries point into memory: map addresses back to file offsets through PT_LOAD.
        func offset(of address: UInt64) -> Int? {
            for s in segments where s.type == 1 && address >= s.vaddr && address - s.vaddr < UInt64(s.filesz) {
                return s.offset + Int(address - s.vaddr)
            }
            return nil
        }
        var entries: [(tag: UInt64, value: UInt64)] = []
        var at = dynamic.offset
        while at + 16 <= min(b.count, dynamic.offset + dynamic.filesz) {
            let tag = r.u64(at), value = r.u64(at + 8)
            if tag == 0 { break }  // DT_NULL
            entries.append((tag, value))
            at += 16
        }
        guard let strtabAddress = entries.first(where: { $0.tag == 5 })?.value,  // DT_STRTAB
              let strtab = offset(of: strtabAddress) else { throw .truncated("dynamic string table") }
        func string(_ value: UInt64) -> String {
            value < UInt64(b.count) ? r.cString(strtab + Int(value), limit: 4096) : ""
        }
        for entry in entries {
            switch entry.tag {
            case 1: elf.needed.append(string(entry.value))             // DT_NEEDED
            case 14: elf.soname = string(entry.value)                    // DT_SONAME
            case 15: elf.rpath += string(entry.value).split(separator: ":").map(String.init)    // DT_RPATH
            case 29: elf.runpath += string(entry.value).split(separator: ":").map(String.init)  // DT_RUNPATH
            default: break
            }
        }
        return elf
    }
}

/// Little-endian reads that never trap: out-of-range reads give 0 (callers check bounds first).
struct Reader {
    let bytes: UnsafeRawBufferPointer

    /// A file offset or size: clamped to just past the end, so arithmetic on junk cannot overflow.
    func offset(_ at: Int) -> Int {
        let value = u64(at)
        return value > UInt64(bytes.count) ? bytes.count + 1 : Int(value)
    }

    func u16(_ at: Int) -> UInt16 { UInt16(truncatingIfNeeded: uint(at, 2)) }
    func u32(_ at: Int) -> UInt32 { UInt32(truncatingIfNeeded: uint(at, 4)) }
    func u64(_ at: Int) -> UInt64 { uint(at, 8) }

    private func uint(_ at: Int, _ size: Int) -> UInt64 {
        guard at >= 0, at + size <= bytes.count else { return 0 }
        var value: UInt64 = 0
        for i in (0..<size).reversed() { value = value << 8 | UInt64(bytes[at + i]) }
        return value
    }

    func cString(_ at: Int, limit: Int) -> String {
        guard at >= 0, at < bytes.count else { return "" }
        let end = min(bytes.count, at + limit)
        var stop = at
        while stop < end && bytes[stop] != 0 { stop += 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[at..<stop]), as: UTF8.self)
    }
}

