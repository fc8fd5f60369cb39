#!/bin/sh
# The CI scenario of issue 12 on examples/pipeline: a fresh clone (sources only: no outputs, no
# .dgrun) executed cold (no cache: every task runs), warm from the local cache, and warm from a
# remote cache (nginx with WebDAV on 127.0.0.1, started here, its files in a temporary directory)
# with an empty local cache, as a new CI runner has; then the no-op exec after a restore.
#   bench/cache.sh [RUNS]     (writes bench/results/cache.{json,md})
# Wall times are hyperfine's medians; "bytes moved" is what the restore wrote (local) or what
# nginx sent (remote: the manifests and blobs, from its access log).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
runs=${1:-10}
out=$here/results
mkdir -p "$out"

# What it needs, installed when missing (Debian/Ubuntu), without letting a package start a
# system nginx: policy-rc.d says no to every service start for the time of the install.
need=""
command -v hyperfine >/dev/null || need="$need hyperfine"
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need="$need nginx-light"
command -v python3 >/dev/null || need="$need python3"
command -v cc >/dev/null || need="$need gcc"
ldconfig -p 2>/dev/null | grep -q 'libcurl\.so\.4 ' || need="$need libcurl4"
if [ -n "$need" ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "bench: installing:$need" >&2
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null && $sudo chmod +x /usr/sbin/policy-rc.d && policy=1
    fi
    $sudo apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need >&2 || true
    [ -n "$policy" ] && $sudo rm -f /usr/sbin/policy-rc.d
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)

"$repo/scripts/build-release.sh" >/dev/null 2>&1 || { echo "bench: release build failed" >&2; exit 1; }
dgrun=$repo/.build/release/dgrun
limits=""
[ "$(id -u)" = 0 ] || limits="--limits best-effort"

root=$out/cache
rm -rf "$root"
mkdir -p "$root"
src=$root/src
cp -R "$repo/examples/pipeline" "$src"
rm -rf "$src"/*/.dgrun "$src"/*/out
clone="rm -rf $root/clone && cp -R $src $root/clone"

# The remote: nginx on a free loopback port, everything in $root/nginx.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ngx=$root/nginx
mkdir -p "$ngx/root" "$ngx/tmp"
chmod 777 "$ngx/root" "$ngx/tmp"
cat > "$ngx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $ngx/nginx.pid;
error_log $ngx/error.log;
events { worker_connections 64; }
http {
    log_format bytes '\$request_method \$status \$body_bytes_sent \$request_length';
    access_log $ngx/access.log bytes;
    client_body_temp_path $ngx/tmp;
    proxy_temp_path $ngx/tmp; fastcgi_temp_path $ngx/tmp; uwsgi_temp_path $ngx/tmp; scgi_temp_path $ngx/tmp;
    server {
        listen 127.0.0.1:$port;
        root $ngx/root;
        client_max_body_size 0;
        location / { dav_methods PUT; create_full_put_path on; dav_access user:rw group:r all:r; }
    }
}
EOF
"$nginx" -e "$ngx/error.log" -p "$ngx" -c "$ngx/nginx.conf" &
ngx_pid=$!
trap 'kill $ngx_pid 2>/dev/null || true' EXIT INT TERM
url=http://127.0.0.1:$port/cache
python3 - "$port" <<'PY'
import socket, sys, time
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); break
    except OSError: time.sleep(0.1)
PY

# Fill both caches once, from a first clone (what the first CI job or a developer does).
local=$root/local-cache
sh -c "$clone"
"$dgrun" exec $limits --cache "$local" --cache-url "$url" "$root/clone" 2>"$root/fill.log"
: > "$ngx/access.log"

# Bytes moved by one restore of each kind, and a check that nothing ran.
sh -c "$clone"
"$dgrun" exec $limits --cache "$local" "$root/clone" 2>"$root/local.log"
sh -c "$clone"; rm -rf "$root/empty-cache"
"$dgrun" exec $limits --cache "$root/empty-cache" --cache-url "$url" "$root/clone" 2>"$root/remote.log"
grep -q running "$root/local.log" "$root/remote.log" && { echo "bench: a task ran where it should have been restored:" >&2; cat "$root/local.log" "$root/remote.log" >&2; exit 1; }
cp "$ngx/access.log" "$root/remote-access.log"

hyperfine --runs "$runs" --warmup 1 --export-json "$out/cache.json" \
    --prepare "$clone" -n "cold (no cache)" "$dgrun exec $limits --cache off $root/clone" \
    --prepare "$clone" -n "warm local" "$dgrun exec $limits --cache $local $root/clone" \
    --prepare "$clone && rm -rf $root/empty-cache" -n "warm remote (empty local)" \
        "$dgrun exec $limits --cache $root/empty-cache --cache-url $url $root/clone" \
    --prepare "true" -n "no-op after restore" "$dgrun exec $limits --cache $local $root/clone" >&2

python3 - "$out/cache.json" "$root/local.log" "$root/remote-access.log" "$out/cache.md" "$runs" <<'PY'
import json, re, statistics, sys, os, platform
results = json.load(open(sys.argv[1]))["results"]
def size(text):
    n, unit = re.match(r"([\d.]+) (B|KiB|MiB|GiB)", text).groups()
    return float(n) * {"B": 1, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}[unit]
local = sum(size(m) for m in re.findall(r"restored from cache \(the local cache: \d+ files, ([\d.]+ \w+)\)", open(sys.argv[2]).read()))
sent = received = requests = 0
for line in open(sys.argv[3]):
    method, status, body, length = line.split()
    requests += 1
    sent += int(body)
    received += int(length)
rows = []
for r in results:
    moved = {"warm local": f"{local / 1024:.1f} KiB written from the local cache",
             "warm remote (empty local)": f"{sent / 1024:.1f} KiB downloaded in {requests} requests ({received / 1024:.1f} KiB sent up)",
             "cold (no cache)": "0 (every task runs: 2 cc builds)",
             "no-op after restore": "0"}.get(r["command"], "")
    rows.append(f"| {r['command']} | {statistics.median(r['times']) * 1000:.0f} | {r['min'] * 1000:.0f} | {r['max'] * 1000:.0f} | {moved} |")
mem = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30))
machine = f"{os.cpu_count()} CPUs, {mem} GiB, kernel {platform.release()}, {sys.argv[5]} runs each (hyperfine, 1 warm-up)"
text = "| exec of a fresh clone of examples/pipeline | median ms | min | max | bytes moved |\n|---|---:|---:|---:|---|\n" + "\n".join(rows)
open(sys.argv[4], "w").write(f"Machine: {machine}\n\n{text}\n")
print(f"Machine: {machine}\n\n{text}")
PY
