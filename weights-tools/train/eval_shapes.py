#!/usr/bin/env python3
"""Prompt-following check of a shapes model (a diffusers folder), as tests/prompt_following.rs
does it in Rust on the converted model:

    /root/venv-ref/bin/python weights-tools/train/eval_shapes.py /tmp/shapes-diffusers [--scheduler ddim] \
        [--guidance 5] [--seeds 2,3]

Text to image: the 48 prompts of shapes.eval_prompts() x seeds 0 and 1, 64x64, the model's
default steps and guidance. The shape's colour is the nearest named colour to the mean of the
central 8x8 pixels, the background's that of the 4-pixel border ring.

Inpainting (4-channel, diffusers' StableDiffusionInpaintPipeline with the plain UNet): each
prompt's seed-0 image gets its central 32x32 square repainted with the prompt naming another
colour (shapes.repaint_colour); the centre must come out in that colour.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import shapes  # noqa: E402

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "dpmpp-2m": "DPMSolverMultistepScheduler",
}


def evaluate(model, threads=2, scheduler=None, steps=None, guidance=None, seeds=(0, 1), verbose=True):
    import diffusers
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    torch.set_num_threads(threads)
    model = Path(model)
    cfg = json.loads((model / "scheduler/scheduler_config.json").read_text())
    defaults = cfg.get("_sd_webgpu_defaults", {})
    steps = steps or defaults.get("steps", 20)
    guidance = guidance if guidance is not None else defaults.get("guidance_scale", 5.0)
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    if scheduler:
        pipe.scheduler = getattr(diffusers, SCHEDULERS[scheduler]).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompts = shapes.eval_prompts()
    t0 = time.time()

    texts, gens, want = [], [], []
    for seed in seeds:
        for p in prompts:
            texts.append(shapes.caption(p[0], p[1], p[2], p[3]))
            gens.append(torch.Generator().manual_seed(seed))
            want.append(p)
    with torch.no_grad():
        images = pipe(texts, num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                      generator=gens, output_type="np").images
    shape_ok = bg_ok = 0
    misses = []
    for img, p, text in zip(images, want, texts):
        c, b = shapes.nearest_colour(shapes.centre_mean(img)), shapes.nearest_colour(shapes.border_mean(img))
        shape_ok += c == p[1]
        bg_ok += b == p[2]
        if c != p[1] or b != p[2]:
            misses.append(f"{text!r}: centre {c}, border {b}")
    n = len(images)

    # Inpainting the centre of each seed-0 image with another colour.
    inpaint = StableDiffusionInpaintPipeline(**pipe.components)
    inpaint.set_progress_bar_config(disable=True)
    first = images[: len(prompts)]
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1
    texts2, new = [], []
    for p in prompts:
        colour = shapes.repaint_colour(p[1], p[2])
        texts2.append(shapes.caption(p[0], colour, p[2], p[3]))
        new.append(colour)
    from PIL import Image
    init = [Image.fromarray(np.round(im * 255).astype(np.uint8)) for im in first]
    m = Image.fromarray((mask * 255).astype(np.uint8))
    with torch.no_grad():
        out = inpaint(texts2, image=init, mask_image=[m] * len(init), num_inference_steps=steps, guidance_scale=guidance,
                      height=64, width=64, generator=[torch.Generator().manual_seed(100 + i) for i in range(len(init))],
                      output_type="np").images
    inpaint_ok = 0
    for img, colour, text in zip(out, new, texts2):
        c = shapes.nearest_colour(shapes.centre_mean(img))
        inpaint_ok += c == colour
        if c != colour:
            misses.append(f"inpaint {text!r}: centre {c}")
    result = {
        "scheduler": type(pipe.scheduler).__name__,
        "steps": steps,
        "guidance": guidance,
        "images": n,
        "shape_colour": shape_ok / n,
        "background_colour": bg_ok / n,
        "inpaint_cases": len(out),
        "inpaint_colour": inpaint_ok / len(out),
        "seconds": round(time.time() - t0, 1),
    }
    if verbose:
        for line in misses:
            print("  miss:", line)
        print(json.dumps(result), flush=True)
    result["grid"] = (images, out)
    return result


def save_grid(images, path, cols=16):
    from PIL import Image
    rows = [np.concatenate(list(images[i : i + cols]) + [np.zeros_like(images[0])] * (cols - len(images[i : i + cols])), 1)
            for i in range(0, len(images), cols)]
    Image.fromarray(np.round(np.concatenate(rows, 0) * 255).astype(np.uint8)).save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--scheduler", choices=sorted(SCHEDULERS))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--guidance", type=float)
    ap.add_argument("--seeds", default="0,1", help="text-to-image seeds (the first one's images are inpainted)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", type=Path, help="write the text-to-image results as one PNG")
    args = ap.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    r = evaluate(args.model, args.threads, args.scheduler, args.steps, args.guidance, seeds=seeds)
    if args.grid:
        images, out = r["grid"]
        save_grid(np.concatenate([images, out]), args.grid)


if __name__ == "__main__":
    main()
