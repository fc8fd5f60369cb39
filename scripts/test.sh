#!/bin/sh
# Runs every dgrun test lane this machine can run: unit tests, host integration (namespaces, seccomp,
# the host's cgroups), rootless, --rootfs, and the cgroup-v2 VM lane under QEMU. Lanes that cannot
# run here are reported as skipped with the reason. Run as root for the privileged lanes.
set -eu
cd "$(dirname "$0")/.."
DGRUN_DEPS=test . scripts/ensure-deps.sh
swift build --build-tests
if [ "$#" -gt 0 ]; then
    exec swift test --skip-build "$@"
fi
# The VM lane (QEMU under TCG) keeps a CPU busy for minutes: the suites that time CPU use run
# first, on their own, and the VM lane after them.
swift test --skip-build --skip VMLaneTests
# The release lane: the binary users run is linked unlike the tests' (the Swift runtime inside, a
# position-dependent executable, libgcc static, argv handed to the runtime by Sources/CDgrunStart),
# so the command-line, exit-status, isolation, seccomp, limit and clean-up suites run against it too.
scripts/build-release.sh
DGRUN_BIN="$PWD/.build/release/dgrun" swift test --skip-build \
    --filter "ReleaseBinaryTests|ExitCodeTests|IsolationTests|SeccompTests|CleanupTests|LimitTests"
swift test --skip-build --filter VMLaneTests
# The fuzz lane: every parser a user or a task controls, each fuzzed for a bounded time (about 5 min
# with the build; DGRUN_FUZZ_SECONDS per target, DGRUN_FUZZ=0 to leave it out). A toolchain without
# libFuzzer skips it with the reason, except under CI, where a lane that cannot run is a failure.
if [ "${DGRUN_FUZZ:-1}" != 0 ]; then
    if reason=$(scripts/fuzz.sh --check 2>&1); then
        scripts/fuzz.sh "${DGRUN_FUZZ_SECONDS:-15}"
    elif [ "${CI:-}" = true ] || case ",${DGRUN_REQUIRE_LANES:-}," in *,fuzz,*) true;; *) false;; esac; then
        echo "dgrun: fuzz lane FAILED: ${reason#fuzz: }" >&2
        exit 1
    else
        echo "dgrun: fuzz lane skipped: ${reason#fuzz: }" >&2
    fi
fi
