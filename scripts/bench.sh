#!/bin/sh
# `make bench`: runs every benchmark; each prints one JSON object per line.
set -eu
BUILD=${1:-build}
for b in load load_pretrained vision fusion preprocess sampling tokenize decode_kernels generate serve; do
  if [ -x "$BUILD/bench/$b" ]; then
    echo "== bench/$b" >&2
    "$BUILD/bench/$b" ${FM_BENCH_ARGS:-}
  fi
done
