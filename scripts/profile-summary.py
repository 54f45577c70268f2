#!/usr/bin/env python3
"""Sums cubecl's profile log by kernel: where a GPU phase's time goes.

    CUBECL_DEBUG_OPTION=profile CUBECL_DEBUG_LOG=LOG sd-weights bench ... --phases unet
    scripts/profile-summary.py LOG [--top N]

cubecl writes one line per launch, `| 1.234ms    | kernel name`, the GPU waiting for each
(so the sum exceeds an unprofiled run; the shares are what this is for). Prints the total,
then the N kernels that took longest: milliseconds, share, launches, name.
"""
import argparse
import collections
import re
import sys

UNIT_MS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
LINE = re.compile(r"\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*(.+)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    total, count = collections.Counter(), collections.Counter()
    with open(args.log, errors="replace") as f:
        for line in f:
            m = LINE.match(line.strip())
            if m:
                name = m.group(3).strip()
                total[name] += float(m.group(1)) * UNIT_MS[m.group(2)]
                count[name] += 1
    if not total:
        print(f"profile-summary: no timed launches in {args.log}", file=sys.stderr)
        return 1
    all_ms = sum(total.values())
    print(f"{all_ms:.1f} ms in {sum(count.values())} launches")
    for name, ms in total.most_common(args.top):
        short = name if len(name) <= 140 else f"{name[:50]} … {name[-80:]}"
        print(f"{ms:10.2f} ms {100 * ms / all_ms:5.1f} % {count[name]:6} × {short}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
