// The wasm heap while a full-size model streams in, measured in the browser itself: SD 1.5
// with random weights (`sd-weights synth`), converted at q8 (1.1 GB in 32 MiB chunks), served
// on 127.0.0.1 and loaded by `Generator.load` in headless Chromium (WebGPU on SwiftShader):
// downloaded, checked, stored in IndexedDB and uploaded to the GPU. A wasm memory never
// shrinks, so its size after the load is the peak. Budget: 256 MiB.
//
// A few minutes: synth + convert on the CPU, then the load; ~4 GB of temporary disk.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { launch } from "./chromium.mjs";
import { serve } from "./serve.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const HEAP_BUDGET = 256 * 2 ** 20;
// What this load takes today (142.1 MiB measured, 2026-11) plus a margin for the allocator:
// a regression shows long before the budget is reached.
const HEAP_BOUND = 160 * 2 ** 20;

const work = mkdtempSync(join(tmpdir(), "sd-webgpu-heap-"));
after(() => rmSync(work, { recursive: true, force: true }));

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"] });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} failed`);
}

test("streaming SD 1.5 q8 in the browser keeps the wasm heap near its measured 142 MiB (budget 256 MiB)", { timeout: 30 * 60_000 }, async () => {
  run("cargo", ["build", "--release", "--locked", "-q", "-p", "weights-tools", "--bin", "sd-weights"]);
  const sdWeights = join(ROOT, "target", "release", "sd-weights");
  const synth = join(work, "sd15");
  const q8 = join(work, "q8");
  run(sdWeights, ["synth", "--family", "sd15", synth]);
  run(sdWeights, ["convert", synth, q8, "--quant", "q8"]);
  rmSync(synth, { recursive: true, force: true });

  const server = await serve({ "/pkg/": join(ROOT, "www", "pkg"), "/model/": q8 });
  const browser = await launch();
  try {
    const page = await browser.newPage();
    page.on("console", (m) => console.log(`[page] ${m.text()}`));
    const origin = `http://127.0.0.1:${server.address().port}`;
    await page.goto(`${origin}/`);
    const r = await page.evaluate(async (url) => {
      const { default: init, Generator } = await import("/pkg/sd_webgpu.js");
      const wasm = await init();
      const start = wasm.memory.buffer.byteLength;
      // WebGPU: the path that streams weights onto the GPU (the CPU engine keeps them in wasm).
      const gen = await Generator.create({ backend: "webgpu" });
      let peakDuring = start;
      const t = performance.now();
      await gen.load(url, {
        onProgress: () => {
          peakDuring = Math.max(peakDuring, wasm.memory.buffer.byteLength);
        },
      });
      const seconds = (performance.now() - t) / 1000;
      const end = wasm.memory.buffer.byteLength;
      await Generator.deleteCachedModel(url);
      return { start, end, peakDuring, seconds, loaded: gen.loaded };
    }, `${origin}/model`);
    const mib = (b) => (b / 2 ** 20).toFixed(1);
    console.log(
      `SD 1.5 q8 loaded in the browser in ${r.seconds.toFixed(0)} s: wasm memory ${mib(r.start)} MiB at start, ` +
        `${mib(r.end)} MiB after the load (the peak)`,
    );
    assert.ok(r.loaded, "the model did not load");
    assert.ok(r.end >= r.peakDuring, "a wasm memory never shrinks");
    assert.ok(r.end < HEAP_BUDGET, `the wasm heap grew to ${mib(r.end)} MiB, over the ${mib(HEAP_BUDGET)} MiB budget`);
    assert.ok(r.end < HEAP_BOUND, `the wasm heap grew to ${mib(r.end)} MiB (measured 142 MiB before; bound ${mib(HEAP_BOUND)} MiB)`);
  } finally {
    await browser.close();
    server.close();
  }
});
