#!/usr/bin/env python3
"""Exports a diffusers UNet to ONNX for the side-by-side benchmarks (ONNX Runtime Web in
Chromium, onnxruntime natively), with the shapes of one guided step: a batch of 2 (the
unconditional and the prompt's latents), as our UNet call runs it.

    scripts/export-onnx.py MODEL_DIR OUT.onnx [--width W --height H]

MODEL_DIR is a diffusers folder with unet/ (e.g. tests/fixtures/shapes/model, the built-in
model's f32 checkpoint); W and H are pixels (default: the UNet's sample_size × 8). Inputs:
`sample` [2, C, H/8, W/8] f32, `timestep` [] int64, `encoder_hidden_states` [2, 77, D] f32;
output `out_sample`. Needs torch, diffusers and onnx (the benchmark's venv, not the tests').
Prints what it wrote and the largest difference between onnxruntime's output and torch's on
random inputs, so a bad export shows before it is timed.
"""
import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    args = parser.parse_args()
    if not (args.model / "unet" / "config.json").is_file():
        print(f"export-onnx: {args.model} has no unet/config.json (a diffusers folder?)", file=sys.stderr)
        return 2

    import numpy as np
    import onnxruntime
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(args.model / "unet", torch_dtype=torch.float32).eval()
    size = unet.config.sample_size * 8
    width, height = args.width or size, args.height or size
    if width % 8 or height % 8:
        print(f"export-onnx: {width}×{height} is not a multiple of 8", file=sys.stderr)
        return 2

    class Call(torch.nn.Module):
        """The UNet as one call with tensor inputs and one output."""

        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    torch.manual_seed(0)
    inputs = (
        torch.randn(2, unet.config.in_channels, height // 8, width // 8),
        torch.tensor(500, dtype=torch.int64),
        torch.randn(2, 77, unet.config.cross_attention_dim),
    )
    names = ["sample", "timestep", "encoder_hidden_states"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        want = Call(unet)(*inputs).numpy()
        torch.onnx.export(Call(unet), inputs, str(args.out), input_names=names,
                          output_names=["out_sample"], opset_version=17, dynamo=False)
    session = onnxruntime.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    params = sum(p.numel() for p in unet.parameters())
    print(f"wrote {args.out}: UNet {params / 1e6:.1f} M parameters, batch 2 at {width}×{height}; "
          f"onnxruntime against torch: max difference {np.abs(got - want).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
