#!/bin/sh
# Tracing overhead of `dgrun discover` on four workloads, side by side with native, `dgrun exec`
# (the same sandbox without the tracer), the unotify floor (bench/floor/unotify-floor.c: the same
# calls trapped and answered at once, nothing read), the fast path's ceiling (the floor with the
# preload library's stub page let through, nothing recorded), `dgrun discover` with the fast path
# (the default) and without it (DGRUN_PRELOAD=off: every call traps, as before), a traced
# `dgrun exec --force TASKDIR`, and `strace -f -e trace=%file,%process,%network`.
#   bench/discover.sh [RUNS]      (as root; writes bench/results/discover.{json,md})
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
runs=${1:-10}
out=$here/results
work=$out/discover-work
mkdir -p "$out" "$work"
for tool in hyperfine strace gcc make python3; do
    command -v $tool >/dev/null || { echo "bench: missing $tool (apt-get install hyperfine strace gcc make python3)" >&2; exit 1; }
done
"$repo/scripts/build-release.sh" >/dev/null 2>&1 || { echo "bench: release build failed" >&2; exit 1; }
dgrun=$repo/.build/release/dgrun
floor=$out/unotify-floor
gcc -O2 -o "$floor" "$here/floor/unotify-floor.c" -I"$repo/Sources/CDgrunSpawn/include" -lseccomp || { echo "bench: cannot build the unotify floor (libseccomp-dev)" >&2; exit 1; }
ceiling_lib=$out/libdgrun-ceiling.so
cc -O2 -shared -fPIC -fno-delete-null-pointer-checks -Wno-nonnull-compare -DDGRUN_PRELOAD_CEILING \
    -I"$repo/Sources/CDgrunSpawn/include" -o "$ceiling_lib" "$repo/preload/dgrun_preload.c" || { echo "bench: cannot build the ceiling's library" >&2; exit 1; }
stub=$(printf '%s' "$(sed -n 's/^#define DGRUN_FASTTRACE_STUB 0x\([0-9a-f]*\)ULL.*/\1/p' "$repo/Sources/CDgrunSpawn/include/dgrun_fasttrace.h")")
ceiling="env UNOTIFY_FLOOR_STUB=1 LD_PRELOAD=$ceiling_lib DGRUN_FASTTRACE=$stub:-1 $floor"

# Workload inputs, generated: a ~3000-line C file and a 20-file C project.
python3 - "$work" <<'PY'
import os, sys
work = sys.argv[1]
with open(os.path.join(work, "big.c"), "w") as f:
    f.write("#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n")
    for i in range(300):
        f.write(f"""
static int f{i}(int *a, int n) {{
    int s = 0;
    for (int k = 0; k < n; k++) {{
        s += a[k] * {i} + (a[k] >> 3);
        if (s > 100000) s -= 99991;
    }}
    return s;
}}
""")
    f.write("int main(void){int a[64]={0};int s=0;\n" + "".join(f"s+=f{i}(a,64);\n" for i in range(300)) + "printf(\"%d\\n\",s);return 0;}\n")
proj = os.path.join(work, "proj")
os.makedirs(proj, exist_ok=True)
for i in range(20):
    with open(os.path.join(proj, f"m{i}.c"), "w") as f:
        f.write(f"#include <stdio.h>\nint m{i}(int x){{int s=0;for(int k=0;k<x;k++)s+=k*{i};return s;}}\n")
with open(os.path.join(proj, "main.c"), "w") as f:
    f.write("".join(f"int m{i}(int);\n" for i in range(20)) + "int main(void){int s=0;" + "".join(f"s+=m{i}(10);" for i in range(20)) + "return s&1;}\n")
with open(os.path.join(proj, "Makefile"), "w") as f:
    objs = " ".join(f"m{i}.o" for i in range(20)) + " main.o"
    f.write(f"app: {objs}\n\tcc -o app {objs}\n%.o: %.c\n\tcc -O2 -c $< -o $@\nclean:\n\trm -f *.o app\n")
PY

cd "$work"
gcc_cmd="gcc -O2 -c big.c -o /tmp/dgrun-bench-big.o"
trap 'rm -f /tmp/dgrun-bench-big.o' EXIT  # the gcc workload's object: nothing left behind
# The distribution's python3 when there is one: a version manager's shim (pyenv) would add a
# shell script and its processes to what is measured.
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
py_cmd="$py -c 'import json, email.parser, http.client, sqlite3, asyncio, decimal'"
pipe_cmd="find /usr/include -name '*.h' | xargs grep -l uint32_t | wc -l"
make_cmd="make -s -C proj clean && make -s -j2 -C proj"
# A task directory per workload for the traced `exec TASKDIR` (its inputs inside it: the task
# directory is the sandbox's writable tree), run once so that later runs are a re-run (--force).
for w in gcc py pipe make; do
    eval "cmd=\$${w}_cmd"
    t=$work/task-$w
    rm -rf "$t" && mkdir -p "$t"
    cp big.c "$t/" && cp -r proj "$t/"
    printf 'run = "%s"\n[sandbox]\nnetwork = "none"\n' "$(printf '%s' "$cmd" | sed 's/\\/\\\\/g; s/"/\\"/g')" > "$t/task.toml"
    "$dgrun" exec --cache off "$t" >/dev/null 2>&1 || { echo "bench: dgrun exec $t failed" >&2; exit 1; }
