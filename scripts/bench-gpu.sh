#!/usr/bin/env bash
# Full-size SD 1.5 on a real GPU, natively, side by side with torch/diffusers on the same GPU:
# the figures behind docs/benchmarks.md's GPU table. Made to fit one 10-minute run on a bare
# GPU machine (no network): synth SD 1.5, convert it (q8 and f32), bench ours at 256² and 512²
# (Vulkan through wgpu), diffusers' UNet and VAE in f32 and f16, one profiled UNet call and VAE
# decode (time per kernel), then one table with ours / torch.
#
#   scripts/bench-gpu.sh [--sizes 256,512] [--quants q8,f32] [--runs N] [--out DIR] [--family sd15] [--torch-device cuda]
#
# --family takes any `sd-weights synth` family (sd15-quarter tries the script out in minutes).
# sd-weights: $SD_WEIGHTS if set (a release build carried to a machine without Rust), else
# built here with cargo. torch and diffusers: $PYTHON (default python3); without them the
# torch rows are skipped. On a machine without network, bring diffusers as wheels
# (scripts/bench-requirements.txt has the version; `pip install --no-index --target DIR` and
# PYTHONPATH=DIR). The Vulkan loader must be installed (Debian: libvulkan1); where only the driver's
# ICD file is there, point VK_DRIVER_FILES at it. Everything goes to DIR (default
# target/bench-gpu): results.jsonl (one JSON object per line and measurement), table.txt,
# profile-*.txt (time per kernel of one UNet call and one VAE decode).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
sizes=256,512 quants=q8,f32 runs=5 out=target/bench-gpu family=sd15 torch_device=cuda
while [ $# -gt 0 ]; do
  case $1 in
    --sizes) sizes=$2; shift 2 ;;
    --quants) quants=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --family) family=$2; shift 2 ;;
    --torch-device) torch_device=$2; shift 2 ;;
    *) echo "bench-gpu.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
say() { printf '\033[1m[bench-gpu %s]\033[0m %s\n' "$(date +%T)" "$*" >&2; }
mkdir -p "$out"
results=$out/results.jsonl
: >"$results"

sdw=${SD_WEIGHTS:-}
if [ -z "$sdw" ]; then
  say "building sd-weights"
  cargo build --release --locked -p weights-tools --bin sd-weights
  sdw=target/release/sd-weights
fi
torch_ok=1
"$PYTHON" -c "import torch, diffusers" 2>/dev/null || torch_ok=0

# record ENGINE JSON: one line of results.
record() { printf '{"engine":"%s","result":%s}\n' "$1" "$2" >>"$results"; }

model=$out/$family
[ -d "$model" ] || { say "synth $family"; "$sdw" synth --family "$family" "$model"; }
for quant in ${quants//,/ }; do
  [ -d "$model-$quant" ] || { say "convert $quant"; "$sdw" convert "$model" "$model-$quant" --quant "$quant"; }
done

for size in ${sizes//,/ }; do
  for quant in ${quants//,/ }; do
    for precision in f32 f16; do
      say "ours, $size², $quant weights, $precision"
      if json=$("$sdw" bench --model "$model-$quant" --width "$size" --height "$size" --guidance 7.5 \
        --steps "$runs" --backend wgpu --precision "$precision" --json 2>"$out/stderr.txt"); then
        record "ours $quant $precision $size" "$json"
      else
        say "failed: $(tail -1 "$out/stderr.txt")"
      fi
    done
  done
  if [ "$torch_ok" = 1 ]; then
    for dtype in f32 f16; do
      say "torch, $size², $dtype"
      if json=$("$PYTHON" scripts/bench-torch.py "$model" --size "$size" --dtype "$dtype" --runs "$runs" \
        --device "$torch_device" --json 2>"$out/stderr.txt"); then
        record "torch $dtype $size" "$json"
      else
        say "failed: $(tail -1 "$out/stderr.txt")"
      fi
    done
  fi
done

# One UNet call and one VAE decode with cubecl's profiler on: every kernel timed on its own
# (the GPU waits for each, so the sum exceeds a plain call; the shares are what it is for).
# profile-PHASE-SIZE-QUANT.txt: milliseconds per kernel over the warm-up and the timed call.
quant=${quants%%,*} size=${sizes##*,}
for phase in unet vae; do
  say "profile: $phase, $size², $quant"
  log=$out/profile-$phase.log
  rm -f "$log"
  CUBECL_DEBUG_OPTION=profile CUBECL_DEBUG_LOG="$log" \
    "$sdw" bench --model "$model-$quant" --width "$size" --height "$size" --guidance 7.5 --steps 1 \
    --backend wgpu --phases "$phase" --json >/dev/null 2>"$out/stderr.txt" || say "failed: $(tail -1 "$out/stderr.txt")"
  [ -f "$log" ] && python3 scripts/profile-summary.py "$log" >"$out/profile-$phase-$size-$quant.txt"
done

python3 - "$results" <<'EOF' | tee "$out/table.txt"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'engine':22} {'UNet call ms':>12} {'TFLOP/s':>8} {'dispatches':>10} {'VAE decode ms':>13}")
torch = {}
for r in rows:
    e, res = r["engine"], r["result"]
    unet, vae = res["unet"], res["vae_decode"]
    tflops = f"{unet['tflops_per_s']:8.2f}" if "tflops_per_s" in unet else " " * 8
    disp = unet.get("dispatches") or ""
    print(f"{e:22} {unet['ms_median']:12.1f} {tflops} {disp:>10} {vae['ms_median']:13.1f}")
    if e.startswith("torch"):
        torch[(e.split()[1], e.split()[2])] = (unet["ms_median"], vae["ms_median"])
adapter = next((r["result"].get("adapter") for r in rows if r["result"].get("adapter")), None)
device = next((r["result"]["device"] for r in rows if "device" in r["result"]), None)
print(f"\nours: {adapter}\ntorch: {device}")
for r in rows:
    e = r["engine"].split()
    if e[0] == "ours" and (e[2], e[3]) in torch:
        t_unet, t_vae = torch[(e[2], e[3])]
        res = r["result"]
        print(f"{r['engine']:22} / torch {e[2]}: UNet {res['unet']['ms_median'] / t_unet:6.2f}×, "
              f"VAE {res['vae_decode']['ms_median'] / t_vae:6.2f}×")
EOF
