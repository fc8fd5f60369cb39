#!/bin/sh
# Builds the libFuzzer targets of Fuzz/ (one per parser that reads input a user or a task controls)
# with -sanitize=fuzzer,address in their own scratch folder, and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   SECONDS per target (default 30, or $DGRUN_FUZZ_SECONDS);
#                                           TARGETs by name (FuzzElf ...), default all of Fuzz/Sources/Fuzz*
#   scripts/fuzz.sh --check                 exit 0 when this toolchain can build a fuzzer, else say why
#   DGRUN_FUZZ_CONFIG=release               build -O (+ASan): 1.4-14x the executions a second, twice the
#                                           build time (157 s against 74 s here); default debug
#
# Each target starts from a fresh temporary copy of its seeds (Fuzz/corpus/TARGET/), so the repository's
# corpus is never changed. Any crash, trap, hang (-timeout=5) or out-of-memory (-rss_limit_mb=2048) is a
# failure: the script prints the input that caused it and the command that reproduces it, keeps the work
# folder, and exits 1. $DGRUN_FUZZ_SUMMARY, when set, receives one tab-separated line per target.
set -eu
cd "$(dirname "$0")/.."
scratch=.build-fuzz
config=${DGRUN_FUZZ_CONFIG:-debug}
case "$config" in debug|release) ;; *) echo "fuzz: DGRUN_FUZZ_CONFIG is debug or release, not $config" >&2; exit 2 ;; esac

# Can this toolchain link a libFuzzer + ASan binary? (Xcode's Swift cannot; swift.org's Linux toolchains can.)
check() {
    if ! command -v swiftc >/dev/null 2>&1; then echo "no swiftc on PATH"; return 1; fi
    probe=$(mktemp -d)
    printf '%s\n' '@_cdecl("LLVMFuzzerTestOneInput") public func f(_ d: UnsafePointer<UInt8>?, _ n: Int) -> CInt { 0 }' > "$probe/p.swift"
    if ! (cd "$probe" && swiftc -sanitize=fuzzer,address -parse-as-library p.swift -o p >log 2>&1); then
        echo "swiftc cannot link with -sanitize=fuzzer,address (no libFuzzer runtime in this toolchain): $(head -c 300 "$probe/log")"
        rm -rf "$probe"
        return 1
    fi
    rm -rf "$probe"
}

if [ "${1:-}" = --check ]; then
    if reason=$(check); then exit 0; fi
    echo "fuzz: cannot build fuzzers here: $reason" >&2
    exit 1
fi

seconds=${DGRUN_FUZZ_SECONDS:-30}
case "${1:-}" in
    ''|*[!0-9]*) ;;
    *) seconds=$1; shift ;;
esac
if [ $# -gt 0 ]; then
    targets="$*"
else
    targets=$(cd Fuzz/Sources && ls -d Fuzz* | grep -v '^FuzzSupport$')
fi

if ! reason=$(check); then echo "fuzz: cannot build fuzzers here: $reason" >&2; exit 1; fi

echo "fuzz: building the fuzzers (Fuzz/, $config, scratch $scratch)" >&2
mkdir -p "$scratch"
start=$(date +%s)
# The flags reach only this package's build (its own scratch folder): the main build never sees them.
if ! swift build -c "$config" --package-path Fuzz --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address \
        >"$scratch/fuzz-build.log" 2>&1; then
    grep -v 'Cannot export local symbol' "$scratch/fuzz-build.log" | tail -40 >&2
    echo "fuzz: the fuzzers did not build (full log: $scratch/fuzz-build.log)" >&2
    exit 1
fi
echo "fuzz: built in $(( $(date +%s) - start )) s" >&2
bin=$(swift build -c "$config" --package-path Fuzz --scratch-path "$scratch" --show-bin-path)

# A line of libFuzzer's -print_final_stats=1 output.
final_stat() { sed -n "s/^stat::$1: *//p" "$work/$target.log" | tail -1; }

# The Swift runtime's backtracer reads the crashed stack in a way ASan reports as an overflow: libFuzzer
# prints the stack itself.
export SWIFT_BACKTRACE=enable=no
# A leak inside libseccomp itself is not dgrun's (Fuzz/lsan.supp says which).
export LSAN_OPTIONS="suppressions=$(pwd)/Fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
work=$(mktemp -d "${TMPDIR:-/tmp}/dgrun-fuzz.XXXXXX")
failed=""
printf '%-16s %6s %11s %9s %13s  %s\n' target seconds executions exec/s corpus result >&2
for target in $targets; do
    if [ ! -x "$bin/$target" ]; then echo "fuzz: no fuzzer named $target" >&2; failed="$failed $target"; continue; fi
    corpus="$work/corpus/$target"
    mkdir -p "$corpus" "$work/artifacts/$target"
    [ -d "Fuzz/corpus/$target" ] && cp -R "Fuzz/corpus/$target/." "$corpus/"
    # The format's words, where the target has a dictionary (Fuzz/dict/TARGET.dict).
    dict=""
    [ -f "Fuzz/dict/$target.dict" ] && dict="-dict=$(pwd)/Fuzz/dict/$target.dict"
    status=0
    (cd "$work" && "$bin/$target" "$corpus" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 $dict \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/$target/" >"$work/$target.log" 2>&1) || status=$?
    runs=$(final_stat number_of_executed_units); rate=$(final_stat average_exec_per_sec)
    files=$(ls "$corpus" | wc -l | tr -d ' '); kb=$(( $(find "$corpus" -type f -exec cat {} + | wc -c) / 1024 ))
    artifact=$(ls "$work/artifacts/$target/" 2>/dev/null | head -1)
    if [ "$status" = 0 ] && [ -z "$artifact" ]; then result=ok; else result="FAILED (exit $status)"; failed="$failed $target"; fi
    printf '%-16s %6s %11s %9s %13s  %s\n' "$target" "$seconds" "${runs:-?}" "${rate:-?}" "$files/${kb}K" "$result" >&2
    [ -n "${DGRUN_FUZZ_SUMMARY:-}" ] && printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$seconds" "${runs:-0}" "${rate:-0}" \
        "$files" "$kb" "$result" >>"$DGRUN_FUZZ_SUMMARY"
    if [ "$result" != ok ]; then
        grep -A25 -m1 'ERROR: \|==ERROR\|Fatal error\|deadly signal\|timeout after' "$work/$target.log" | head -40 >&2 || true
        for a in "$work/artifacts/$target/"*; do
            [ -e "$a" ] || continue
            echo "fuzz: $target: input $a" >&2
            echo "fuzz:   reproduce: SWIFT_BACKTRACE=$SWIFT_BACKTRACE LSAN_OPTIONS=$LSAN_OPTIONS $bin/$target $a" >&2
        done
        echo "fuzz:   log: $work/$target.log" >&2
    fi
done

if [ -n "$failed" ]; then
    echo "fuzz: FAILED:$failed (work folder kept: $work)" >&2
    exit 1
fi
rm -rf "$work"
echo "fuzz: every target ran ${seconds} s without a crash" >&2