done
# Each way of running a workload, as a shell command line.
ways="native dgrun-exec floor floor-addfd ceiling discover-trapping dgrun-discover exec-taskdir strace"
way() {  # WORKLOAD WAY
    eval "cmd=\$${1}_cmd"
    case $2 in
        native) echo "sh -c \"$cmd\"" ;;
        dgrun-exec) echo "$dgrun exec --rw /tmp -- sh -c \"$cmd\"" ;;
        floor) echo "$floor sh -c \"$cmd\"" ;;
        floor-addfd) echo "env UNOTIFY_FLOOR_ADDFD=1 $floor sh -c \"$cmd\"" ;;
        ceiling) echo "$ceiling sh -c \"$cmd\"" ;;
        dgrun-discover) echo "$dgrun discover --rw /tmp -o /dev/null -- sh -c \"$cmd\"" ;;
        discover-trapping) echo "env DGRUN_PRELOAD=off $dgrun discover --rw /tmp -o /dev/null -- sh -c \"$cmd\"" ;;
        exec-taskdir) echo "$dgrun exec --force --cache off $work/task-$1" ;;
        strace) echo "strace -f -qq -o /dev/null -e trace=%file,%process,%network sh -c \"$cmd\"" ;;
    esac
}
set --
for w in gcc py pipe make; do
    for x in $ways; do set -- "$@" -n "$w $x" "$(way $w $x)"; done
done
hyperfine --warmup 1 --runs "$runs" --export-json "$out/discover.json" "$@" >"$out/discover-hyperfine.log" 2>&1 \
    || { cat "$out/discover-hyperfine.log"; exit 1; }

# Interleaved: hyperfine runs each command's runs back to back, and on a shared machine the load
# drifts between commands (once a native gcc measured slower than the same gcc traced). Here each
# round runs every way once, in turn, so that all see the same load; discover's own figure for
# the traced run alone ("of the N s run": clone to the last exit, before the graph) is kept too.
: >"$out/discover-rounds.txt"
for i in $(seq "$runs"); do
    for w in gcc py pipe make; do
        for x in $ways; do
            start=$(date +%s%N)
            sh -c "$(way $w $x)" >/dev/null 2>"$out/discover-last.err" || { cat "$out/discover-last.err" >&2; exit 1; }
            end=$(date +%s%N)
            run=$(sed -n 's/.*of the \([0-9.]*\) s run.*/\1/p' "$out/discover-last.err")
            fast=$(sed -n 's/.*(\([0-9]*\) without a trap).*/\1/p' "$out/discover-last.err")
            calls=$(sed -n 's/.*from \([0-9]*\) traced calls.*/\1/p' "$out/discover-last.err")
            echo "$w $x $(( (end - start) / 1000 )) ${run:--} ${calls:--} ${fast:--}" >>"$out/discover-rounds.txt"
        done
    done
done
rm -f "$out/discover-last.err"

python3 - "$out/discover.json" <<'PY' | tee "$out/discover.md"
import json, sys, os, platform
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}; "
      f"{len(next(iter(res.values()))['times'])} runs each; medians in ms, ratios to native.\n")
print("| workload | native | dgrun exec | unotify floor | floor, opens by ADDFD | fast-path ceiling | discover, every call trapped | dgrun discover | traced exec TASKDIR | strace -f |")
print("|---|---|---|---|---|---|---|---|---|---|")
names = {"gcc": "gcc -O2, 3000-line C file", "py": "python3 imports (json, email, http, sqlite3, asyncio, decimal)",
         "pipe": "find /usr/include | xargs grep | wc", "make": "make -j2, 20 C files"}
keys = ["native", "dgrun-exec", "floor", "floor-addfd", "ceiling", "discover-trapping", "dgrun-discover", "exec-taskdir", "strace"]
for w, label in names.items():
    m = {k: res[f"{w} {k}"]["median"] * 1000 for k in keys}
    n = m["native"]
    cells = [f"{n:.1f}"] + [f"{m[k]:.1f} ({m[k] / n:.2f}×)" for k in keys[1:]]
    print(f"| {label} | " + " | ".join(cells) + " |")
PY

python3 - "$out/discover-rounds.txt" <<'PY' | tee -a "$out/discover.md"
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault((f[0], f[1]), []).append(f[2:])
def median(w, way, i):
    xs = [float(r[i]) for r in rows.get((w, way), []) if r[i] != "-"]
    return statistics.median(xs) if xs else float("nan")
ways = ["native", "dgrun-exec", "floor", "floor-addfd", "ceiling", "discover-trapping", "dgrun-discover", "exec-taskdir", "strace"]
print("\nInterleaved (each round runs every way once, in turn), medians in ms, ratios to native:\n")
print("| workload | native | dgrun exec | unotify floor | floor, opens by ADDFD | fast-path ceiling | discover, every call trapped | dgrun discover | traced exec TASKDIR | strace -f |")
print("|---|---|---|---|---|---|---|---|---|---|")
for w in ["gcc", "py", "pipe", "make"]:
    n = median(w, "native", 0) / 1000
    cells = [f"{n:.1f}"] + [f"{median(w, x, 0) / 1000:.1f} ({median(w, x, 0) / 1000 / n:.2f}×)" for x in ways[1:]]
    print(f"| {w} | " + " | ".join(cells) + " |")
print("\nThe traced run alone (discover's own figure, same rounds), medians in ms:\n")
print("| workload | native | run, every call trapped | run, fast path | traced calls | of them without a trap |")
print("|---|---|---|---|---|---|")
for w in ["gcc", "py", "pipe", "make"]:
    n = median(w, "native", 0) / 1000
    t, f = median(w, "discover-trapping", 1) * 1000, median(w, "dgrun-discover", 1) * 1000
    print(f"| {w} | {n:.1f} | {t:.1f} ({t / n:.2f}×) | {f:.1f} ({f / n:.2f}×) | {median(w, 'dgrun-discover', 2):.0f} | {median(w, 'dgrun-discover', 3):.0f} |")
PY
