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
swift test --skip-build --filter VMLaneTests
