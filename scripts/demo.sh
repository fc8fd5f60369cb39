#!/bin/sh
# Builds dgrun and runs the bundled examples: first `dgrun discover` prints what building and
# testing examples/hello-build depends on; then `dgrun exec` builds and tests it with no network,
# a read-only host, and 256 MiB / 1 CPU / 64 processes; then what an out-of-memory kill looks
# like; last, the workspace examples/pipeline runs, is found up to date, and re-runs only what
# one edited input reaches. Run as root for cgroup limits.
set -eu
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
scripts/build-release.sh   # dgrun, and the tracer's fast path (libdgrun-preload.so) beside it
dgrun=$PWD/.build/release/dgrun
cd examples/hello-build
echo "== dgrun discover: what building and testing examples/hello-build depends on" >&2
"$dgrun" discover --format text -- sh -c 'cc -O2 -o /tmp/hello hello.c && ./test.sh /tmp/hello' \
    | grep -v '^  data           /usr/lib/locale/'
echo "== dgrun exec: build and test examples/hello-build" >&2
"$dgrun" exec --memory 256m --cpus 1 --pids 64 --net none --timeout 2m --report ../../.build/hello-report.json \
    -- sh -c 'cc -O2 -o /tmp/hello hello.c && /tmp/hello && ./test.sh /tmp/hello'
echo "== report (.build/hello-report.json)" >&2
cat ../../.build/hello-report.json
echo "== the same sandbox with 32 MiB, running a memory hog" >&2
"$dgrun" exec --memory 32m -- sh -c 'head -c 256m /dev/zero | tail > /dev/null' || echo "exit status: $? (as the contract says)" >&2
echo "== dgrun exec examples/pipeline: five tasks in dependency order (a copy in .build/demo-pipeline)" >&2
cd ../..
rm -rf .build/demo-pipeline && cp -R examples/pipeline .build/demo-pipeline && rm -rf .build/demo-pipeline/*/.dgrun .build/demo-pipeline/*/out
"$dgrun" exec .build/demo-pipeline
echo "== again: nothing changed, nothing runs" >&2
"$dgrun" exec .build/demo-pipeline
echo "== edit gen/params.txt: what would run, and why" >&2
printf 'rows 3000\nseed 7\n' > .build/demo-pipeline/gen/params.txt
"$dgrun" status .build/demo-pipeline || true
"$dgrun" explain .build/demo-pipeline/summary || true
"$dgrun" exec .build/demo-pipeline
"$dgrun" graph .build/demo-pipeline
cat .build/demo-pipeline/summary/out/summary.txt
