#!/usr/bin/env bash
# Installs what sd-webgpu needs to build, run and test, at pinned versions, and skips what is
# already there. Called by run.sh and test.sh; safe to run again.
#
#   scripts/setup.sh          build tools only (what run.sh needs)
#   scripts/setup.sh --test   also Chromium, ChromeDriver and the Vulkan software driver
set -euo pipefail
cd "$(dirname "$0")/.."

# Must equal the `wasm-bindgen = "=..."` pin in crate/Cargo.toml: the CLI and the library
# have to match exactly.
WASM_BINDGEN_VERSION=0.2.130
WASM_PACK_VERSION=0.15.1

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
export PATH="$HOME/.cargo/bin:$PATH"

# --- Debian packages -------------------------------------------------------------------
apt_pkgs=(python3 nodejs npm)
if [ "${1:-}" = "--test" ]; then
  # chromium + chromedriver: the browser tier. mesa-vulkan-drivers: lavapipe, a Vulkan
  # driver on the CPU, for the native wgpu tier on machines without a GPU.
  apt_pkgs+=(chromium chromium-driver mesa-vulkan-drivers libvulkan1)
fi
missing=()
for p in "${apt_pkgs[@]}"; do
  case $p in
    python3|nodejs|npm) command -v "${p/nodejs/node}" >/dev/null 2>&1 && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Rust ------------------------------------------------------------------------------
command -v cargo >/dev/null || { say "Rust is missing: install it from https://rustup.rs, then run this again"; exit 1; }
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 3 minutes)"
  # Not --locked: its lockfile names a crate version the registry no longer has.
  cargo install -q --force wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
if [ "$(wasm-pack --version 2>/dev/null)" != "wasm-pack $WASM_PACK_VERSION" ]; then
  say "installing wasm-pack $WASM_PACK_VERSION (about 2 minutes)"
  cargo install -q --force --locked wasm-pack --version "$WASM_PACK_VERSION"
fi

# --- npm: wasm-opt (binaryen) and playwright-core, pinned in package-lock.json -----------
if ! npm ls --silent >/dev/null 2>&1; then
  say "installing npm packages (binaryen, playwright-core, vite, typescript)"
  npm ci --silent --no-audit --no-fund
fi
