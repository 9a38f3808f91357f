#!/usr/bin/env python3
"""Cross-check of fusemap's Qwen2-VL language model against transformers itself (PyTorch,
eager attention, float32): logits of a prompt with two images, greedy `generate`, the fusion
families, and transformers loading fusemap's saves. Not part of `make test` (needs PyTorch and
transformers 5.x: the device machine). Prints one JSON line per check and exits 1 on a failure.

    python3 scripts/crosscheck/transformers_lm.py --fusemap build/fusemap [--work DIR]

The device has no network: carry build/fusemap and the shared libraries it links
(`ldd build/fusemap`: libjansson, libpcre2-8, libutf8proc, libopenblas, libpng, libjpeg) and
run with LD_LIBRARY_PATH pointing at them when the device lacks them.

Status: written without a device to run it on; the first session with one runs it, fixes what
the real transformers API needs, and records the figures in README.md."""
import argparse, json, os, shutil, subprocess, sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, Qwen2VLForConditionalGeneration

IMG, VSTART, VEND, VOCAB = 290, 291, 292, 300

CONFIG = {
    "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB,
    "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    "image_token_id": IMG, "vision_start_token_id": VSTART, "vision_end_token_id": VEND,
    "video_token_id": 293, "eos_token_id": 299, "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "vision_config": {"depth": 2, "embed_dim": 32, "hidden_size": 64, "hidden_act": "quick_gelu",
                      "mlp_ratio": 2, "num_heads": 4, "in_channels": 3, "patch_size": 14,
                      "spatial_merge_size": 2, "temporal_patch_size": 2},
}
GRIDS = [[1, 4, 6], [1, 6, 4]]  # two images, the second taller than wide


def prompt_ids(g):
    torch.manual_seed(g)
    ids = torch.randint(0, 280, (14,)).tolist()
    out = ids[:5]
    for t, h, w in GRIDS:
        out += [VSTART] + [IMG] * (t * h * w // 4) + [VEND] + ids[5:8]
    return out + ids[8:]


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def fm(args, *cmd):
    r = subprocess.run([args.fusemap, *cmd], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"fusemap {' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fusemap", default="build/fusemap")
    ap.add_argument("--work", default="/tmp/fm-crosscheck-lm")
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    model_dir = os.path.join(args.work, "model")
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(model_dir)
    cfg._attn_implementation = "eager"
    model = Qwen2VLForConditionalGeneration(cfg).float().eval()
    model.save_pretrained(model_dir)  # the checkpoint as transformers writes it

    ids = prompt_ids(1)
    patches = sum(t * h * w for t, h, w in GRIDS)
    pv = torch.randn(patches, 3 * 2 * 14 * 14)
    grid = torch.tensor(GRIDS, dtype=torch.int64)
    px = os.path.join(args.work, "px.safetensors")
    save_file({"pixel_values": pv, "image_grid_thw": grid}, px)
    ids_arg = ",".join(map(str, ids))
    failures = 0

    def report(name, value, limit):
        nonlocal failures
        ok = value <= limit
        failures += not ok
        print(json.dumps({"check": name, "value": value, "limit": limit, "ok": ok}))

    with torch.no_grad():
        want = model(input_ids=torch.tensor([ids]), pixel_values=pv, image_grid_thw=grid).logits[0]
    for fuse in ([], ["--fuse", "qkv", "--fuse", "gate_up", "--fuse", "patch_embeddings"]):
        out = os.path.join(args.work, "logits.safetensors")
        fm(args, "forward", model_dir, "--input-ids", ids_arg, "--pixel-values", px, "-o", out,
           "-q", *fuse)
        got = load_file(out)["logits"]
        report("logits" + (" fused" if fuse else ""), rel_l2(got, want), 1e-5)

    with torch.no_grad():
        gen = model.generate(input_ids=torch.tensor([ids]), pixel_values=pv, image_grid_thw=grid,
                             max_new_tokens=16, do_sample=False)  # stops at eos 299 like fusemap
    want_tokens = gen[0, len(ids):].tolist()
    for fuse in ([], ["--fuse", "qkv", "--fuse", "gate_up"]):
        j = json.loads(fm(args, "generate", model_dir, "--input-ids", ids_arg, "--pixel-values",
                          px, "--max-new-tokens", "16", "--temperature", "0", "--json", "-q",
                          *fuse))
        same = sum(a == b for a, b in zip(j["tokens"], want_tokens))
        report("greedy tokens differing" + (" fused" if fuse else ""),
               max(len(want_tokens), len(j["tokens"])) - same, 0)

    # transformers loads fusemap's saves: original layout (byte-identical) and runtime layout
    for flag, name in ((["--fuse", "qkv", "--fuse", "gate_up"], "original"),
                       (["--fuse", "qkv", "--fuse", "gate_up", "--save-runtime-format"],
                        "runtime")):
        dst = os.path.join(args.work, name)
        fm(args, "convert", model_dir, dst, "-q", *flag)
        try:
            back = Qwen2VLForConditionalGeneration.from_pretrained(
                dst, attn_implementation="eager", fusion_config={}).float().eval()
            with torch.no_grad():
                lg = back(input_ids=torch.tensor([ids]), pixel_values=pv,
                          image_grid_thw=grid).logits[0]
            report(f"transformers loads fusemap's {name} save", rel_l2(lg, want), 1e-5)
        except Exception as e:  # a runtime-layout save transformers cannot read is a finding
            failures += 1
            print(json.dumps({"check": f"transformers loads fusemap's {name} save",
                              "error": str(e)[:300], "ok": False}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
