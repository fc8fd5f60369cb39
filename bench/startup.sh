#!/bin/sh
# Start-up latency of a sandboxed /bin/true, dgrun side by side with its peers in one run.
#   bench/startup.sh [RUNS]        (as root; writes bench/results/startup.{json,md})
#   DGRUN_BEFORE=/path/to/dgrun    also times that binary ("dgrun before"), for an A/B of a change
# Same isolation everywhere: user, pid, mount, net, ipc, uts (+cgroup where the tool has it);
# dgrun and crun/runc also create a cgroup with a 64 MiB memory limit, dgrun loads its default
# seccomp profile. crun refuses the hybrid layout while the unified tree lists any controller, so the
# whole run happens in a private mount namespace where that file is masked with an empty one.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
runs=${1:-100}
out=$here/results
mkdir -p "$out"
[ "$(id -u)" = 0 ] || { echo "bench/startup.sh: run as root (crun and runc need it)" >&2; exit 1; }
for tool in hyperfine bwrap unshare python3 gcc; do
    command -v $tool >/dev/null || { echo "bench: missing $tool (apt-get install hyperfine bubblewrap util-linux python3 gcc)" >&2; exit 1; }
done
# The same commands, interleaved: each round runs every one once, shuffled (a host whose speed
# drifts moves hyperfine's blocks against each other; in turn the drift is shared).
interleave=$out/interleave
gcc -O2 -o "$interleave" "$here/floor/interleave.c" || { echo "bench: cannot build bench/floor/interleave.c" >&2; exit 1; }

"$repo/scripts/build-release.sh" >/dev/null 2>&1 || { echo "bench: release build failed" >&2; exit 1; }
dgrun=$repo/.build/release/dgrun
# An ad-hoc history of its own, empty: a /bin/true that once took 0.1 s (under valgrind, say) has
# history in ~/.local/state/dgrun, and every start would then open the store to read it.
export XDG_STATE_HOME="$out/state"
rm -rf "$XDG_STATE_HOME"

# An OCI bundle with the busybox rootfs for crun and runc.
bundle=$out/bundle
if [ ! -x "$bundle/rootfs/bin/busybox" ]; then
    "$repo/rootfs-scripts/build-busybox-rootfs.sh" "$bundle/rootfs" >/dev/null
