#!/usr/bin/env bash
# Side by side, in one run on one machine: one UNet call with guidance (batch 2) of our
# engines and of ONNX Runtime on the same UNet, exported to ONNX. Figures for
# docs/benchmarks.md; not a test (timings on a shared machine are compared within a run).
#
#   scripts/bench.sh [--models shapes,quarter] [--runs N] [--gpu]
#
#   shapes   the built-in model (www/models/shapes; its f32 checkpoint in
#            tests/fixtures/shapes/model for ONNX) at 64×64
#   quarter  SD 1.5 with a quarter-width UNet (`sd-weights synth --family sd15-quarter`,
#            57.4 M UNet parameters, converted at f32) at 256×256
#
# Ours: `sd-weights bench` natively (cpu, and wgpu on whatever Vulkan driver there is) and
# scripts/bench-browser.mjs in headless Chromium (the CPU engine, and WebGPU). Theirs:
# onnxruntime's CPU provider natively (scripts/bench-onnxruntime.py, 1 thread and all cores)
# and ONNX Runtime Web in the same Chromium (scripts/bench-ort-web.mjs: wasm on 1 thread, as
# our CPU engine, and WebGPU). The quarter model's GPU rows (lavapipe, SwiftShader: minutes a
# call on a machine without a GPU) run only with --gpu.
#
# Needs: scripts/setup.sh --test; `npm ci --prefix bench/ort-web` (ONNX Runtime Web);
# PYTHON (default python3) with scripts/bench-requirements.txt. Models and exports are made
# once in target/bench and kept; results go to target/bench/results.jsonl
# (one JSON object per line and measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
PYTHON=${PYTHON:-python3}

models=shapes,quarter runs=3 gpu=0
while [ $# -gt 0 ]; do
  case $1 in
    --models) models=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --gpu) gpu=1; shift ;;
    *) echo "bench.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

"$PYTHON" -c "import torch, diffusers, onnx, onnxruntime" 2>/dev/null || {
  echo "bench.sh: $PYTHON lacks torch, diffusers, onnx or onnxruntime: see scripts/bench-requirements.txt" >&2
  exit 2
}
[ -f bench/ort-web/node_modules/onnxruntime-web/package.json ] || {
  echo "bench.sh: ONNX Runtime Web is missing: npm ci --prefix bench/ort-web" >&2
  exit 2
}

say "building sd-weights and the page's package"
cargo build --release --locked --workspace --bins
python3 scripts/build-wasm.py
sdw=target/release/sd-weights
work=target/bench
mkdir -p "$work"
results="$work/results.jsonl"
: >"$results"

# record MODEL ENGINE JSON: one line of results (the JSON compacted onto it).
record() {
  local result
  result=$(printf '%s' "$3" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))')
  printf '{"model":"%s","engine":"%s","result":%s}\n' "$1" "$2" "$result" >>"$results"
}

for model in ${models//,/ }; do
  case $model in
    shapes) diffusers=tests/fixtures/shapes/model converted=www/models/shapes size=64 gpu_rows=1 ;;
    quarter)
      diffusers=$work/sd15-quarter converted=$work/sd15-quarter-f32 size=256 gpu_rows=$gpu
      [ -d "$diffusers" ] || "$sdw" synth --family sd15-quarter "$diffusers"
      [ -d "$converted" ] || "$sdw" convert "$diffusers" "$converted" --quant f32 ;;
    *) echo "bench.sh: unknown model $model (shapes or quarter)" >&2; exit 2 ;;
  esac
  onnx=$work/$model-unet-$size.onnx
  [ -f "$onnx" ] || "$PYTHON" scripts/export-onnx.py "$diffusers" "$onnx" --width "$size" --height "$size"

  backends=cpu browser=cpu ort_eps=wasm
  if [ "$gpu_rows" = 1 ]; then backends="cpu wgpu" browser=cpu,webgpu ort_eps=wasm,webgpu; fi
  for backend in $backends; do
    say "$model: ours natively, $backend"
    record "$model" "ours native $backend" "$("$sdw" bench --model "$converted" --width "$size" --height "$size" \
      --guidance 7.5 --steps "$runs" --backend "$backend" --json)"
  done
  for threads in 1 0; do
    say "$model: onnxruntime natively, ${threads/#0/all} thread(s)"
    record "$model" "onnxruntime native cpu, threads ${threads/#0/all}" \
      "$("$PYTHON" scripts/bench-onnxruntime.py "$onnx" --threads "$threads" --runs "$runs" --json)"
  done
  say "$model: ours in Chromium ($browser)"
  record "$model" "ours chromium" "$(node scripts/bench-browser.mjs --model "$converted" --backends "$browser" \
    --width "$size" --height "$size" --guidance 7.5 --steps 2 --runs 1 --json)"
  say "$model: ONNX Runtime Web in Chromium ($ort_eps)"
  record "$model" "ort-web chromium" "$(node scripts/bench-ort-web.mjs "$onnx" --eps "$ort_eps" --runs "$runs" --json)"
done

# One table: the UNet call's median per engine, and ours over theirs where both ran.
python3 - "$results" <<'EOF'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    model, engine, res = r["model"], r["engine"], r["result"]
    if engine.startswith("ours native"):
        rows[(model, engine)] = res["unet"]["ms_median"]
    elif engine.startswith("onnxruntime"):
        rows[(model, engine)] = res["ms_median"]
    elif engine == "ours chromium":
        for e in res:  # stepMs: the UNet call with guidance and the scheduler's step
            rows[(model, f"ours chromium {e['backend']}")] = e["stepMs"]
    else:
        for e in res:
            rows[(model, f"ort-web chromium {e['ep']}")] = e["median"]
print(f"{'model':8} {'engine':40} {'UNet call ms':>12}")
for (model, engine), ms in rows.items():
    print(f"{model:8} {engine:40} {ms:12.1f}")
pairs = [("ours native cpu", "onnxruntime native cpu, threads 1"),
         ("ours chromium cpu", "ort-web chromium wasm"),
         ("ours chromium webgpu", "ort-web chromium webgpu")]
print()
for model in dict.fromkeys(m for m, _ in rows):
    for ours, theirs in pairs:
        if (model, ours) in rows and (model, theirs) in rows:
            print(f"{model:8} {ours} / {theirs}: {rows[(model, ours)] / rows[(model, theirs)]:.2f}×")
EOF
