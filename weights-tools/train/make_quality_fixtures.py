"""Fixtures for the quantization quality test (weights-tools/tests/quality.rs).

From the built-in model's f32 diffusers folder (train_shapes.py --out DIR) this writes
tests/fixtures/shapes/:

- model/       the same model with f16 weights, as checkpoints are downloaded: the test
               converts it at f16, q8 and q4 with `sd-weights convert`;
- quality.json the prompts, seeds, steps and guidance;
- NAME_latents.npy, NAME_image.npy: the initial latents (sd-webgpu's seeded noise) and the
               image diffusers makes from them with the f32 weights (H x W x 3 in [0, 1]).

The test compares each converted precision's image with diffusers' f32 image (PSNR):
the weights are trained, so the figure means what it would for a real checkpoint.

    python weights-tools/train/make_quality_fixtures.py --model /tmp/shapes-diffusers
"""

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/shapes"

# sd-webgpu's noise generator, ported in the pipeline fixtures' script.
_spec = importlib.util.spec_from_file_location("pipeline_fixtures", ROOT / "tests/fixtures/make_pipeline_fixtures.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
seeded_noise = _fixtures.seeded_noise

CASES = [
    ("red_circle", "a red circle on a blue background", 1),
    ("yellow_square", "a large yellow square on a black background", 2),
    ("green_triangle", "a small green triangle on a white background", 3),
    ("purple_circle", "a purple circle on an orange background", 4),
]
# The model's own sampler (Euler, deterministic); steps, guidance and size are its recorded
# defaults (`_sd_webgpu_defaults` in its scheduler config).


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True, help="the trained f32 diffusers folder")
    args = ap.parse_args()
    torch.set_num_threads(2)

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None)
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler", pipe.scheduler
    defaults = json.loads((args.model / "scheduler/scheduler_config.json").read_text())["_sd_webgpu_defaults"]
    steps, guidance, size = defaults["steps"], defaults["guidance_scale"], defaults["width"]
    assert defaults["height"] == size
    pipe.set_progress_bar_config(disable=True)

    half = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float16, safety_checker=None)
    half.save_pretrained(OUT / "model", safe_serialization=True)
    shutil.rmtree(OUT / "model/tokenizer")
    shutil.copytree(args.model / "tokenizer", OUT / "model/tokenizer")

    f = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, size // f, size // f)
    for name, prompt, seed in CASES:
        latents = seeded_noise(seed, 0, shape)
        with torch.no_grad():
            image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                         latents=torch.from_numpy(latents), output_type="np").images[0]
        np.save(OUT / f"{name}_latents.npy", latents.astype(np.float32))
        np.save(OUT / f"{name}_image.npy", image.astype(np.float32))
        print(name, prompt, "mean colour", image.reshape(-1, 3).mean(0).round(3))
    meta = {"steps": steps, "guidance": guidance, "scheduler": "euler", "size": size,
            "cases": [{"name": n, "prompt": p, "seed": s} for n, p, s in CASES]}
    (OUT / "quality.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
