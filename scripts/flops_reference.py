#!/usr/bin/env python3
"""Counts the FLOPs of the tiny fixture models with torch's own counter, as the reference for
`sd_webgpu::flops` (whose test, `flops::tests::counts_equal_torch_flop_counter`, reads the
JSON this writes).

torch.utils.flop_counter.FlopCounterMode counts a multiply-add as 2 FLOPs in convolutions
(bias ignored), mm / addmm / bmm / baddbmm, and scaled dot-product attention (q·kᵀ and
scores·v as two batched matmuls); norms, softmax, activations, interpolation and other
pointwise work count 0. We count the same way, so the figures must be equal.

For each model (diffusers folders under tests/fixtures/) and each image size:
- the UNet's call at batch 1 and batch 2 (the classifier-free-guidance batch the pipeline
  makes), with `encoder_hidden_states` of 77 tokens and, for LCM-style UNets
  (`time_cond_proj_dim`), a `timestep_cond` as the pipeline passes one;
- the VAE's decode of one image (`post_quant_conv` and the decoder, as `AutoencoderKL.decode`);
- the text encoder on one 77-token prompt.

Usage (torch, diffusers, transformers; CI never runs it, its output is committed):

    /work/venv-ref/bin/python scripts/flops_reference.py   # writes tests/fixtures/flops_reference.json
"""

import json
import pathlib
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

import diffusers
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "flops_reference.json"

MODELS = ["sd15-tiny", "sd2-tiny", "sd15-inpaint-tiny", "shapes/model"]
# Image sizes in pixels, (height, width): square, and a non-square one whose latent sides
# (16 × 12 at a VAE factor of 8) fit every fixture UNet's downsampling.
SIZES = [(64, 64), (128, 96)]
TOKENS = 77


def count(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {}
    for name in MODELS:
        folder = FIXTURES / name
        unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
        vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
        text = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        cross = unet.config.cross_attention_dim
        cond_dim = unet.config.time_cond_proj_dim

        unet_rows, vae_rows = [], []
        for height, width in SIZES:
            h, w = height // factor, width // factor
            for batch in (1, 2):
                sample = torch.randn(batch, unet.config.in_channels, h, w)
                t = torch.full((batch,), 500.0)
                context = torch.randn(batch, TOKENS, cross)
                cond = torch.randn(batch, cond_dim) if cond_dim else None
                flops = count(lambda: unet(sample, t, context, timestep_cond=cond))
                unet_rows.append({"height": height, "width": width, "batch": batch, "flops": flops})
            z = torch.randn(1, vae.config.latent_channels, h, w)
            vae_rows.append({"height": height, "width": width, "flops": count(lambda: vae.decode(z))})

        ids = torch.randint(0, text.config.vocab_size, (1, TOKENS))
        text_flops = count(lambda: text(ids))
        models[name] = {
            "text_encoder": {"batch": 1, "tokens": TOKENS, "flops": text_flops},
            "unet": unet_rows,
            "vae_decode": vae_rows,
        }
        print(f"{name}: text {text_flops}, unet {[r['flops'] for r in unet_rows]}, "
              f"vae {[r['flops'] for r in vae_rows]}", file=sys.stderr)

    result = {
        "made_by": "scripts/flops_reference.py",
        "counter": "torch.utils.flop_counter.FlopCounterMode (a multiply-add = 2 FLOPs; "
                   "conv, mm, addmm, bmm, baddbmm, scaled dot-product attention; the rest 0)",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__},
        "text_tokens": TOKENS,
        "models": models,
    }
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
