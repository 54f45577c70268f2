#!/usr/bin/env python3
"""Loads a folder written by `sd-weights synth` with diffusers / transformers and reports any
missing, unexpected or mismatched weights.

    sd-weights synth --family sd15 /tmp/sd15 && /root/venv-ref/bin/python weights-tools/synth/check_synth.py /tmp/sd15

Recorded results (diffusers 0.42.1, transformers 5.24.0), no problems in either:
  sd15: text_encoder 123060480 params, unet 859520964, vae 83653863
  sd21: text_encoder 340387840 params, unet 865910724, vae 83653863
"""
import sys

import torch
from diffusers import UNet2DConditionModel, AutoencoderKL
from transformers import CLIPTextModel
d = sys.argv[1]
for cls, sub in [(CLIPTextModel, "text_encoder"), (UNet2DConditionModel, "unet"), (AutoencoderKL, "vae")]:
    m, info = cls.from_pretrained(d, subfolder=sub, output_loading_info=True, torch_dtype=torch.float16)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    print(sub, "params", sum(p.numel() for p in m.parameters()), "problems:", bad or "none")
