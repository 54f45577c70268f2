#!/usr/bin/env python3
"""Builds the browser package into www/pkg with the settings in wasm-pack.toml.

wasm-pack compiles and runs wasm-bindgen; wasm-opt then shrinks the module. wasm-opt is slow
(minutes on a 30 MB module), so it is skipped when its input has not changed since the last
build.

    build-wasm.py                   the page's package, www/pkg: also the npm package
                                    `sd-webgpu` (`npm pack www/pkg`), with crate/js's
                                    modules and a package.json made from crate/js's
                                    and the workspace Cargo.toml; two wasm modules, the
                                    engine and the importer (wasm-pack.toml)
    build-wasm.py --tests [ARGS]    `cargo test` for wasm32 (the browser tests, through
                                    wasm-bindgen-test-runner in headless Chromium), ARGS
                                    passed on: e.g. `--no-run`, `--test pipeline`

Both use the same cargo profile and target directory, so the tests reuse every dependency
the package's build compiled (burn's stack for wasm32 is built once, not twice).
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# A cargo target directory of its own (with its own lock): the wasm build can run while the
# native tests build or run.
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "wasm"


def run_tests(build: dict, args: list[str]) -> int:
    """`cargo test` for wasm32 with the package's profile and features; the runner is
    wasm-bindgen-test-runner (.cargo/config.toml), in headless Chromium through ChromeDriver
    (webdriver.json beside crate/Cargo.toml turns WebGPU on)."""
    cmd = ["cargo", "test", "--profile", build["profile"], "--locked",
           "--target", "wasm32-unknown-unknown"]
    if build.get("features"):
        cmd += ["--features", ",".join(build["features"])]
    cmd += args
    env = {
        **os.environ,
        "CARGO_TARGET_DIR": str(TARGET_DIR),
        "CHROMEDRIVER": os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"),
        # Seconds for each test binary's browser run (SwiftShader is slow).
        "WASM_BINDGEN_TEST_TIMEOUT": os.environ.get("WASM_BINDGEN_TEST_TIMEOUT", "1200"),
    }
    print("[build-wasm]", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT / build["crate"], env=env).returncode


def write_specs(out_dir: Path) -> None:
    """The built-in configs and tokenizer a single-file checkpoint converts with, into specs/,
    where importFile fetches them (crate/js/import.js): the repository's own files, as
    weights-tools/synth/single-file-specs.json names them (sd-weights embeds the same ones),
    and that list as specs/index.json."""
    listing = json.loads((ROOT / "weights-tools" / "synth" / "single-file-specs.json").read_text())
    specs = out_dir / "specs"
    shutil.rmtree(specs, ignore_errors=True)
    index = {family: files for family, files in listing.items() if not family.startswith("_")}
    for files in index.values():
        for path in files.values():
            (specs / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, specs / path)
    (specs / "index.json").write_text(json.dumps(index, indent=1) + "\n")


def write_npm_package(out_dir: Path) -> None:
    """Adds the package's own files (those of crate/js/package.json's "files" found in
    crate/js: the rest of crate/js is bound by wasm-bindgen and lands in snippets/), the
    licences and package.json to the wasm-bindgen output."""
    js = ROOT / "crate" / "js"
    package = json.loads((js / "package.json").read_text())
    for name in package["files"]:
        if (js / name).is_file():
            shutil.copy2(js / name, out_dir / name)
    for name in ["LICENSE-MIT", "LICENSE-APACHE"]:
        shutil.copy2(ROOT / name, out_dir / name)
    write_specs(out_dir)
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]
    crate = tomllib.loads((ROOT / "crate" / "Cargo.toml").read_text())["package"]
    package["version"] = cargo["version"]
    package["license"] = cargo["license"]
    package["repository"]["url"] = "git+" + cargo["repository"] + ".git"
    package["description"] = crate["description"]
    missing = [f for f in package["files"] if not f.endswith("/") and not (out_dir / f).exists()]
    if missing:
        raise SystemExit(f"[build-wasm] package.json lists files the build did not make: {missing}")
    (out_dir / "package.json").write_text(json.dumps(package, indent=2) + "\n")


def build_module(build: dict, opt: dict, out_dir: Path, name: str, cargo_args: list[str], out_name: str | None) -> bool:
    """One wasm module of the package: wasm-pack into a staging folder (`name`), its JS and
    snippets into `out_dir`, and its .wasm through wasm-opt (skipped when unchanged)."""
    staging = TARGET_DIR / name
    # wasm-pack adds to its output folder without clearing it: a JS module the crate no longer
    # binds would stay in snippets/ and ship in the package.
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        "wasm-pack", "build", str(ROOT / build["crate"]),
        "--target", build["target"],
        "--profile", build["profile"],
        "--out-dir", str(staging),
        "--mode", "no-install",  # never download tools at build time
        "--no-opt",  # wasm-opt runs below, with our pinned binaryen
        "--no-pack",
    ]
    if out_name:
        cmd += ["--out-name", out_name]
    if cargo_args:
        cmd += ["--", *cargo_args]
    print("[build-wasm]", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "CARGO_TARGET_DIR": str(TARGET_DIR)})

    wasm_name = None
    for item in staging.iterdir():
        if item.suffix == ".wasm":
            wasm_name = item.name
        elif item.is_file() and item.name != ".gitignore":
            shutil.copy2(item, out_dir / item.name)
        elif item.is_dir():
            # snippets/: the crate's own JS modules (e.g. the IndexedDB cache), imported by
            # the generated JS; both modules' go into one folder (main clears it first).
            shutil.copytree(item, out_dir / item.name, dirs_exist_ok=True)
    if wasm_name is None:
        print("[build-wasm] wasm-pack produced no .wasm file", file=sys.stderr)
        return False

    source, dest = staging / wasm_name, out_dir / wasm_name
    stamp = out_dir / (wasm_name + ".source-sha256")
    digest = sha256(source) + " " + " ".join(opt.get("args", [])) + f" enabled={opt.get('enabled', True)}"
    if dest.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        print(f"[build-wasm] {dest.relative_to(ROOT)} is up to date", file=sys.stderr)
        return True
    stamp.unlink(missing_ok=True)
    if opt.get("enabled", True):
        wasm_opt = ROOT / "node_modules" / ".bin" / "wasm-opt"
        if not wasm_opt.exists():
            print("[build-wasm] wasm-opt missing: run scripts/setup.sh", file=sys.stderr)
            return False
        print("[build-wasm] wasm-opt", " ".join(opt["args"]), f"{wasm_name} (takes a few minutes)", file=sys.stderr, flush=True)
        subprocess.run([str(wasm_opt), *opt["args"], str(source), "-o", str(dest)], check=True)
    else:
        shutil.copy2(source, dest)
    stamp.write_text(digest + "\n")
    size = dest.stat().st_size
    print(f"[build-wasm] {dest.relative_to(ROOT)}: {size / 1e6:.1f} MB", file=sys.stderr)
    return True


def main() -> int:
    config = tomllib.loads((ROOT / "wasm-pack.toml").read_text())
    build, opt, importer = config["build"], config["wasm-opt"], config["importer"]
    if sys.argv[1:2] == ["--tests"]:
        return run_tests(build, sys.argv[2:])
    out_dir = ROOT / build["out_dir"]
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / "snippets", ignore_errors=True)
    engine_args = ["--features", ",".join(build["features"])] if build.get("features") else []
    importer_args = ["--no-default-features", "--features", ",".join(importer["features"])]
    if not build_module(build, opt, out_dir, "wasm-pkg", engine_args, None):
        return 1
    if not build_module(build, opt, out_dir, "wasm-pkg-importer", importer_args, importer["out_name"]):
        return 1
    write_npm_package(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
