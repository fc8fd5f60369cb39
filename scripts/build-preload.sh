#!/bin/sh
# Builds the tracer's fast-path library (preload/dgrun_preload.c) where dgrun looks for it: beside
# the binary. SwiftPM cannot build it (a dynamic product links the Swift runtime, which would then
# be loaded into every traced process). Without it, discover traps every call (slower, as complete).
#   scripts/build-preload.sh [DIR...]     (default: each of .build/debug and .build/release that exists)
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC:-cc}
[ $# -gt 0 ] || for d in "$repo/.build/debug" "$repo/.build/release"; do [ -d "$d" ] && set -- "$@" "$d"; done
[ $# -gt 0 ] || { echo "build-preload: no .build/debug or .build/release yet: swift build first, or name a directory" >&2; exit 1; }
for dir in "$@"; do
    mkdir -p "$dir"
    "$cc" -O2 -Wall -Wextra -Werror -shared -fPIC -fno-delete-null-pointer-checks -Wno-nonnull-compare \
        -I"$repo/Sources/CDgrunSpawn/include" -o "$dir/libdgrun-preload.so.tmp" "$repo/preload/dgrun_preload.c"
    mv "$dir/libdgrun-preload.so.tmp" "$dir/libdgrun-preload.so"
done
