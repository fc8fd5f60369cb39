import CDgrunSpawn
import DgrunCommands
import DgrunSystem
#if canImport(Glibc)
import Glibc
#endif

// Before any thread exists, so that every thread inherits the mask and the signals that dgrun
// forwards into the sandbox reach its signalfd instead of killing dgrun.
_ = dgrun_block_signals()
// Room for a workspace's stores; the sandboxed command gets the limit dgrun was given.
_ = OpenFileLimit.original
exit(CLI.main(Array(CommandLine.arguments.dropFirst())))
