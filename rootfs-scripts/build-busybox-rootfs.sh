#!/bin/sh
# Builds a minimal busybox root filesystem for `dgrun exec --rootfs DIR`.
#   rootfs-scripts/build-busybox-rootfs.sh [DIR]      (default: rootfs-scripts/out/busybox)
# Needs a statically linked busybox (Debian/Ubuntu: apt-get install busybox-static).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/out/busybox}
busybox=${BUSYBOX:-$(command -v busybox || true)}
if [ -z "$busybox" ]; then
    echo "build-busybox-rootfs: busybox not found; install it: apt-get install busybox-static" >&2
    exit 1
fi
if ! "$busybox" --list >/dev/null 2>&1; then
    echo "build-busybox-rootfs: $busybox does not run" >&2
    exit 1
fi
if LC_ALL=C ldd "$busybox" >/dev/null 2>&1; then
    echo "build-busybox-rootfs: $busybox is dynamically linked; install busybox-static" >&2
    exit 1
fi

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cd "$out.tmp"
mkdir -p bin sbin usr/bin usr/sbin etc proc dev sys tmp root home work var/tmp
chmod 1777 tmp var/tmp
cp "$busybox" bin/busybox
# One symlink per applet, at the path busybox itself gives for it.
"$busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$applet"
done
cat > etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > etc/group <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
cat > etc/os-release <<'OS'
NAME="dgrun busybox rootfs"
ID=dgrun-busybox
OS
echo dgrun > etc/hostname
cd - >/dev/null
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
