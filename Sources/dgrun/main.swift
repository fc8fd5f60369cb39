import ArgumentParser
import CDgrunSpawn
import DgrunCommands
#if canImport(Glibc)
import Glibc
#endif

// Before any thread exists, so that every thread inherits the mask and the signals that dgrun
// forwards into the sandbox reach its signalfd instead of killing dgrun.
_ = dgrun_block_signals()

do {
    var command = try Dgrun.parseAsRoot()
    try command.run()
} catch let code as ExitCode {
    exit(code.rawValue)
} catch {
    // --help and --version exit 0; every other usage error is dgrun's failure: 125.
    if Dgrun.exitCode(for: error) == .success { Dgrun.exit(withError: error) }
    let message = Dgrun.fullMessage(for: error)
    FileHandleless.writeError("dgrun: " + message + "\n")
    exit(125)
}

enum FileHandleless {
    static func writeError(_ text: String) {
        var text = text
        text.withUTF8 { buf in _ = write(2, buf.baseAddress, buf.count) }
    }
}
