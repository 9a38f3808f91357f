#!/bin/sh
# Regenerates the tokenizer test fixture in tests/data/tokenizer/: a byte-level BPE tokenizer
# trained on the generated corpus (bench/gen_tokenizer; the same vocab and merges written with
# both merge encodings, ["a","b"] pairs and legacy "a b" strings) and goldens.json, the ids and
# texts Hugging Face's tokenizers library gives for it (scripts/crosscheck/tokenizer.mjs; needs
# node and npm). Then cross-checks fusemap on both files. Not part of `make test`.
set -eu
cd "$(dirname "$0")/.."
make --no-print-directory build/bench/gen_tokenizer build/fusemap >/dev/null
D=tests/data/tokenizer
mkdir -p "$D/pairs" "$D/legacy"
build/bench/gen_tokenizer "$D/pairs/tokenizer.json" --mixed --merges 1000
build/bench/gen_tokenizer "$D/legacy/tokenizer.json" --mixed --merges 1000 --legacy
if [ ! -d scripts/crosscheck/node_modules/tokenizers ]; then
  (cd scripts/crosscheck && npm install --ignore-scripts --no-audit --no-fund >/dev/null)
fi
node scripts/crosscheck/tokenizer.mjs goldens --out "$D/goldens.json" --random 300 "$D/pairs"
node scripts/crosscheck/tokenizer.mjs check --fusemap build/fusemap --random 1000 "$D/pairs" "$D/legacy"
