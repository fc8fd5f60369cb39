#!/bin/sh
# Workspace scale: for N one-line tasks, independent and chained, the first run (every task runs,
# traced), the up-to-date `dgrun exec WORKSPACE` (the no-op) and `dgrun status` side by side in one
# hyperfine run, the store's size and dgrun's peak memory; and one task with many file
# dependencies (its no-op against `ninja -n` of the same files).
#   bench/scale.sh [SIZES] [FILES]  (default "10 100 1000" and 100000; writes bench/results/scale.md)
#   DGRUN_BEFORE=/path/to/dgrun     also times that binary, for an A/B of a change
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
sizes=${1:-"10 100 1000"}
files=${2:-100000}
out=$here/results
mkdir -p "$out"
for tool in hyperfine python3 ninja; do
    command -v $tool >/dev/null || { echo "bench: missing $tool (DGRUN_WITH_BENCH=1 scripts/ensure-deps.sh)" >&2; exit 1; }
done
"$repo/scripts/build-release.sh" >/dev/null 2>&1 || { echo "bench: release build failed" >&2; exit 1; }
dgrun=$repo/.build/release/dgrun
limits=""
[ "$(id -u)" = 0 ] || limits="--limits best-effort"
peak() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
{
    echo "Machine: $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), kernel $(uname -r); medians of 3 runs."
    echo
    echo "| tasks | first run s | no-op s | no-op per task ms | status s | store KiB per task | no-op peak RSS MiB |"
    echo "|---|---|---|---|---|---|---|"
} > "$out/scale.md"
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
        set -- -n "no-op" "$dgrun exec $limits $ws" -n "status" "$dgrun status $ws"
        [ -n "${DGRUN_BEFORE:-}" ] && set -- "$@" -n "before" "$DGRUN_BEFORE exec $limits $ws"
        hyperfine -N -i --warmup 1 --runs 3 --export-json "$out/scale-$shape-$n.json" "$@" >/dev/null 2>&1
        rss=$(peak "$dgrun" exec $limits "$ws")
        store=$(du -sk "$ws"/*/.dgrun | awk '{s += $1} END {print s}')
        python3 - "$out/scale-$shape-$n.json" "$n" "$shape" "$first" "$rss" "$store" >>"$out/scale.md" <<'PY'
import json, sys
res = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
n, shape, first, rss, store = int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
before = f" (before {res['before']:.3f})" if "before" in res else ""
print(f"| {n} {shape} | {first:.2f} | {res['no-op']:.3f}{before} | {res['no-op'] * 1000 / n:.2f} | {res['status']:.3f} | {store / n:.0f} | {rss / 1024:.1f} |")
PY
    done
done

# One task with $files file dependencies: its no-op against ninja -n of the same files.
big=$out/scale-files-$files
rm -rf "$big"
python3 - "$big" "$files" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.join(d, "src"))
per = 1000
for i in range(n):
    sub = os.path.join(d, "src", f"d{i // per:03d}")
    if i % per == 0: os.makedirs(sub)
    open(os.path.join(sub, f"f{i:06d}.txt"), "w").write(f"{i}\n")
with open(os.path.join(d, "task.toml"), "w") as f:
    f.write('run = "find src -name \x27*.txt\x27 -exec cat {} + | wc -l > count.txt"\noutputs = ["count.txt"]\n')
with open(os.path.join(d, "build.ninja"), "w") as f:
    f.write("rule count\n  command = cat src/*/*.txt | wc -l > count.txt\n")
    f.write("build count.txt: count " + " ".join(f"src/d{i // per:03d}/f{i:06d}.txt" for i in range(n)) + "\n")
PY
start=$(date +%s.%N)
"$dgrun" exec $limits "$big" >/dev/null 2>"$out/scale-first.log" || { tail "$out/scale-first.log" >&2; exit 1; }
first=$(echo "$(date +%s.%N) - $start" | bc)
(cd "$big" && ninja >/dev/null)
hyperfine -N -i --warmup 1 --runs 5 --export-json "$out/scale-files.json" \
    -n "dgrun no-op" "$dgrun exec $limits $big" -n "ninja -n" "ninja -C $big -n" >/dev/null 2>&1
rss=$(peak "$dgrun" exec $limits "$big")
python3 - "$out/scale-files.json" "$files" "$first" "$rss" "$(du -sk "$big/.dgrun" | cut -f1)" >>"$out/scale.md" <<'PY'
import json, sys
res = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
n, first, rss, store = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(f"\nOne task with {n:,} file dependencies: first run {first:.2f} s; no-op {res['dgrun no-op']:.3f} s "
      f"against ninja -n {res['ninja -n']:.3f} s ({res['dgrun no-op'] / res['ninja -n']:.2f}x); store {store / 1024:.1f} MiB; "
      f"no-op peak RSS {rss / 1024:.1f} MiB.")
PY
cat "$out/scale.md"
