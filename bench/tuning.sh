#!/bin/sh
# Live limit tuning, measured: seven workloads under four policies, side by side in one run.
#   bench/tuning.sh [REPS]      (as root; writes bench/results/tuning.{json,md})
# Workloads: steady, ramp, spike, phase change, CPU burst (bench/tuning/workload.c), gcc -O2 of a
# ~3000-line C file, and a python job (a dict of 1.5M entries).
# Policies:
#   static     --memory 256m --cpus 1 --tune off   (a typical hand-set guess)
#   none       no limit (dgrun still samples usage: the baseline for slowdown)
#   tuned      --memory 1g --cpus 2, no history     (limits start at the ceiling)
#   history    the same after 3 runs of the workload (limits start from history)
# Reported per workload and policy: OOM kills, mean slack ((limit - usage) / limit over the run's
# samples, where limit is the one in force: memory.high or the v1 soft limit where tuned), and the
# slowdown of the median wall time against `none`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
reps=${1:-3}
out=${TUNING_OUT:-$here/results}
work=$out/tuning
[ "$(id -u)" = 0 ] || { echo "bench/tuning.sh: run as root (cgroup limits)" >&2; exit 1; }
for tool in cc python3; do command -v $tool >/dev/null || { echo "bench: missing $tool" >&2; exit 1; }; done
# DGRUN=PATH measures another build (an A/B of two policies); TUNING_OUT=DIR keeps its results apart.
if [ -n "${DGRUN:-}" ]; then dgrun=$DGRUN; else
    "$repo/scripts/build-release.sh" >/dev/null 2>&1 || { echo "bench: release build failed" >&2; exit 1; }
    dgrun=$repo/.build/release/dgrun
fi
rm -rf "$work" && mkdir -p "$work/reports"
cc -O2 -pthread -o "$work/workload" "$here/tuning/workload.c"
python3 - "$work" <<'PY'
import os, sys
work = sys.argv[1]
with open(os.path.join(work, "big.c"), "w") as f:
    f.write("#include <stdio.h>\n")
    for i in range(300):
        f.write(f"static int f{i}(int *a, int n) {{ int s = 0; for (int k = 0; k < n; k++) {{ s += a[k] * {i} + (a[k] >> 3); if (s > 100000) s -= 99991; }} return s; }}\n")
    f.write("int main(void){int a[64]={0};int s=0;\n" + "".join(f"s+=f{i}(a,64);\n" for i in range(300)) + "printf(\"%d\\n\",s);return 0;}\n")
with open(os.path.join(work, "job.py"), "w") as f:
    f.write("d = {i: str(i) * 4 for i in range(1500000)}\nprint(len(d))\n")
PY

# The distribution's python3 when there is one: a version manager's shim (pyenv) would add a
# shell script and its processes to the job (as bench/discover.sh does).
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3

cd "$work"
run() {  # run POLICY WORKLOAD REP ARGS...
    policy=$1 name=$2 rep=$3; shift 3
    XDG_STATE_HOME="$work/state-$policy-$name" "$dgrun" exec --report "reports/$policy-$name-$rep.json" "$@" >/dev/null 2>>"$work/stderr.log" || true
}
workloads="steady ramp spike phase cpu gcc python"
cmd() {
    case $1 in
        gcc) echo "cc -O2 -c big.c -o /tmp/big.o" ;;
        python) echo "$py job.py" ;;
        *) echo "./workload $1" ;;
    esac
}
for name in $workloads; do
    c=$(cmd "$name")
    # History first: three runs that the `history` policy learns from.
    for warm in 1 2 3; do run history "$name" "warm$warm" --memory 1g --cpus 2 -- sh -c "$c"; done
    for rep in $(seq 1 "$reps"); do
        run none "$name" "$rep" --tune off -- sh -c "$c"
        run static "$name" "$rep" --memory 256m --cpus 1 --tune off -- sh -c "$c"
        rm -rf "$work/state-tuned-$name"
        run tuned "$name" "$rep" --memory 1g --cpus 2 -- sh -c "$c"
        run history "$name" "$rep" --memory 1g --cpus 2 -- sh -c "$c"
    done
done

python3 - "$work/reports" "$out/tuning.json" "$reps" <<'PY' | tee "$out/tuning.md"
import json, os, sys, statistics, platform
reports, dest, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
policies = ["static", "none", "tuned", "history"]
workloads = ["steady", "ramp", "spike", "phase", "cpu", "gcc", "python"]
def load(p, w, r):
    try: return json.load(open(os.path.join(reports, f"{p}-{w}-{r}.json")))
    except Exception: return None
def slack(rep):
    vals = [(s["memory_limit_bytes"] - s["memory_bytes"]) / s["memory_limit_bytes"]
            for s in rep.get("samples", []) if s.get("memory_limit_bytes") and s.get("memory_bytes") is not None]
    return statistics.mean(vals) if vals else None
table = {}
for w in workloads:
    base = [r["wall_s"] for r in (load("none", w, i) for i in range(1, reps + 1)) if r]
    for p in policies:
        rs = [r for r in (load(p, w, i) for i in range(1, reps + 1)) if r]
        walls = [r["wall_s"] for r in rs]
        sl = [x for x in (slack(r) for r in rs) if x is not None]
        table[(w, p)] = {
            "oom_kills": sum(1 for r in rs if r["oom_killed"]),
            "runs": len(rs),
            "slack": statistics.mean(sl) if sl and p != "none" else None,
            "slowdown": statistics.median(walls) / statistics.median(base) if walls and base else None,
            "adjustments": sum(len(r["adjustments"]) for r in rs),
            "peak_mib": max((r["memory_peak_bytes"] or 0) for r in rs) / 2**20 if rs else None,
        }
json.dump({f"{w}/{p}": v for (w, p), v in table.items()}, open(dest, "w"), indent=1)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
layout = "hybrid (v1 memory: the tuned knob is the soft limit)" if os.path.exists("/sys/fs/cgroup/unified") else "v2 (memory.high)"
print(f"Machine: {os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}, cgroups {layout}; {reps} runs per cell.\n")
print("| workload | policy | OOM kills | mean slack | slowdown vs none | limit changes | peak MiB |")
print("|---|---|---|---|---|---|---|")
def f(x, fmt): return "n/a" if x is None else fmt.format(x)
for w in workloads:
    for p in policies:
        t = table[(w, p)]
        print(f"| {w} | {p} | {t['oom_kills']}/{t['runs']} | {f(t['slack'], '{:.0%}')} | {f(t['slowdown'], '{:.2f}×')} | {t['adjustments']} | {f(t['peak_mib'], '{:.0f}')} |")
print()
for p in policies:
    cells = [table[(w, p)] for w in workloads]
    sl = [c["slack"] for c in cells if c["slack"] is not None]
    sd = [c["slowdown"] for c in cells if c["slowdown"] is not None]
    print(f"- {p}: OOM kills {sum(c['oom_kills'] for c in cells)}, mean slack {f(statistics.mean(sl) if sl else None, '{:.0%}')}, "
          f"worst slowdown {f(max(sd) if sd else None, '{:.2f}×')}")
PY
