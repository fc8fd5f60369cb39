#!/bin/sh
# The cgroup-v2 test lane: boots Debian's kernel under QEMU/TCG (KVM is not needed) with the host's
# root shared read-only over 9p and a tmpfs overlay on top, mounts cgroup2 as the only hierarchy,
# and runs a command there as root. Prints the guest's console and exits with the command's status.
#
#   rootfs-scripts/vm-test.sh [--timeout SECONDS] -- COMMAND [ARGS...]
#
# Needs: qemu-system-x86, linux-image-amd64 (for /boot/vmlinuz-* and its modules), busybox-static,
# cpio, xz-utils. Builds its kernel and initramfs once into $DGRUN_VM_DIR (default .build/vm).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
timeout=600
if [ "${1:-}" = --timeout ]; then timeout=$2; shift 2; fi
[ "${1:-}" = -- ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [--timeout S] -- COMMAND [ARGS...]" >&2; exit 2; }

missing=""
command -v qemu-system-x86_64 >/dev/null || missing="$missing qemu-system-x86"
command -v cpio >/dev/null || missing="$missing cpio"
command -v xz >/dev/null || missing="$missing xz-utils"
command -v busybox >/dev/null || missing="$missing busybox-static"
kernel_image=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$kernel_image" ] || missing="$missing linux-image-amd64"
if [ -n "$missing" ]; then
    echo "vm-test: SKIP: missing packages:$missing" >&2
    exit 77
fi
release=${kernel_image#/boot/vmlinuz-}
moddir=/lib/modules/$release
work=${DGRUN_VM_DIR:-$repo/.build/vm}/$release
mkdir -p "$work"

# 1. The uncompressed kernel: QEMU boots the ELF vmlinux directly through PVH.
if [ ! -s "$work/vmlinux" ]; then
    offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$kernel_image" | head -n 1 | cut -d: -f1)
    [ -n "$offset" ] || { echo "vm-test: no xz payload in $kernel_image" >&2; exit 1; }
    tail -c +$((offset + 1)) "$kernel_image" | xz -dcq > "$work/vmlinux.tmp" 2>/dev/null || true
    head -c 4 "$work/vmlinux.tmp" | grep -q ELF || { echo "vm-test: could not extract vmlinux" >&2; exit 1; }
    mv "$work/vmlinux.tmp" "$work/vmlinux"
fi

# 2. The initramfs: static busybox, the 9p and overlay modules, and /init.
modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci 9pnet 9pnet_virtio netfs fscache 9p overlay"
if [ ! -s "$work/initramfs.cpio.gz" ] || [ "$here/vm-test.sh" -nt "$work/initramfs.cpio.gz" ]; then
    root="$work/initramfs"
    rm -rf "$root"
    mkdir -p "$root/bin" "$root/modules" "$root/proc" "$root/sys" "$root/dev" "$root/host" "$root/newroot" "$root/ovl"
    cp "$(command -v busybox)" "$root/bin/busybox"
    for m in $modules; do
        f=$(find "$moddir/kernel" -name "$m.ko*" | head -n 1)
        [ -n "$f" ] || continue   # built in
        case "$f" in
            *.xz) xz -dc "$f" > "$root/modules/$m.ko" ;;
            *.zst) zstd -dqc "$f" > "$root/modules/$m.ko" ;;
            *) cp "$f" "$root/modules/$m.ko" ;;
        esac
    done
    cat > "$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Loopback, for the tests' local servers (the guest has no other network).
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
for m in $modules; do [ -f /modules/\$m.ko ] && insmod /modules/\$m.ko; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host || { echo "vm: 9p mount failed"; reboot -f; }
mount -t tmpfs -o size=600m tmpfs /ovl
mkdir -p /ovl/up /ovl/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/ovl/up,workdir=/ovl/work /newroot
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
# /tmp stays the overlay: the host's /tmp (where a clone may live) shows through, writes stay in the guest.
mount -t tmpfs tmpfs /newroot/run
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
echo "+memory +cpu +pids" > /newroot/sys/fs/cgroup/cgroup.subtree_control
cp /dgrun-vm-command /newroot/tmp/dgrun-vm-command
cd /newroot
# Move the root instead of chrooting into a subdirectory: the kernel refuses new user namespaces
# to a process whose root is not its mount namespace's root, and every sandbox needs one.
mount --move . /
chroot . /bin/sh /tmp/dgrun-vm-command
echo "DGRUN_VM_EXIT=\$?"
reboot -f
INIT
    chmod +x "$root/init"
fi
# The command file changes per run; add it beside the cached archive.
cmdroot="$work/cmd"
rm -rf "$cmdroot"
mkdir -p "$cmdroot"
{
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8'
    echo "cd '$(pwd)' 2>/dev/null || cd /"
    printf 'exec'
    for arg in "$@"; do printf " '%s'" "$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")"; done
    echo
} > "$cmdroot/dgrun-vm-command"
(cd "$work/initramfs" && find . | cpio -o -H newc --quiet) > "$work/base.cpio"
(cd "$cmdroot" && echo dgrun-vm-command | cpio -o -H newc --quiet) > "$work/cmd.cpio"
cat "$work/base.cpio" "$work/cmd.cpio" | gzip -1 > "$work/initramfs.cpio.gz"

# 3. Boot. The exit status comes back on the serial console.
log="$work/console.log"
timeout "$timeout" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -M q35 -smp 1 -m 1536 \
    -nographic -no-reboot -nodefaults -serial stdio \
    -kernel "$work/vmlinux" -initrd "$work/initramfs.cpio.gz" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -append "console=ttyS0 rdinit=/init panic=-1 reboot=t quiet mitigations=off nokaslr tsc=reliable no_timer_check cryptomgr.notests psi=1" \
    < /dev/null 2>&1 | tee "$log" || true
status=$(tr -d '\r' < "$log" | sed -n 's/^DGRUN_VM_EXIT=\([0-9]*\)$/\1/p' | tail -n 1)
if [ -z "$status" ]; then
    echo "vm-test: the guest did not report an exit status (timeout after ${timeout}s or a boot failure)" >&2
    exit 1
fi
exit "$status"
