#!/bin/sh
# Runs the test binaries of BUILD/tests and prints one line per binary (in name order) and
# "N passed, N failed, N skipped" (test cases). docs/testing.md describes it.
#   sh scripts/run_tests.sh [BUILD]
# Environment:
#   T             name filter: only binaries whose name contains one of these words
#                 (separated by spaces or commas), e.g. T=fusion or T="save,kill"
#   J             binaries run at the same time (default: online cores)
#   TEST_TIMEOUT  seconds one binary may run before it is killed and failed (default 300)
# Each binary gets its own FM_TEST_TMP directory (removed when it passes, kept and named when
# it fails), its stdout in BUILD/tests/NAME.log.out and stderr in BUILD/tests/NAME.log. A binary
# that crashes, times out or prints no RESULT line counts as one failed case. A skipped case
# fails too unless it is listed in SKIP_ALLOWED below.

# "binary:case" pairs that may report a skip, each with the reason it can be legitimate.
#   test_save:test_read_only  root that cannot drop to uid 65534 (no CAP_SETUID): nothing can
#                             then act unprivileged, so a read-only directory does not refuse
SKIP_ALLOWED="test_save:test_read_only"

# ---- one binary (internal: run through xargs) -------------------------------------------------
if [ "${1:-}" = "--one" ]; then
  t=$2 root=$3
  name=$(basename "$t")
  dir="$root/$name"
  mkdir -p "$dir"
  start=$(date +%s%N)
  FM_TEST_TMP="$dir" timeout -k 10 "${TEST_TIMEOUT:-300}" "$t" > "$t.log.out" 2> "$t.log"
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "$ms" > "$t.time"
  echo "$rc $ms" > "$root/.$name.status.tmp" && mv "$root/.$name.status.tmp" "$root/.$name.status"
  exit 0
fi

BUILD=${1:-build}
J=${J:-$(nproc 2>/dev/null || echo 2)}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
export TEST_TIMEOUT
export FM_CLI="${FM_CLI:-$BUILD/fusemap}"

# ---- which binaries ---------------------------------------------------------------------------
pats=$(echo "${T:-}" | tr ',' ' ')
names=""
for t in "$BUILD"/tests/test_*; do
  case "$t" in *.log|*.out|*.time) continue ;; esac
  [ -f "$t" ] && [ -x "$t" ] || continue
  name=$(basename "$t")
  if [ -n "$pats" ]; then
    hit=0
    for p in $pats; do case "$name" in *"$p"*) hit=1 ;; esac; done
    [ "$hit" = 1 ] || continue
  fi
  names="$names $name"
done
if [ -z "$names" ]; then
  echo "run_tests: no test binary in $BUILD/tests matches T='${T:-}'" >&2
  exit 1
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/fusemap-tests.XXXXXX") || exit 1
xpid=""
cleanup() {
  [ -n "$xpid" ] && kill "$xpid" 2>/dev/null
  rm -rf "$root"
}
trap 'cleanup; exit 130' INT TERM

# Longest first (by the last recorded time), so the slow binaries do not finish last alone.
order=$(for n in $names; do
  ms=$(cat "$BUILD/tests/$n.time" 2>/dev/null || echo 0)
  echo "$ms $n"
done | sort -rn | cut -d' ' -f2)
echo "$order" | xargs -P "$J" -I{} sh "$0" --one "$BUILD/tests/{}" "$root" &
xpid=$!

in_list() { # in_list WORD LIST
  for w in $2; do [ "$w" = "$1" ] && return 0; done
  return 1
}

passed=0 failed=0 skipped=0 bad="" t0=$(date +%s)
for name in $names; do
  st="$root/.$name.status"
  while [ ! -f "$st" ]; do
    if ! kill -0 "$xpid" 2>/dev/null && [ ! -f "$st" ]; then
      echo "FAIL $name: never ran (the runner's worker pool ended)"; failed=$((failed + 1)); bad="$bad $name"
      continue 2
    fi
    sleep 0.05
  done
  read -r rc ms < "$st"
  log="$BUILD/tests/$name.log"
  res=$(grep '^RESULT ' "$log.out" 2>/dev/null | tail -n 1)
  set -- $res
  p=${2:-0} f=${3:-1} s=${4:-0}
  [ -n "$res" ] || { p=0; f=1; s=0; }
  why=""
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    why="timed out after ${TEST_TIMEOUT}s (TEST_TIMEOUT) and was killed"
    [ "$f" -eq 0 ] && f=1
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    why="exit status $rc"; f=1
  elif [ -z "$res" ]; then
    why="no RESULT line (crashed?), exit status $rc"
  fi
  # skips: only those the allow list names
  notes=""
  if [ "$s" -gt 0 ]; then
    for c in $(sed -n 's/^skip - \([A-Za-z0-9_]*\):.*/\1/p' "$log"); do
      if in_list "$name:$c" "$SKIP_ALLOWED"; then
        notes="$notes
     $(grep "^skip - $c:" "$log" | head -n 1) (allowed)"
      else
        f=$((f + 1)); s=$((s - 1))
        why="${why:+$why; }case $c skipped, and this runner allows no skip there"
      fi
    done
  fi
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  secs=$(printf '%d.%01d' $((ms / 1000)) $(((ms % 1000) / 100)))
  if [ "$f" -ne 0 ]; then
    echo "FAIL $name ($p passed, $f failed, ${secs}s)${why:+: $why}"
    grep -v '^ok - ' "$log" | head -n 40
    kept=""
    if [ -n "$(ls -A "$root/$name" 2>/dev/null)" ]; then
      rm -rf "$BUILD/tests/tmp/$name" && mkdir -p "$BUILD/tests/tmp" && mv "$root/$name" "$BUILD/tests/tmp/$name" &&
        kept=", its temporary files: $BUILD/tests/tmp/$name"
    fi
    echo "     (stdout: $log.out, stderr: $log$kept)"
    bad="$bad $name"
  else
    extra=""
    [ "$s" -gt 0 ] && extra=", $s skipped"
    echo "ok   $name ($p cases$extra, ${secs}s)$notes"
    rm -rf "${root:?}/$name"
  fi
done
wait "$xpid" 2>/dev/null
trap - INT TERM
rm -rf "$root"
echo "$passed passed, $failed failed, $skipped skipped ($(( $(date +%s) - t0 ))s, $J at a time)"
[ "$failed" -eq 0 ]
