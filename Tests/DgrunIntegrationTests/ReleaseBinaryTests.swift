import DgrunStatic
import Testing

/// What the release binary makes every start pay before `main` (BENCHMARKS.md, tenth session):
/// no runpath for the loader to search, no shared object but libc and libm (the Swift runtime,
/// libstdc++, libgcc, SQLite, libseccomp and libcap are linked in), a position-dependent image.
/// The release lane of scripts/test.sh runs this against .build/release/dgrun (DGRUN_BIN).
@Suite(.enabled(if: Harness.binary.contains("/release/"), "runs in the release lane (DGRUN_BIN=.build/release/dgrun)"))
struct ReleaseBinaryTests {
    @Test func itLoadsOnlyLibcAndLibmAndSearchesNoRunpath() throws {
        let elf = try #require(try ElfFile.read(path: Harness.binary))
        #expect(Set(elf.needed).isSubset(of: ["libc.so.6", "libm.so.6", "ld-linux-x86-64.so.2"]), "needs \(elf.needed)")
        #expect(elf.runpath.isEmpty && elf.rpath.isEmpty, "runpath \(elf.runpath), rpath \(elf.rpath)")
        #expect(elf.type == 2, "ET_EXEC: a position-dependent executable")
    }
}
