#!/bin/sh
# The no-op check: how long `dgrun exec TASKDIR` takes to find a task with 5,000 file
# dependencies up to date, against `make -q` and `ninja -n` on the same graph (one output built
# from the 5,000 files), side by side in one hyperfine run.
#   bench/noop.sh [RUNS] [FILES]     (writes bench/results/noop.{json,md})
# dgrun's check is real: it opens the task's SQLite store, reads the 5,000 recorded dependencies
# (plus the libraries and programs the task used), stats each, and finds nothing moved.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
runs=${1:-200}
files=${2:-5000}
out=$here/results
for tool in hyperfine make ninja python3 gcc; do
    command -v $tool >/dev/null || { echo "bench: missing $tool (apt-get install hyperfine make ninja-build python3 gcc)" >&2; exit 1; }
done
interleave=$out/interleave   # each round runs every check once, shuffled (see bench/floor/interleave.c)
gcc -O2 -o "$interleave" "$here/floor/interleave.c" || { echo "bench: cannot build bench/floor/interleave.c" >&2; exit 1; }
"$repo/scripts/build-release.sh" >/dev/null 2>&1 || { echo "bench: release build failed" >&2; exit 1; }
dgrun=$repo/.build/release/dgrun

# A task directory of its own (no sibling tasks: not a workspace).
root=$out/noop
rm -rf "$root"
task=$root/task
mkdir -p "$task/src" "$task/out"
python3 - "$task/src" "$files" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"f{i:05d}.txt"), "w") as f:
        f.write(f"file {i}\n" * 8)
PY
cat > "$task/task.toml" <<TOML
# Concatenates every source: one output that depends on all $files files.
run = "cat src/*.txt > out/all.txt"
inputs = ["src/*.txt"]
outputs = ["out/all.txt"]
TOML
cat > "$task/Makefile" <<'MK'
out/all.txt: $(wildcard src/*.txt)
	cat src/*.txt > out/all.txt
MK
python3 - "$task" <<'PY'
import os, sys
task = sys.argv[1]
srcs = sorted(os.listdir(os.path.join(task, "src")))
with open(os.path.join(task, "build.ninja"), "w") as f:
    f.write("rule cat\n  command = cat src/*.txt > $out\n")
    f.write("build out/all.txt: cat " + " ".join("src/" + s for s in srcs) + "\n")
PY
limits=""
[ "$(id -u)" = 0 ] || limits="--limits best-effort"
"$dgrun" exec $limits "$task" >/dev/null 2>"$root/first-run.log"
(cd "$task" && ninja >/dev/null && make -q)   # both tools agree it is built
deps=$("$dgrun" exec $limits "$task" 2>&1 | sed -n 's/.*up to date (\([0-9]*\) dependencies.*/\1/p')
[ -n "$deps" ] || { echo "bench: dgrun did not find the task up to date" >&2; cat "$root/first-run.log" >&2; exit 1; }

# The 5,000 files just written are still dirty: their writeback landed on whichever block ran
# first (dgrun's, at twice its time, in one run). Flushed before anything is timed.
sync
hyperfine -N --warmup 10 --runs "$runs" --export-json "$out/noop.json" \
    -n "dgrun exec (no-op)" "$dgrun exec $limits $task" \
    -n "make -q" "make -q -C $task" \
    -n "ninja -n" "ninja -C $task -n" \
    -n "dgrun status" "$dgrun status $task" \
    ${DGRUN_BEFORE:+-n "dgrun before (no-op)" "$DGRUN_BEFORE exec $limits $task"} >"$out/noop.log" 2>&1 || { cat "$out/noop.log"; exit 1; }

# make -q takes a second a run: the interleaved rounds leave it out.
"$interleave" "$runs" "dgrun exec (no-op)" "$dgrun exec $limits $task" "ninja -n" "ninja -C $task -n" \
    "dgrun status" "$dgrun status $task" ${DGRUN_BEFORE:+"dgrun before (no-op)" "$DGRUN_BEFORE exec $limits $task"} \
    > "$out/noop-interleaved.tsv"

python3 - "$out/noop.json" "$deps" "$files" "$out/noop-interleaved.tsv" <<'PY' | tee "$out/noop.md"
import json, sys, platform, os
data = json.load(open(sys.argv[1]))
deps, files = sys.argv[2], sys.argv[3]
res = {r["command"]: r for r in data["results"]}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}; {files} source files, "
      f"{deps} dependencies checked by dgrun; {len(res['make -q']['times'])} runs each.\n")
base = res["dgrun exec (no-op)"]["median"]
print("| no-op check | median ms | mean ± σ ms | user ms | sys ms | dgrun ÷ it |")
print("|---|---|---|---|---|---|")
for name, r in res.items():
    print(f"| {name} | {r['median']*1000:.2f} | {r['mean']*1000:.2f} ± {r['stddev']*1000:.2f} | "
          f"{r['user']*1000:.2f} | {r['system']*1000:.2f} | {base/r['median']:.2f} |")
inter = {n: (float(m), float(lo), float(hi)) for n, m, lo, hi in
         (l.rstrip("\n").split("\t") for l in open(sys.argv[4]) if l.strip())}
print(f"\nInterleaved ({len(res['make -q']['times'])} rounds, each running every check once, in a shuffled order), wall ms:\n")
print("| no-op check | median | p25–p75 | dgrun ÷ it |")
print("|---|---|---|---|")
for name, (m, lo, hi) in inter.items():
    print(f"| {name} | {m:.2f} | {lo:.2f}–{hi:.2f} | {inter['dgrun exec (no-op)'][0]/m:.2f} |")
PY