fi
oci=""
for runtime in crun runc; do command -v $runtime >/dev/null && oci="$oci $runtime"; done
if [ -n "$oci" ]; then
    first=${oci# }; first=${first%% *}
    (cd "$bundle" && rm -f config.json && $first spec)
    python3 - "$bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
c["linux"].setdefault("resources", {})["memory"] = {"limit": 64 << 20}
names = {n["type"] for n in c["linux"]["namespaces"]}
for ns in ["user", "pid", "network", "ipc", "uts", "mount", "cgroup"]:
    if ns not in names:
        c["linux"]["namespaces"].append({"type": ns})
# The same user namespace as the others: root inside is the caller (root) outside.
c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
for m in c["mounts"]:  # gid 5 (tty) is not mapped in a one-id user namespace
    m["options"] = [o for o in m.get("options", []) if o != "gid=5"]
json.dump(c, open(path, "w"), indent=1)
PY
fi

cat > "$out/run-hyperfine.sh" <<SH
#!/bin/sh
set -eu
if [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
    : > "$out/empty"
    mount --bind "$out/empty" /sys/fs/cgroup/unified/cgroup.controllers
fi
set -- \\
  -n native "/bin/true" \\
  -n unshare "unshare --user --map-root-user --pid --fork --mount --mount-proc --net --ipc --uts /bin/true" \\
  -n bwrap "bwrap --unshare-user --unshare-pid --unshare-net --unshare-ipc --unshare-uts --unshare-cgroup --die-with-parent --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp /bin/true" \\
  -n dgrun "$dgrun exec --memory 64m --net none -- /bin/true" \\
  -n "dgrun --userns auto" "$dgrun exec --userns auto --memory 64m --net none -- /bin/true"
if [ -n "${DGRUN_BEFORE:-}" ]; then set -- "\$@" -n "dgrun before" "${DGRUN_BEFORE:-} exec --memory 64m --net none -- /bin/true"; fi
for runtime in $oci; do
  set -- "\$@" -n \$runtime "\$runtime run --bundle $bundle bench-\$runtime"
done
hyperfine -N --warmup 10 --runs $runs --export-json "$out/startup.json" "\$@"
# The interleaved rounds: the same (name, command) pairs, without hyperfine's -n.
reset=1
for word in "\$@"; do
  if [ \$reset = 1 ]; then set --; reset=0; fi
  [ "\$word" = "-n" ] || set -- "\$@" "\$word"
done
exec "$interleave" $runs "\$@" > "$out/startup-interleaved.tsv"
SH
chmod +x "$out/run-hyperfine.sh"
unshare --mount --propagation private "$out/run-hyperfine.sh" >"$out/hyperfine.log" 2>&1 || { cat "$out/hyperfine.log"; exit 1; }

# What loading the default profile's filter costs, as a chain of comparisons and as the binary tree
# dgrun compiles it to (the kernel runs the program for every syscall number at load).
python3 - "$repo/profiles/seccomp/default.json" > "$out/seccomp-names" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
for r in p["syscalls"]:
    if r["action"] != p["defaultAction"] and not r.get("args"):
        print("\n".join(r["names"]))
PY
gcc -O2 -o "$out/seccomp-load" "$here/floor/seccomp-load.c" -lseccomp || { echo "bench: cannot build bench/floor/seccomp-load.c (libseccomp-dev)" >&2; exit 1; }
"$out/seccomp-load" "$runs" "$out/seccomp-names" > "$out/seccomp-load.tsv"

rss_kib=$(/usr/bin/time -v "$dgrun" exec --memory 64m --net none -- /bin/true 2>&1 | sed -n 's/.*Maximum resident set size (kbytes): //p')

python3 - "$out/startup.json" "$rss_kib" "$out/startup-interleaved.tsv" "$out/seccomp-load.tsv" <<'PY' | tee "$out/startup.md"
import json, sys, platform, subprocess, os
data = json.load(open(sys.argv[1]))
rss = int(sys.argv[2] or 0)
res = {r["command"]: r for r in data["results"]}
def med(n): return res[n]["median"] * 1000
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}, "
      f"cgroups {'hybrid' if os.path.exists('/sys/fs/cgroup/unified') else 'v2'}; {len(res['dgrun']['times'])} runs each.\n")
print("| sandbox | median ms | mean ± σ ms | user ms | sys ms | dgrun ÷ it |")
print("|---|---|---|---|---|---|")
for name, r in res.items():
    print(f"| {name} | {r['median']*1000:.2f} | {r['mean']*1000:.2f} ± {r['stddev']*1000:.2f} | "
          f"{r['user']*1000:.2f} | {r['system']*1000:.2f} | {med('dgrun')/med(name):.2f} |")
rounds = [l.rstrip("\n").split("\t") for l in open(sys.argv[3]) if l.strip()]
inter = {name: (float(m), float(lo), float(hi)) for name, m, lo, hi in rounds}
print(f"\nInterleaved ({len(res['dgrun']['times'])} rounds, each running every sandbox once, in a shuffled order), wall ms:\n")
print("| sandbox | median | p25–p75 | dgrun ÷ it |")
print("|---|---|---|---|")
for name, (m, lo, hi) in inter.items():
    print(f"| {name} | {m:.2f} | {lo:.2f}–{hi:.2f} | {inter['dgrun'][0]/m:.2f} |")
print(f"\ndgrun peak RSS (/usr/bin/time -v): {rss/1024:.1f} MiB")
print("\nLoading the default profile's seccomp filter in a fresh process, µs:\n")
print("| program | instructions | median | p25–p75 |")
print("|---|---|---|---|")
for line in open(sys.argv[4]):
    shape, n, m, lo, hi = line.rstrip("\n").split("\t")
    print(f"| {shape} | {n} | {float(m):.1f} | {float(lo):.1f}–{float(hi):.1f} |")
PY
