import DgrunSystem

/// The parsers' entries, used by the fuzzers (Fuzz/): narrow public doors to parsers that are
/// otherwise internal. Not for dgrun's own callers, which use `owners(of:)`.
extension DebianPackages {
    /// dpkg's status file: package → version of the installed packages among `packages`.
    public static func installedVersions(status: String, packages: Set<String>) -> [String: String] {
        installedVersions(status, of: packages)
    }

    /// The index cache file (`dgrun-dpkg-index 1`), whatever its stamp: the owner of each of
    /// `paths`, or nil when the file is not a valid index.
    public static func indexOwners(_ bytes: [UInt8], paths: [String]) -> [String?]? {
        guard let index = Index.parse(ReadOnlyBytes(bytes), stamp: nil) else { return nil }
        return paths.map(index.owner(of:))
    }
}
