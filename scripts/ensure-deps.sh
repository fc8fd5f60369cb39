#!/bin/sh
# Installs what dgrun needs on Debian/Ubuntu, only what is missing, for one purpose:
#   DGRUN_DEPS=demo  (the default) build dgrun and run its main job on the bundled examples
#   DGRUN_DEPS=test  also every test lane: the rootfs, the strace oracle, the cgroup-v2 VM (qemu, a kernel)
#   DGRUN_WITH_BENCH=1  also the benchmarks' peers (hyperfine, bubblewrap, crun, runc, ninja)
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run by itself.
set -eu
purpose=${DGRUN_DEPS:-demo}
need=""
have_header() { [ -e "/usr/include/$1" ]; }
have() { command -v "$1" >/dev/null 2>&1; }
# The build and the main job.
have_header seccomp.h || need="$need libseccomp-dev"
have_header sys/capability.h || need="$need libcap-dev"
have_header sqlite3.h || need="$need libsqlite3-dev"   # the state store (libsqlite3)
have pkg-config || need="$need pkg-config"
have gcc || need="$need gcc"                             # the examples build C; swift's clang links with it
# discover hashes files with the system's libcrypto, loaded on demand.
ldconfig -p 2>/dev/null | grep -q 'libcrypto\.so\.3 ' || need="$need libssl3"
# The remote output cache (--cache-url) speaks HTTP through the system's libcurl, loaded on demand.
ldconfig -p 2>/dev/null | grep -q 'libcurl\.so\.4 ' || need="$need libcurl4"
if [ "$purpose" = test ]; then
    have busybox || need="$need busybox-static"          # --rootfs tests
    have cpio || need="$need cpio"                       # the VM's initramfs
    have xz || need="$need xz-utils"
    have python3 || need="$need python3"
    have curl || need="$need curl"                       # [fetch] and accuracy tests
    have strace || need="$need strace"                   # the independent tracer discover is checked against
    have bash || need="$need bash"
    have setpriv || need="$need util-linux"              # the rootless lane
    have xmllint || need="$need libxml2-utils"           # dgrun ci's JUnit file, checked against the schema
    [ -x /usr/sbin/nginx ] || have nginx || need="$need nginx-light"   # the remote cache tests' WebDAV server (started by the test, never as a service)
    python3 -m pip --version >/dev/null 2>&1 || need="$need python3-pip"   # junitparser, below
    have qemu-system-x86_64 || need="$need qemu-system-x86"
    if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
        # The kernel for the cgroup-v2 VM test lane (booted under QEMU, never on this machine).
        if grep -qi ubuntu /etc/os-release 2>/dev/null; then need="$need linux-image-generic"; else need="$need linux-image-amd64"; fi
    fi
fi
if [ "${DGRUN_WITH_BENCH:-0}" = 1 ]; then
    have hyperfine || need="$need hyperfine"
    have bwrap || need="$need bubblewrap"
    have crun || need="$need crun"
    have runc || need="$need runc"
    [ -x /usr/bin/time ] || need="$need time"
    have ninja || need="$need ninja-build"
    have make || need="$need make"
    have strace || need="$need strace"
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if [ -n "$need" ]; then
    echo "dgrun: installing:$need" >&2
    # nginx is for the tests, which start their own on loopback: the package must not start a
    # system service (policy-rc.d refuses every start for the time of the install).
    policy=""
    case "$need" in *nginx*) if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null && $sudo chmod +x /usr/sbin/policy-rc.d && policy=1
    fi ;; esac
    $sudo apt-get update -qq || true
    # One unknown package (a name another release spells differently) must not stop the others.
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need >&2; then
        for package in $need; do
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$package" >&2 \
                || echo "dgrun: could not install $package; what needs it will say so" >&2
        done
    fi
    [ -z "$policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
fi

# dgrun ci's JUnit file is read by a real consumer in the tests: junitparser from PyPI. Offline,
# the test reads it with Python's xml.etree instead (and says so).
if [ "$purpose" = test ] && have python3 && ! python3 -c 'import junitparser' 2>/dev/null; then
    python3 -m pip install -q junitparser >&2 2>/dev/null \
        || python3 -m pip install -q --break-system-packages junitparser >&2 2>/dev/null \
        || echo "dgrun: could not install junitparser (offline?); the JUnit test falls back to xml.etree" >&2
fi

# A Swift 6 toolchain: one already installed, else the swift.org release archive, its signature
# checked against swift.org's keys (Debian 12 and Ubuntu 22.04/24.04 have no swift package).
if ! have swift; then
    for dir in /opt/swift/usr/bin /usr/share/swift/usr/bin "$HOME/.local/share/swiftly/bin"; do
        [ -x "$dir/swift" ] && PATH="$dir:$PATH" && export PATH && break
    done
fi
if ! have swift; then
    version=${DGRUN_SWIFT_VERSION:-6.1.2}
    . /etc/os-release
    case "$ID$VERSION_ID" in
        debian12) platform=debian12; dir=debian12 ;;
        ubuntu24.04) platform=ubuntu24.04; dir=ubuntu2404 ;;
        ubuntu22.04) platform=ubuntu22.04; dir=ubuntu2204 ;;
        *) echo "dgrun: no Swift toolchain found; install Swift 6 from https://www.swift.org/install/linux/ (swiftly)" >&2; exit 1 ;;
    esac
    echo "dgrun: installing Swift $version from swift.org into /opt/swift" >&2
    $sudo apt-get install -y -qq --no-install-recommends curl gnupg ca-certificates binutils libc6-dev libcurl4-openssl-dev \
        libedit2 libgcc-12-dev libncurses-dev libpython3-dev libstdc++-12-dev libxml2-dev libz3-dev tzdata unzip zlib1g-dev >&2 || true
    base="https://download.swift.org/swift-$version-release/$dir/swift-$version-RELEASE/swift-$version-RELEASE-$platform.tar.gz"
    tmp=$(mktemp -d)
    curl -fsSL -o "$tmp/swift.tar.gz" "$base" && curl -fsSL -o "$tmp/swift.tar.gz.sig" "$base.sig" \
        && curl -fsSL -o "$tmp/keys.asc" https://www.swift.org/keys/all-keys.asc \
        || { echo "dgrun: cannot download Swift $version; install it from https://www.swift.org/install/linux/" >&2; rm -rf "$tmp"; exit 1; }
    GNUPGHOME="$tmp/gnupg" && export GNUPGHOME && mkdir -m 700 "$GNUPGHOME"
    gpg -q --import "$tmp/keys.asc" && gpg -q --verify "$tmp/swift.tar.gz.sig" "$tmp/swift.tar.gz" \
        || { echo "dgrun: the Swift archive's signature does not verify; not installing it" >&2; rm -rf "$tmp"; exit 1; }
    $sudo mkdir -p /opt/swift && $sudo tar -xzf "$tmp/swift.tar.gz" -C /opt/swift --strip-components=1
    unset GNUPGHOME
    rm -rf "$tmp"
    PATH="/opt/swift/usr/bin:$PATH" && export PATH
fi
have swift || { echo "dgrun: no Swift 6 toolchain found; install one from https://www.swift.org/install/linux/" >&2; exit 1; }
