#!/bin/sh
# Builds the release dgrun and the tracer's fast-path library beside it, in .build/release: the
# build the demo, the benches and an install use.
#   scripts/build-release.sh [SWIFT BUILD OPTION...]
# --disable-local-rpath: SwiftPM gives an executable the runpath $ORIGIN, and for it the loader
# reads /proc/self/exe and looks for libc and libm in .build/release/glibc-hwcaps/x86-64-v4 …
# first, at every start: 0.20 ms of `dgrun --version` here (1.31 → 1.11 ms, 1,000 interleaved
# rounds). Nothing dgrun links lives beside it (the Swift runtime is linked in statically).
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
swift build -c release --static-swift-stdlib --disable-local-rpath "$@"
scripts/build-preload.sh .build/release
