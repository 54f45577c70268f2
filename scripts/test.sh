#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every test tier.
#   a) native, burn's CPU backend      b) native, burn-wgpu on Vulkan (lavapipe without a GPU)
#   c) in headless Chromium on WebGPU: Rust tests through wasm-bindgen-test, then the page
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
# Quiets Mesa's probing of display servers that a headless machine does not have.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"

tier() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

tier "tier a: native, CPU backend"
cargo test --release --locked --workspace -- --skip ::wgpu
# The parsers of files from strangers again, with overflow checks on as cargo-fuzz builds
# them: the seeded mutations of format::fuzzing then catch arithmetic that would wrap.
cargo test --release --locked -p sd-webgpu --lib --config 'profile.release.package.sd-webgpu.overflow-checks=true' \
  -- format:: safetensors:: json::

tier "tier b: native, burn-wgpu on Vulkan"
cargo test --release --locked -p sd-webgpu -- ::wgpu

tier "tier c: headless Chromium, WebGPU (wasm-bindgen-test)"
# webdriver.json beside crate/Cargo.toml names Debian's Chromium and turns WebGPU on.
# WASM_BINDGEN_TEST_TIMEOUT: seconds for the whole browser run (SwiftShader is slow).
(cd crate && WASM_BINDGEN_TEST_TIMEOUT=1200 \
  wasm-pack test --headless --chrome --chromedriver /usr/bin/chromedriver --release --mode no-install)

tier "tier c: headless Chromium, the page served by the run command"
python3 scripts/build-wasm.py
node --test --test-reporter=spec tests/browser/
