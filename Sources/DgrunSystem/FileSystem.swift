import CDgrunSpawn

public enum FileSystem {
    /// statfs(2) f_type of the filesystem holding `path`, nil when it cannot be read.
    public static func magic(_ path: String) -> UInt? {
        var value: UInt = 0
        return dgrun_fs_magic(path, &value) == 0 ? value : nil
    }
}
