#!/usr/bin/env python3
"""Trains the built-in "shapes" model: a tiny Stable Diffusion (CLIPTextModel with the real
CLIP tokenizer, UNet2DConditionModel, AutoencoderKL with 8x downsampling) on synthetic
64x64 images of one coloured shape on a plain background (see shapes.py), on the CPU.

    /root/venv-ref/bin/python weights-tools/train/train_shapes.py --out /tmp/shapes-diffusers
    cargo run --release -p weights-tools -- convert /tmp/shapes-diffusers www/models/shapes --quant q8 --chunk-mb 1

Phases: draw the data set; train the VAE (L1 + MSE + a small KL term); encode the data set and
set the VAE's scaling_factor to 1 / std of the latents (as SD's 0.18215 was chosen); train the
text encoder and UNet together on the scaled latents (epsilon prediction, SD's scaled_linear
betas, the caption dropped to "" for 10 % of samples so classifier-free guidance works, EMA
weights kept); save the diffusers folder; evaluate prompt following (eval_shapes.py).

Reproducible: everything is drawn from --seed, torch runs with deterministic algorithms and
a fixed thread count, so the same command gives the same losses (to float rounding across
machines). Needs torch, diffusers, transformers, safetensors, numpy.
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

# Threads that wait passively: with busy-waiting OpenMP threads, a shared machine slows torch down 3-4x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import shapes  # noqa: E402

REPO = HERE.parent.parent
TOKENIZER = REPO / "tests/fixtures/sd15-tiny/tokenizer"

# Sampling defaults recorded with the model (scheduler config's "_sd_webgpu_defaults" and docs/builtin-model.md).
DEFAULT_SCHEDULER = "EulerDiscreteScheduler"
DEFAULT_STEPS = 20
# Guidance 3: of 3, 4, 5, 6 and 7.5 (eval_shapes.py, seeds 0-1 and 2-3) the text-to-image
# figures hardly move, while inpainting falls from ~90 % at 3-4 to 79 % at 7.5: higher
# guidance pushes the repainted centre to a neighbouring colour (orange to yellow, red to orange).
DEFAULT_GUIDANCE = 3.0
DEFAULT_PROMPT = "a red circle on a blue background"

TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=32,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 96),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=8,
)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(16, 32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=8,
    sample_size=64,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    steps_offset=1,
    timestep_spacing="leading",
)
# Written into the saved scheduler_config.json as SD's has them, for the other schedulers
# built from it: above all DDIM must not clip x0 to [-1, 1] (its default), latents exceed it.
SCHEDULER_EXTRA = dict(clip_sample=False, set_alpha_to_one=False, skip_prk_steps=True)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def set_lr(opt, lr):
    for g in opt.param_groups:
        g["lr"] = lr


def tokenize(tokenizer, captions):
    return tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def train_vae(images, args):
    from diffusers import AutoencoderKL

    seed_all(args.seed + 1)
    vae = AutoencoderKL(**VAE_CONFIG).to(args.device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed + 2)
    n = images.shape[0]
    losses = []
    t0 = time.time()
    vae.train()
    for step in range(args.vae_steps):
        set_lr(opt, lr_at(step, args.vae_steps, args.vae_lr, 50))
        idx = torch.randint(0, n, (args.vae_batch,), generator=g)
        x = images[idx]
        if args.vae_crop < shapes.SIZE:
            # Random crops (the VAE is convolutional): 4x cheaper steps at 32x32, same pixels.
            k = args.vae_crop
            oy, ox = torch.randint(0, shapes.SIZE - k + 1, (2,), generator=g).tolist()
            x = x[:, oy : oy + k, ox : ox + k]
        x = x.to(args.device).float().div(127.5).sub(1).permute(0, 3, 1, 2)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(args.device)
        rec = vae.decode(z).sample
        rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        kl = 0.5 * (post.mean.pow(2) + post.var - 1 - post.logvar).mean()
        loss = rec_loss + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(rec_loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.vae_steps:
            log(f"vae step {step + 1}/{args.vae_steps} rec {np.mean(losses[-args.log_every:]):.4f} kl {kl.item():.3f} "
                f"({time.time() - t0:.0f} s)")
    vae.eval()
    return vae, losses


@torch.no_grad()
def encode_all(vae, images, batch=256):
    means, stds = [], []
    dev = next(vae.parameters()).device
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch].to(dev).float().div(127.5).sub(1).permute(0, 3, 1, 2)
        post = vae.encode(x).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means).cpu(), torch.cat(stds).cpu()


def train_unet(lat_mean, lat_std, ids, empty_ids, scaling, args):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    seed_all(args.seed + 3)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG)).to(args.device)
    unet = UNet2DConditionModel(**UNET_CONFIG).to(args.device)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    sched = DDPMScheduler(**SCHEDULER_CONFIG)
    abar = sched.alphas_cumprod.float()
    g = torch.Generator().manual_seed(args.seed + 4)
    n = lat_mean.shape[0]
    losses = []
    t0 = time.time()
    text_encoder.train()
    unet.train()
    for step in range(args.steps):
        set_lr(opt, lr_at(step, args.steps, args.lr, min(200, args.steps // 10)))
        idx = torch.randint(0, n, (args.batch,), generator=g)
        z0 = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=g)) * scaling
        tok = ids[idx].clone()
        drop = torch.rand(args.batch, generator=g) < args.uncond
        tok[drop] = empty_ids
        u = torch.rand(args.batch, generator=g, dtype=torch.float64)
        # t-power k > 1 draws more high-noise timesteps (where colours and layout are decided).
        t = (1000 * (1 - (1 - u) ** args.t_power)).long().clamp(0, 999)
        eps = torch.randn(z0.shape, generator=g)
        a = abar[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        zt, eps, t, tok, a = (v.to(args.device) for v in (zt, eps, t, tok, a))
        cond = text_encoder(tok).last_hidden_state
        pred = unet(zt, t, cond).sample
        per = (pred - eps).pow(2).mean(dim=(1, 2, 3))
        if args.min_snr > 0:
            snr = a.view(-1) / (1 - a.view(-1))
            w = torch.clamp(snr, max=args.min_snr) / snr
            loss = (per * w).mean()
        else:
            loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        losses.append(per.mean().item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            log(f"unet step {step + 1}/{args.steps} loss {np.mean(losses[-args.log_every:]):.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} ({time.time() - t0:.0f} s)")
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    text_encoder.eval().cpu()
    unet.eval().cpu()
    return text_encoder, unet, losses


def save(out, vae, text_encoder, unet, args):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    if out.exists():
        shutil.rmtree(out)
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
    scheduler = EulerDiscreteScheduler(**SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    # The tokenizer exactly as the fixtures hold it (vocab.json + merges.txt, no tokenizer.json).
    shutil.rmtree(out / "tokenizer")
    shutil.copytree(TOKENIZER, out / "tokenizer")
    path = out / "scheduler/scheduler_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(SCHEDULER_EXTRA)
    # Ignored by diffusers (a private "_" key); our UI reads it.
    cfg["_sd_webgpu_defaults"] = {"steps": DEFAULT_STEPS, "guidance_scale": DEFAULT_GUIDANCE, "width": 64, "height": 64,
                                  "prompt": DEFAULT_PROMPT}
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="diffusers folder to write")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=int, default=8192, help="images in the data set")
    ap.add_argument("--vae-steps", type=int, default=1500)
    ap.add_argument("--vae-batch", type=int, default=32)
    ap.add_argument("--vae-lr", type=float, default=2e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-3)
    ap.add_argument("--vae-crop", type=int, default=64,
                    help="train the VAE on random crops of this size (64: whole images; crops of 32 rarely hold the\n                    shape's centre, and such a VAE got a fifth of the shapes' colours wrong)")
    ap.add_argument("--steps", type=int, default=2000, help="text encoder + UNet steps")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--uncond", type=float, default=0.1, help="share of captions dropped to the empty prompt")
    ap.add_argument("--min-snr", type=float, default=5.0, help="min-SNR-gamma loss weighting (0: plain MSE)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--t-power", type=float, default=1.0, help="timestep density: t = 1000 (1 - (1 - u)^k)")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--grid", type=Path, help="write the evaluation's images as one PNG")
    ap.add_argument("--unet-channels", default="32,64,96")
    ap.add_argument("--unet-layers", type=int, default=1)
    ap.add_argument("--vae-channels", default="16,32,64,64")
    ap.add_argument("--text-layers", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu (the reference), or cuda to try settings quickly")
    args = ap.parse_args()

    UNET_CONFIG["block_out_channels"] = tuple(int(c) for c in args.unet_channels.split(","))
    UNET_CONFIG["layers_per_block"] = args.unet_layers
    VAE_CONFIG["block_out_channels"] = tuple(int(c) for c in args.vae_channels.split(","))
    TEXT_CONFIG["num_hidden_layers"] = args.text_layers
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=args.device != "cpu")
    start = time.time()
    log(f"args: {vars(args)}")

    images, captions = shapes.dataset(args.data, args.seed)
    images = torch.from_numpy(np.round(images * 255).astype(np.uint8))
    log(f"data: {len(captions)} images, e.g. {captions[:3]}")

    vae, vae_losses = train_vae(images, args)
    lat_mean, lat_std = encode_all(vae, images)
    g = torch.Generator().manual_seed(args.seed + 5)
    sample = lat_mean + lat_std * torch.randn(lat_mean.shape, generator=g)
    scaling = float(f"{1.0 / sample.std().item():.5g}")
    vae.register_to_config(scaling_factor=scaling)
    log(f"latents: mean {sample.mean():.3f} std {sample.std():.3f} posterior std {lat_std.mean():.4f} -> scaling_factor {scaling}")

    from transformers import CLIPTokenizer
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
    ids = tokenize(tokenizer, captions)
    empty_ids = tokenize(tokenizer, [""])[0]
    text_encoder, unet, losses = train_unet(lat_mean, lat_std, ids, empty_ids, scaling, args)

    save(args.out, vae.cpu(), text_encoder, unet, args)
    train_time = time.time() - start
    tail = [float(f"{np.mean(losses[i:i + 100]):.4f}") for i in range(max(0, len(losses) - 1000), len(losses), 100)]
    summary = {
        "train_seconds": round(train_time),
        "vae_rec_loss_last100": float(np.mean(vae_losses[-100:])),
        "scaling_factor": scaling,
        "unet_loss_last100": float(np.mean(losses[-100:])),
        "unet_loss_tail_per100": tail,
    }
    log(f"saved {args.out} after {train_time:.0f} s; loss tail (mean per 100 steps): {tail}")
    if not args.no_eval:
        import eval_shapes
        result = eval_shapes.evaluate(args.out, threads=args.threads)
        images, repainted = result.pop("grid")
        if args.grid:
            eval_shapes.save_grid(np.concatenate([images, repainted]), args.grid)
        summary["eval"] = result
    (args.out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"summary: {json.dumps(summary)}")
    log(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
