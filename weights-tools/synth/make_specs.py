#!/usr/bin/env python3
"""Writes the architecture specs that `sd-weights synth` uses, straight from diffusers/transformers.

    /root/venv-ref/bin/python weights-tools/synth/make_specs.py

For each family (sd15, sd21, turbo, sd15-inpaint, sd15-quarter) it writes, next to this script,
<family>/ with the diffusers configs (model_index.json, scheduler/scheduler_config.json,
text_encoder/config.json, unet/config.json, vae/config.json) and tensors.txt: one line per
tensor, `component name d0,d1,...`, exactly the state_dict that `save_pretrained` writes
(text encoder names with transformers 4's `text_model.` prefix, as the published checkpoints have them)
(models instantiated on the meta device, so nothing big is allocated). The configs are the
published SD 1.5 / SD 2.1 / SD-Turbo / SD 1.5 inpainting values. CI does not run this script:
its outputs are committed, and `sd-weights synth` embeds them.
"""
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

HERE = Path(__file__).resolve().parent

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", projection_dim=768,
              bos_token_id=0, eos_token_id=2, pad_token_id=1, layer_norm_eps=1e-5)
# SD 2.x's OpenCLIP ViT-H text tower as diffusers ships it: 23 of its 24 layers (the pipeline
# uses the penultimate layer's output).
CLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
              max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=512,
              bos_token_id=0, eos_token_id=2, pad_token_id=1, layer_norm_eps=1e-5)

UNET_SD15 = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=[320, 640, 1280, 1280], attention_head_dim=8, cross_attention_dim=768,
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                 norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0)
UNET_SD21 = dict(UNET_SD15, sample_size=96, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
                 use_linear_projection=True, upcast_attention=True)
UNET_TURBO = dict(UNET_SD21, sample_size=64, upcast_attention=False)
UNET_INPAINT = dict(UNET_SD15, in_channels=9)
# The benchmark's middle size (docs/benchmarks.md): SD 1.5's blocks at a quarter of the width,
# 16 groups per norm (80 channels have no 32 equal groups).
UNET_QUARTER = dict(UNET_SD15, block_out_channels=[80, 160, 320, 320], norm_num_groups=16)

VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
           block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)

# The published scheduler configs, field for field (a missing field and a field set to a
# default differ for from_config): tests/fixtures/single_file_configs/ holds them with their
# sources, and weights-tools/src/convert/tests.rs checks these against them.
SD15_PNDM = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
             "steps_offset": 1, "trained_betas": None}
SD21_DDIM_V = {"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
               "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
               "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
INPAINT_DDIM = {"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
                "steps_offset": 1, "trained_betas": None}
TURBO_EULER = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
               "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
               "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
               "steps_offset": 1, "timestep_spacing": "trailing", "timestep_type": "discrete", "trained_betas": None,
               "use_karras_sigmas": False}

FAMILIES = {
    "sd15": (CLIP_L, UNET_SD15, VAE, SD15_PNDM, "StableDiffusionPipeline"),
    "sd21": (CLIP_H, UNET_SD21, dict(VAE, sample_size=768), SD21_DDIM_V, "StableDiffusionPipeline"),
    "turbo": (CLIP_H, UNET_TURBO, VAE, TURBO_EULER, "StableDiffusionPipeline"),
    "sd15-inpaint": (CLIP_L, UNET_INPAINT, VAE, INPAINT_DDIM, "StableDiffusionInpaintPipeline"),
    "sd15-quarter": (CLIP_L, UNET_QUARTER, VAE, SD15_PNDM, "StableDiffusionPipeline"),
}


def model_index(pipeline: str, scheduler: str) -> dict:
    return {"_class_name": pipeline, "_diffusers_version": "0.42.1", "feature_extractor": [None, None],
            "requires_safety_checker": False, "safety_checker": [None, None],
            "scheduler": ["diffusers", scheduler], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"]}


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def main() -> None:
    for family, (clip, unet, vae, sched, pipeline) in FAMILIES.items():
        out = HERE / family
        lines = []
        with torch.device("meta"):
            te = CLIPTextModel(CLIPTextConfig(**clip))
            un = UNet2DConditionModel(**unet)
            va = AutoencoderKL(**vae)
        te_config = te.config.to_dict()
        te_config["architectures"] = ["CLIPTextModel"]
        for key in ["_name_or_path", "transformers_version", "_attn_implementation_autoset", "output_attentions",
                    "return_dict", "output_hidden_states", "torchscript", "dtype", "torch_dtype"]:
            te_config.pop(key, None)
        te_config["torch_dtype"] = "float16"
        write_json(out / "text_encoder/config.json", te_config)
        for name, model in [("unet", un), ("vae", va)]:
            config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
            config["_class_name"] = type(model).__name__
            config["_diffusers_version"] = "0.42.1"
            write_json(out / f"{name}/config.json", config)
        write_json(out / "scheduler/scheduler_config.json", dict(sched, _diffusers_version="0.42.1"))
        write_json(out / "model_index.json", model_index(pipeline, sched["_class_name"]))
        for component, model in [("text_encoder", te), ("unet", un), ("vae", va)]:
            for name, t in model.state_dict().items():
                if component == "text_encoder" and not name.startswith("text_model."):
                    name = "text_model." + name  # as SD 1.5 / 2.1 (transformers 4) save it
                lines.append(f"{component} {name} {','.join(str(d) for d in t.shape)}")
        (out / "tensors.txt").write_text("\n".join(lines) + "\n")
        counts = {c: sum(1 for l in lines if l.startswith(c + " ")) for c in ["text_encoder", "unet", "vae"]}
        params = sum(eval("*".join(l.split()[2].split(",")) or "1") for l in lines)
        print(family, counts, f"{params / 1e6:.1f} M params")


if __name__ == "__main__":
    main()
