#!/bin/sh
# Installs what dgrun's build, tests and demo need on Debian/Ubuntu, only when something is missing.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run by itself.
set -eu
need=""
have_header() { [ -e "/usr/include/$1" ]; }
have() { command -v "$1" >/dev/null 2>&1; }
have_header seccomp.h || need="$need libseccomp-dev"
have_header sys/capability.h || need="$need libcap-dev"
have_header sqlite3.h || need="$need libsqlite3-dev"   # the state store (GRDB)
have pkg-config || need="$need pkg-config"
have gcc || need="$need gcc"
have busybox || need="$need busybox-static"
have cpio || need="$need cpio"
have xz || need="$need xz-utils"
have python3 || need="$need python3"
have curl || need="$need curl"           # [fetch] downloads
have strace || need="$need strace"       # the independent tracer discover's accuracy is checked against
have cc || need="$need gcc"              # the pipeline example and its tests
have bash || need="$need bash"
have setpriv || need="$need util-linux"
have qemu-system-x86_64 || need="$need qemu-system-x86"
# discover hashes files with the system's libcrypto, loaded on demand.
ldconfig -p 2>/dev/null | grep -q 'libcrypto\.so\.3 ' || need="$need libssl3"
if [ "${DGRUN_WITH_BENCH:-0}" = 1 ]; then
    have hyperfine || need="$need hyperfine"
    have bwrap || need="$need bubblewrap"
    have crun || need="$need crun"
    have runc || need="$need runc"
    [ -x /usr/bin/time ] || need="$need time"
    have ninja || need="$need ninja-build"
    have make || need="$need make"
fi
if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
    # The kernel for the cgroup-v2 VM test lane (booted under QEMU, never on this machine).
    if grep -qi ubuntu /etc/os-release 2>/dev/null; then need="$need linux-image-generic"; else need="$need linux-image-amd64"; fi
fi
if ! have swift; then
    for dir in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
        [ -x "$dir/swift" ] && PATH="$dir:$PATH" && export PATH
    done
fi
if ! have swift; then need="$need swiftlang"; fi   # Debian 13+/Ubuntu 24.10+; else install from swift.org
if [ -n "$need" ]; then
    echo "dgrun: installing:$need" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need >&2
fi
have swift || { echo "dgrun: no Swift 6 toolchain found; install one from https://www.swift.org/install/linux/" >&2; exit 1; }
