#!/usr/bin/env bash
# The README's run command: installs what is missing, builds the browser package into
# www/pkg, and serves www/ on 127.0.0.1 (PORT, default 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
python3 scripts/build-wasm.py
exec python3 scripts/serve.py --port "${PORT:-8080}"
