#!/bin/sh
# `make demo`: generates (once, cached under BUILD/demo) a small Qwen2-VL checkpoint with the
# 2B model's vision and decoder widths (2 vision blocks, 2 decoder layers, random weights), a
# test tokenizer, chat template and image; runs image + prompt -> text unfused and fused, the
# vision tower unfused and fused, and verifies that fusing changes no output and no saved byte.
set -eu
BUILD=${1:-build}
D="$BUILD/demo"
FM="$BUILD/fusemap"
if [ ! -f "$D/model/tokenizer.json" ] || [ ! -f "$D/image.png" ]; then
  echo "demo: generating a Qwen2-VL checkpoint (2B widths, 2 vision blocks, 2 decoder layers) and a 448x448 image in $D"
  rm -rf "$D"; mkdir -p "$D"
  "$BUILD/bench/gen_checkpoint" "$D/model" --preset demo --dtype bf16 --chat --image "$D/image.png" 448 448
fi
echo "== fusemap inspect $D/model (first lines)"
"$FM" inspect "$D/model" | head -n 8
echo "== fusemap generate: image + prompt in, text out (random weights, so the text is noise;"
echo "   on a real checkpoint this is the answer)"
"$FM" generate "$D/model" --image "$D/image.png" --prompt "What is in this picture?" --max-new-tokens 16
echo "== the same with every fusion family on (patch_embeddings, qkv, gate_up): the same tokens"
"$FM" generate "$D/model" --image "$D/image.png" --prompt "What is in this picture?" --max-new-tokens 16 \
  --fuse patch_embeddings --fuse qkv --fuse gate_up
echo "== unfused vision tower run (Conv3d patch embedding)"
"$FM" run "$D/model" --image "$D/image.png" -o "$D/embeds.safetensors" 2>&1 | tee "$D/unfused.log"
echo "== fused run (--fuse patch_embeddings: the Conv3d becomes one GEMM)"
"$FM" run "$D/model" --image "$D/image.png" -o "$D/embeds-fused.safetensors" --fuse patch_embeddings 2>&1 | tee "$D/fused.log"
u=$(sed -n 's/.*forward \([0-9.]*\) s.*/\1/p' "$D/unfused.log")
f=$(sed -n 's/.*forward \([0-9.]*\) s.*/\1/p' "$D/fused.log")
echo "== whole tower forward: unfused ${u} s, fused ${f} s (the patch embedding is a small part of the tower)"
echo "== the patch embedding alone, 1024 patches (448x448), Conv3d vs fused GEMM:"
"$BUILD/bench/fusion" --sizes 1024 --reps 3 | sed -n 's/.*"fused_s":\([0-9.]*\),"unfused_s":\([0-9.]*\).*"speedup":\([0-9.]*\).*/   unfused Conv3d \2 s, fused Linear \1 s: \3x faster/p'
echo "== fusemap verify: fused vs unfused outputs and saved weights"
"$FM" verify "$D/model" --fuse patch_embeddings --fuse qkv --fuse gate_up
