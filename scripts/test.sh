#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every test tier.
#   a) native, burn's CPU backend      b) native, burn-wgpu on Vulkan (lavapipe without a GPU)
#   c) in headless Chromium on WebGPU: Rust tests through wasm-bindgen-test, then the page
# At the end it prints each step's wall time, and warns when the whole run took over an hour
# (CI stops a run at 90 minutes; machines of our kind differ by 3x in speed).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Quiets Mesa's probing of display servers that a headless machine does not have.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"

BUDGET_S=3600
run_start=$SECONDS
names=() secs=()
current="" step_start=$SECONDS

# Closes the running step (if any) and opens the next one.
step() {
  if [ -n "$current" ]; then names+=("$current"); secs+=($((SECONDS - step_start))); fi
  current="$1" step_start=$SECONDS
  [ -n "$current" ] && printf '\n\033[1m== %s\033[0m\n' "$current"
  return 0
}

# Ends a background job and everything it started.
kill_tree() {
  local child
  for child in $(pgrep -P "$1"); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}

report() {
  local status=$? total=$((SECONDS - run_start)) i
  # A failed run leaves no build behind it.
  [ -n "${wasm_build:-}" ] && kill_tree "$wasm_build"
  if [ -n "$current" ]; then
    [ "$status" = 0 ] || current="$current (failed, exit $status)"
    names+=("$current"); secs+=($((SECONDS - step_start)))
  fi
  printf '\n\033[1m== wall time per step\033[0m\n'
  for i in "${!names[@]}"; do printf '%6d s  %s\n' "${secs[$i]}" "${names[$i]}"; done
  printf '%6d s  total (%d min %d s)\n' "$total" $((total / 60)) $((total % 60))
  if [ "$total" -gt "$BUDGET_S" ]; then
    local slowest
    slowest=$(for i in "${!names[@]}"; do printf '%d s  %s\n' "${secs[$i]}" "${names[$i]}"; done | sort -rn | head -3)
    printf '\n\033[1;31mWARNING: the test run took %d min, over the %d min budget (CI stops at 90).\033[0m\n' \
      $((total / 60)) $((BUDGET_S / 60))
    printf 'Slowest steps:\n%s\nMake them faster before CI rejects work on a slower machine.\n' "$slowest"
  fi
}
trap report EXIT

step "setup: packages and pinned tools"
scripts/setup.sh --test

# One build of the native test binaries serves tiers a and b: the same flags everywhere
# (--workspace), since `-p` alone changes feature unification and rebuilds burn.
# sd-webgpu is built with overflow checks (Cargo.toml), as cargo-fuzz builds it, so the
# seeded mutations of format::fuzzing catch arithmetic that would wrap.
native=(cargo test --release --locked --workspace)
step "build: native test binaries"
# The browser tests' wasm builds beside everything else, at low priority, in its own target
# directory (target/wasm, see build-wasm.py); it takes the cores the native build and tests
# leave idle, and is waited for before tier c. The page's package then reuses every
# dependency it compiled, and its wasm-opt runs beside the browser tests.
wasm_log=target/build-wasm.log
mkdir -p target
nice -n 15 python3 scripts/build-wasm.py --tests --no-run >"$wasm_log" 2>&1 &
wasm_build=$!
"${native[@]}" --no-run

step "tier a: native, CPU backend"
"${native[@]}" -- --skip ::wgpu

step "tier b: native, burn-wgpu on Vulkan"
"${native[@]}" -- ::wgpu

# Waits for the background build; on failure prints its log and stops the run.
wait_build() {
  local status=0
  wait "$wasm_build" || status=$?
  wasm_build=""
  if [ "$status" != 0 ]; then
    cat "$wasm_log"
    echo "the wasm build failed (log above: $wasm_log)"
    exit 1
  fi
  grep '^\[build-wasm\]' "$wasm_log"
}

step "build: the browser tests' wasm (waiting for the rest of it)"
wait_build
nice -n 15 python3 scripts/build-wasm.py >>"$wasm_log" 2>&1 &
wasm_build=$!

step "tier c: headless Chromium, WebGPU and the CPU engine (wasm-bindgen-test)"
# The tests run in a dedicated worker (as the page's engine does), so a long GPU step never
# blocks the renderer's main thread past ChromeDriver's fixed 30 s.
python3 scripts/build-wasm.py --tests

step "build: the page's package (waiting for the rest of it)"
wait_build

step "tier c: headless Chromium, the page served by the run command"
node --test --test-reporter=spec tests/browser/

step ""
