#!/bin/sh
# Workspace scale: the up-to-date `dgrun exec WORKSPACE` (the no-op) of N one-line tasks, independent
# and chained, against `dgrun status` of the same workspace, side by side in one hyperfine run.
#   bench/scale.sh [SIZES]          (default "10 100"; writes bench/results/scale.md)
#   DGRUN_BEFORE=/path/to/dgrun     also times that binary, for an A/B of a change
# The first run of each workspace is timed once (it runs every task, traced).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
sizes=${1:-"10 100"}
out=$here/results
mkdir -p "$out"
for tool in hyperfine python3; do
    command -v $tool >/dev/null || { echo "bench: missing $tool (DGRUN_WITH_BENCH=1 scripts/ensure-deps.sh)" >&2; exit 1; }
done
(cd "$repo" && swift build -c release --static-swift-stdlib >/dev/null 2>&1) || { echo "bench: release build failed" >&2; exit 1; }
dgrun=$repo/.build/release/dgrun
limits=""
[ "$(id -u)" = 0 ] || limits="--limits best-effort"
: > "$out/scale.md"
for n in $sizes; do
    for shape in independent chain; do
        ws=$out/scale-$shape-$n
        rm -rf "$ws"
        python3 - "$ws" "$n" "$shape" <<'PY'
import os, sys
ws, n, shape = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(n):
    d = os.path.join(ws, f"t{i:04d}")
    os.makedirs(d)
    with open(os.path.join(d, "task.toml"), "w") as f:
        if shape == "chain" and i > 0:
            f.write(f'run = "cat ../t{i-1:04d}/out.txt > out.txt; echo {i} >> out.txt"\n')
            f.write(f'inputs = ["../t{i-1:04d}/out.txt"]\noutputs = ["out.txt"]\n')
        else:
            f.write(f'run = "echo {i} > out.txt"\noutputs = ["out.txt"]\n')
PY
        start=$(date +%s.%N)
        "$dgrun" exec $limits "$ws" >/dev/null 2>"$out/scale-first.log" || { tail "$out/scale-first.log" >&2; exit 1; }
        first=$(echo "$(date +%s.%N) - $start" | bc)
        set -- -n "dgrun exec (no-op)" "$dgrun exec $limits $ws" -n "dgrun status" "$dgrun status $ws"
        [ -n "${DGRUN_BEFORE:-}" ] && set -- "$@" -n "dgrun before (no-op)" "$DGRUN_BEFORE exec $limits $ws"
        hyperfine -N -i --warmup 1 --runs 3 --export-json "$out/scale-$shape-$n.json" "$@" >/dev/null 2>&1
        python3 - "$out/scale-$shape-$n.json" "$n" "$shape" "$first" >>"$out/scale.md" <<'PY'
import json, sys
res = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
n, shape, first = sys.argv[2], sys.argv[3], float(sys.argv[4])
cols = " | ".join(f"{k} {v:.3f} s" for k, v in res.items())
print(f"| {n} {shape} | first run {first:.2f} s | {cols} |")
PY
    done
done
cat "$out/scale.md"
