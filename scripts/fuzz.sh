#!/bin/sh
# Runs the libFuzzer harnesses (fuzz/fuzz_*.c): installs clang's libFuzzer runtime when missing
# (like deps.sh: apt-get as root, else prints the command), builds them (make fuzz-build:
# clang, ASan+UBSan, in $FUZZ_BUILD), then runs each for $FUZZ_SECONDS seconds on a scratch
# copy of fuzz/corpus/<name>/ (the committed seeds are never modified). Prints per harness the
# executions, speed, corpus growth and any finding; findings (crash/leak/timeout/oom inputs and
# the log) are copied to fuzz/findings/<name>/, which is not replayed. Exit 1 on any finding.
# FUZZ_FORK=1 keeps going past findings (libFuzzer -fork=1 -ignore_*), for use while a known
# finding is open.
#   usage: sh scripts/fuzz.sh [harness ...]        (default: every harness)
set -u
SECS=${FUZZ_SECONDS:-60}
FB=${FUZZ_BUILD:-build-fuzz}
MK=${MAKE:-make}
CLANG=${FUZZ_CC:-clang}
cd "$(dirname "$0")/.." || exit 1

# ---- dependencies: clang and its libFuzzer runtime ------------------------------------------
have_libfuzzer() {
  printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' |
    "$CLANG" -fsanitize=fuzzer -x c - -o /dev/null >/dev/null 2>&1
}
if ! have_libfuzzer; then
  pkgs="clang"
  if command -v "$CLANG" >/dev/null 2>&1; then
    major=$("$CLANG" -dumpversion | cut -d. -f1)
    pkgs="libclang-rt-$major-dev"
  fi
  if [ "$(id -u)" = 0 ]; then
    echo "fuzz: installing $pkgs" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    if [ "$pkgs" = clang ] && ! have_libfuzzer; then   # runtime comes separately on Debian
      major=$("$CLANG" -dumpversion | cut -d. -f1)
      apt-get install -y -qq --no-install-recommends "libclang-rt-$major-dev" >/dev/null
    fi
  fi
  if ! have_libfuzzer; then
    echo "fuzz: clang with the libFuzzer runtime is missing; run: sudo apt-get install -y $pkgs" >&2
    exit 2
  fi
fi

# ---- build ----------------------------------------------------------------------------------
names=${*:-$(ls fuzz/fuzz_*.c | sed -e 's|fuzz/fuzz_||' -e 's|\.c$||' | grep -v '^common$')}
"$MK" --no-print-directory fuzz-build FUZZ_BUILD="$FB" FUZZ_CC="$CLANG" >/dev/null || exit 2

# ---- run ------------------------------------------------------------------------------------
# Scratch on tmpfs when there is one: the directory harnesses create and remove files per input.
base=${TMPDIR:-/tmp}
[ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
work=$(mktemp -d "$base/fusemap-fuzz-run.XXXXXX") || exit 2
trap 'rm -rf "$work"' EXIT INT TERM
found=0
printf '%-11s %10s %8s %12s  %s\n' harness executions exec/s corpus result
for n in $names; do
  bin="$FB/fuzz_$n"
  [ -x "$bin" ] || { echo "fuzz: no harness $n" >&2; found=1; continue; }
  mkdir -p "$work/$n/corpus" "$work/$n/art" "$work/$n/tmp"
  cp fuzz/corpus/"$n"/* "$work/$n/corpus/" 2>/dev/null
  seeds=$(ls "$work/$n/corpus" | wc -l)
  dict=""
  [ -f "fuzz/$n.dict" ] && dict="-dict=fuzz/$n.dict"
  fork=""
  [ "${FUZZ_FORK:-0}" = 1 ] && fork="-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1"
  FM_FUZZ_TMP="$work/$n/tmp" ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}" \
    "$bin" "$work/$n/corpus" $dict $fork -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$work/$n/art/" >"$work/$n/log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$n/log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$n/log" | tail -n 1)
  if [ -n "$fork" ]; then   # fork mode reports "#N: ... exec/s S oom/timeout/crash: a/b/c ..."
    last=$(grep -E '^#[0-9]+: ' "$work/$n/log" | tail -n 1)
    execs=$(echo "$last" | sed -n 's/^#\([0-9]*\):.*/\1/p')
    speed=$(echo "$last" | sed -n 's/.*exec\/s \([0-9]*\).*/\1/p')
  fi
  now=$(ls "$work/$n/corpus" | wc -l)
  arts=$(ls "$work/$n/art" 2>/dev/null)
  if [ "$rc" -eq 0 ] && [ -z "$arts" ]; then
    result="no finding"
  else
    found=1
    mkdir -p "fuzz/findings/$n"
    cp "$work/$n/art/"* "fuzz/findings/$n/" 2>/dev/null
    cp "$work/$n/log" "fuzz/findings/$n/log.txt"
    result="FINDING (rc=$rc): fuzz/findings/$n/ ${arts:-(no artifact)}"
  fi
  printf '%-11s %10s %8s %5s -> %-4s  %s\n' "$n" "${execs:-?}" "${speed:-?}" "$seeds" "$now" "$result"
  [ "$found" -ne 0 ] && [ "$rc" -ne 0 ] && grep -E 'ERROR|SUMMARY|#[0-9]+ .* in |FUZZ ORACLE' "$work/$n/log" | head -n 20
done
exit $found
