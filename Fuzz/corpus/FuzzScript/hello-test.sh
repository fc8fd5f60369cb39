#!/bin/sh
# The example's test: the program runs, in the sandbox (hostname dgrun), and the host is read-only.
set -eu
out=$("$1")
case "$out" in "hello from dgrun, pid "*) echo "test: ok ($out)";; *) echo "test: unexpected output: $out"; exit 1;; esac
if touch /usr/dgrun-example 2>/dev/null; then echo "test: the host root is writable!"; exit 1; fi
echo "test: host root is read-only: ok"
