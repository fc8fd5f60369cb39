// The executable's argument vector, handed to the Swift runtime without its search for it.
//
// The Swift runtime on Linux finds argv in a static constructor (CommandLine.cpp's ArgvGrabber):
// it reads and sscanf's all of /proc/self/maps to find the stack, then walks back from environ.
// That was 0.08-0.12 ms of every dgrun start here (uprobes on the constructor, 200 starts), a
// fiftieth of a sandboxed /bin/true. glibc passes (argc, argv, envp) to every ELF constructor, so
// this one keeps them, and this file defines the one function through which the runtime asks for
// them. The linker then takes the runtime's definition from nobody: the archive member that holds
// it (and its constructor) is not linked in. The executable alone links this target, and only a
// static Swift runtime is affected; with the shared one (debug builds, tests) the runtime keeps its
// own. Every test that runs the built dgrun with arguments checks `CommandLine.arguments`.
#include "dgrun_start.h"

#include <stddef.h>

static char **start_argv;
static int start_argc;

__attribute__((constructor)) static void dgrun_keep_argv(int argc, char **argv, char **envp) {
    (void)envp;
    start_argc = argc;
    start_argv = argv;
}

// The runtime's declaration (stdlib/public/CommandLineSupport/CommandLine.cpp):
//   SWIFT_CC(swift) char **_swift_stdlib_getUnsafeArgvArgc(int *outArgLen);
__attribute__((swiftcall)) char **_swift_stdlib_getUnsafeArgvArgc(int *outArgLen) {
    static char *empty[] = {NULL};
    if (start_argv == NULL) {  // no constructor arguments (not glibc): no arguments, as the runtime's own would give
        *outArgLen = 0;
        return empty;
    }
    *outArgLen = start_argc;
    return start_argv;
}
