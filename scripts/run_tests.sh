#!/bin/sh
# Runs every test binary under BUILD/tests, then prints "N passed, N failed" (test cases).
# A binary that crashes or prints no RESULT line counts as one failed case.
BUILD=${1:-build}
passed=0; failed=0; bad=""
export FM_TEST_TMP="${FM_TEST_TMP:-${TMPDIR:-/tmp}}"
export FM_CLI="$BUILD/fusemap"
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  log="$BUILD/tests/$name.log"
  start=$(date +%s)
  "$t" > "$log.out" 2> "$log"
  rc=$?
  res=$(grep '^RESULT ' "$log.out" | tail -n 1)
  if [ -n "$res" ]; then
    p=$(echo "$res" | cut -d' ' -f2); f=$(echo "$res" | cut -d' ' -f3)
  else
    p=0; f=1
  fi
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)); failed=$((failed + f))
  secs=$(( $(date +%s) - start ))
  if [ "$f" -ne 0 ]; then
    echo "FAIL $name ($p passed, $f failed, rc=$rc, ${secs}s)"
    grep -v '^ok - ' "$log" | head -n 40
    bad="$bad $name"
  else
    echo "ok   $name ($p cases, ${secs}s)"
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
