#!/usr/bin/env node
// Times generation in headless Chromium through the JS API (`Generator`), on each engine:
// the CPU one (burn's flex in wasm) and WebGPU (on machines without a GPU, SwiftShader).
//
//   node scripts/bench-browser.mjs [--model DIR] [--backends cpu,webgpu] [--runs N]
//                                  [--steps N] [--guidance G] [--width W --height H] [--json]
//
// DIR is a converted model folder (`sd-weights convert`; default: the built-in www/models/shapes);
// the other settings default to the model's own (ModelInfo.defaults). Needs www/pkg
// (scripts/build-wasm.py) and Debian's Chromium (tests/browser/chromium.mjs). For each engine:
// the load, one generation that compiles what it needs (GPU kernels), then `runs` more whose
// median per phase is reported: text encoder, one denoising step (the UNet with guidance and
// the scheduler), VAE decode, the whole generation, and the wasm heap (a wasm memory never
// shrinks: its size at the end is the peak; with the CPU engine it holds the weights and
// every activation). Not part of the tests: timings on shared
// machines are figures to compare within one run, not to assert.
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { launch } from "../tests/browser/chromium.mjs";
import { serve } from "../tests/browser/serve.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

const { values: args } = parseArgs({
  options: {
    model: { type: "string", default: join(ROOT, "www", "models", "shapes") },
    backends: { type: "string", default: "cpu,webgpu" },
    runs: { type: "string", default: "3" },
    steps: { type: "string" },
    guidance: { type: "string" },
    width: { type: "string" },
    height: { type: "string" },
    json: { type: "boolean", default: false },
  },
});

function fail(message) {
  console.error(`bench-browser: ${message}`);
  process.exit(2);
}

const model = resolve(args.model);
if (!existsSync(join(model, "manifest.json"))) fail(`${model} has no manifest.json: pass a converted model folder`);
if (!existsSync(join(ROOT, "www", "pkg", "sd_webgpu.js"))) fail("www/pkg is missing: run python3 scripts/build-wasm.py");
const runs = Number(args.runs);
if (!Number.isInteger(runs) || runs < 1) fail(`--runs ${args.runs}: a whole number ≥ 1`);
const backends = args.backends.split(",");
for (const b of backends) if (!["cpu", "webgpu", "auto"].includes(b)) fail(`--backends: ${b} is not cpu, webgpu or auto`);
const numbers = {};
for (const [key, option] of [["steps", "steps"], ["guidanceScale", "guidance"], ["width", "width"], ["height", "height"]]) {
  if (args[option] === undefined) continue;
  numbers[key] = Number(args[option]);
  if (!Number.isFinite(numbers[key])) fail(`--${option} ${args[option]}: not a number`);
}

const server = await serve({ "/pkg/": join(ROOT, "www", "pkg"), "/model/": model });
const browser = await launch();
const results = [];
try {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  const version = browser.version();
  for (const backend of backends) {
    const r = await page.evaluate(
      async ({ backend, runs, numbers }) => {
        const { default: init, Generator } = await import("/pkg/sd_webgpu.js");
        const wasm = await init();
        const heapStart = wasm.memory.buffer.byteLength;
        const gen = await Generator.create({ backend });
        const started = performance.now();
        await gen.load(`${location.origin}/model/`, {});
        const loadMs = performance.now() - started;
        const heapLoaded = wasm.memory.buffer.byteLength;
        const options = { prompt: "a red circle on a blue background", seed: 1, ...numbers };
        const first = (await gen.generate(options)).timings;
        const timed = [];
        for (let i = 0; i < runs; i++) timed.push((await gen.generate(options)).timings);
        const median = (key) => {
          const v = timed.map((t) => t[key]).sort((a, b) => a - b);
          return v[Math.floor((v.length - 1) / 2)];
        };
        const info = gen.modelInfo;
        const result = {
          engine: gen.backend,
          size: `${numbers.width ?? info.defaults.width}×${numbers.height ?? info.defaults.height}`,
          steps: first.steps,
          guidance: numbers.guidanceScale ?? info.defaults.guidanceScale,
          loadMs,
          first: first.totalMs,
          textMs: median("textMs"),
          stepMs: median("stepMs"),
          vaeMs: median("vaeMs"),
          totalMs: median("totalMs"),
          heapMiB: { start: heapStart / 2 ** 20, loaded: heapLoaded / 2 ** 20, peak: wasm.memory.buffer.byteLength / 2 ** 20 },
        };
        gen.free();
        return result;
      },
      { backend, runs, numbers },
    );
    results.push({ backend, chromium: version, ...r });
  }
} finally {
  await browser.close();
  server.close();
}

if (args.json) {
  console.log(JSON.stringify(results, null, 2));
} else {
  const ms = (v) => v.toFixed(v < 100 ? 1 : 0).padStart(8);
  console.log(`model ${model}, Chromium ${results[0]?.chromium}, median of ${runs} after one that compiles`);
  console.log("engine  adapter                     size    steps  load ms  first ms  text ms  step ms   VAE ms  total ms  heap MiB (loaded, peak)");
  for (const r of results) {
    const adapter = (r.engine.adapter ?? "-").slice(0, 26).padEnd(26);
    console.log(
      `${r.engine.kind.padEnd(7)} ${adapter} ${r.size.padEnd(7)} ${String(r.steps).padStart(5)} ${ms(r.loadMs)} ${ms(r.first)} ` +
        `${ms(r.textMs)} ${ms(r.stepMs)} ${ms(r.vaeMs)} ${ms(r.totalMs)}  ${r.heapMiB.loaded.toFixed(0)}, ${r.heapMiB.peak.toFixed(0)}`,
    );
  }
  const [a, b] = results;
  if (a && b) console.log(`total: ${b.engine.kind} / ${a.engine.kind} = ${(b.totalMs / a.totalMs).toFixed(1)}×`);
}
