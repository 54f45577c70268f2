#!/usr/bin/env python3
"""Times diffusers' UNet call and VAE decode with torch on the same model and device as
`sd-weights bench`: the other side of scripts/bench-gpu.sh.

    scripts/bench-torch.py MODEL_DIR --size S [--dtype f32|f16] [--runs N] [--device cuda|cpu] [--json]

MODEL_DIR is a diffusers folder (`sd-weights synth`); S is the image side in pixels. The UNet
call is one guided step's: a batch of 2 ([2, 4, S/8, S/8] latents, 77-token context, timestep
500), as our bench runs it; the VAE decode is one image. torch's default attention
(scaled_dot_product_attention: flash or memory-efficient kernels on CUDA) and cuDNN
convolutions; TF32 is off so f32 is f32 (as ours). One warm-up call, then the median and min of
`runs` calls in milliseconds, each timed until the GPU has finished (torch.cuda.synchronize).
Needs torch and diffusers (scripts/bench-requirements.txt).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def timed(fn, runs, sync):
    """Milliseconds of one warm-up and `runs` timed calls of fn."""
    times = []
    for _ in range(runs + 1):
        sync()
        started = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - started) * 1e3)
    first, rest = times[0], times[1:]
    return {"ms_first": first, "ms_median": statistics.median(rest), "ms_min": min(rest)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (args.model / "unet" / "config.json").is_file():
        print(f"bench-torch: {args.model} has no unet/config.json (a diffusers folder?)", file=sys.stderr)
        return 2
    if args.size % 8 or args.size <= 0 or args.runs < 1:
        print("bench-torch: --size must be a positive multiple of 8 and --runs ≥ 1", file=sys.stderr)
        return 2

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtype = torch.float16 if args.dtype == "f16" else torch.float32
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    unet = UNet2DConditionModel.from_pretrained(args.model / "unet", torch_dtype=dtype).to(device).eval()
    vae = AutoencoderKL.from_pretrained(args.model / "vae", torch_dtype=dtype).to(device).eval()
    gen = torch.Generator(device="cpu").manual_seed(0)
    latent = args.size // 8
    sample = torch.randn(2, unet.config.in_channels, latent, latent, generator=gen).to(device, dtype)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen).to(device, dtype)
    timestep = torch.tensor(500, device=device)
    latents = torch.randn(1, vae.config.latent_channels, latent, latent, generator=gen).to(device, dtype)

    with torch.inference_mode():
        result = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "dtype": args.dtype,
            "size": args.size,
            "unet": timed(lambda: unet(sample, timestep, context, return_dict=False), args.runs, sync),
            "vae_decode": timed(lambda: vae.decode(latents, return_dict=False), args.runs, sync),
        }
    if args.json:
        print(json.dumps(result))
    else:
        for phase in ("unet", "vae_decode"):
            r = result[phase]
            print(f"{phase:10} median {r['ms_median']:9.1f} ms  min {r['ms_min']:9.1f} ms  first {r['ms_first']:9.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
