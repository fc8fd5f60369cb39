#!/bin/sh
# Tracing overhead of `dgrun discover` on four workloads, side by side with native, `dgrun exec`
# (the same sandbox without the tracer), the unotify floor (bench/floor/unotify-floor.c: the same
# calls trapped and answered at once, nothing read) and `strace -f -e trace=%file,%process,%network`.
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
(cd "$repo" && swift build -c release --static-swift-stdlib >/dev/null 2>&1) || { echo "bench: release build failed" >&2; exit 1; }
dgrun=$repo/.build/release/dgrun
floor=$out/unotify-floor
gcc -O2 -o "$floor" "$here/floor/unotify-floor.c" -lseccomp || { echo "bench: cannot build the unotify floor (libseccomp-dev)" >&2; exit 1; }

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
# The distribution's python3 when there is one: a version manager's shim (pyenv) would add a
# shell script and its processes to what is measured.
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
py_cmd="$py -c 'import json, email.parser, http.client, sqlite3, asyncio, decimal'"
pipe_cmd="find /usr/include -name '*.h' | xargs grep -l uint32_t | wc -l"
make_cmd="make -s -C proj clean && make -s -j2 -C proj"
set --
for w in gcc py pipe make; do
    eval "cmd=\$${w}_cmd"
    set -- "$@" -n "$w native" "sh -c \"$cmd\"" \
        -n "$w dgrun-exec" "$dgrun exec --rw /tmp -- sh -c \"$cmd\"" \
        -n "$w floor" "$floor sh -c \"$cmd\"" \
        -n "$w dgrun-discover" "$dgrun discover --rw /tmp -o /dev/null -- sh -c \"$cmd\"" \
        -n "$w strace" "strace -f -qq -o /dev/null -e trace=%file,%process,%network sh -c \"$cmd\""
done
hyperfine --warmup 1 --runs "$runs" --export-json "$out/discover.json" "$@" >"$out/discover-hyperfine.log" 2>&1 \
    || { cat "$out/discover-hyperfine.log"; exit 1; }

python3 - "$out/discover.json" <<'PY' | tee "$out/discover.md"
import json, sys, os, platform
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}; "
      f"{len(next(iter(res.values()))['times'])} runs each; medians in ms, ratios to native.\n")
print("| workload | native | dgrun exec | unotify floor | dgrun discover | strace -f | floor ÷ native | discover ÷ native | strace ÷ native | discover overhead ÷ strace overhead |")
print("|---|---|---|---|---|---|---|---|---|---|")
names = {"gcc": "gcc -O2, 3000-line C file", "py": "python3 imports (json, email, http, sqlite3, asyncio, decimal)",
         "pipe": "find /usr/include | xargs grep | wc", "make": "make -j2, 20 C files"}
for w, label in names.items():
    m = {k: res[f"{w} {k}"]["median"] * 1000 for k in ["native", "dgrun-exec", "floor", "dgrun-discover", "strace"]}
    d, s, n, f = m["dgrun-discover"], m["strace"], m["native"], m["floor"]
    share = (d - n) / (s - n) if s > n else float("nan")
    print(f"| {label} | {n:.1f} | {m['dgrun-exec']:.1f} | {f:.1f} | {d:.1f} | {s:.1f} | {f/n:.2f} | {d/n:.2f} | {s/n:.2f} | {share:.2f} |")
PY
