#!/usr/bin/env python3
"""Times one UNet call of an ONNX export (scripts/export-onnx.py) with onnxruntime's CPU
execution provider natively: the other side of `sd-weights bench --backend cpu`.

    scripts/bench-onnxruntime.py UNET.onnx [--threads N] [--runs N] [--json]

Inputs are random, shaped from the model's own inputs (batch 2 with guidance, as exported);
one warm-up call, then the median and min of `runs` calls in milliseconds. `--threads` is
onnxruntime's intra-op thread count (default 1, as our CPU engine in the browser; 0 lets
onnxruntime choose). Needs onnxruntime and numpy (scripts/bench-requirements.txt).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.model.is_file():
        print(f"bench-onnxruntime: {args.model} does not exist", file=sys.stderr)
        return 2
    if args.runs < 1 or args.threads < 0:
        print("bench-onnxruntime: --runs must be ≥ 1 and --threads ≥ 0", file=sys.stderr)
        return 2

    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    started = time.perf_counter()
    session = onnxruntime.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    create_ms = (time.perf_counter() - started) * 1e3
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if i.type == "tensor(int64)":
            feeds[i.name] = np.full(shape, 500, dtype=np.int64)
        else:
            feeds[i.name] = rng.uniform(-1, 1, shape).astype(np.float32)

    def call() -> float:
        t = time.perf_counter()
        session.run(None, feeds)
        return (time.perf_counter() - t) * 1e3

    first = call()
    times = sorted(call() for _ in range(args.runs))
    result = {
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "session_ms": create_ms,
        "ms_first": first,
        "ms_median": statistics.median(times),
        "ms_min": times[0],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: onnxruntime {result['onnxruntime']} CPU, {args.threads} thread(s): "
              f"median {result['ms_median']:.1f} ms, min {result['ms_min']:.1f}, first {first:.1f} "
              f"(session {create_ms:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
