#!/usr/bin/env node
// Times one UNet call of an ONNX export (scripts/export-onnx.py) with ONNX Runtime Web in
// headless Chromium, on its wasm execution provider (one thread, as our CPU engine) and its
// WebGPU one: the other side of scripts/bench-browser.mjs's step times.
//
//   node scripts/bench-ort-web.mjs UNET.onnx [--eps wasm,webgpu] [--runs N] [--json]
//
// ONNX Runtime Web comes from bench/ort-web (`npm ci --prefix bench/ort-web`, pinned there; the
// tests never load it). Inputs are random, shaped from the model's own input metadata (batch 2
// with guidance as exported); the median of `runs` calls after one warm-up is reported.
import { existsSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { launch } from "../tests/browser/chromium.mjs";
import { serve } from "../tests/browser/serve.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const ORT = join(ROOT, "bench", "ort-web", "node_modules", "onnxruntime-web", "dist");

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    eps: { type: "string", default: "wasm,webgpu" },
    runs: { type: "string", default: "5" },
    json: { type: "boolean", default: false },
  },
});

function fail(message) {
  console.error(`bench-ort-web: ${message}`);
  process.exit(2);
}

if (positionals.length !== 1) fail("pass one .onnx file (scripts/export-onnx.py makes one)");
const model = resolve(positionals[0]);
if (!existsSync(model)) fail(`${model} does not exist`);
if (!existsSync(join(ORT, "ort.all.min.mjs"))) fail("ONNX Runtime Web is missing: npm ci --prefix bench/ort-web");
const runs = Number(args.runs);
if (!Number.isInteger(runs) || runs < 1) fail(`--runs ${args.runs}: a whole number ≥ 1`);
const eps = args.eps.split(",");
for (const ep of eps) if (!["wasm", "webgpu"].includes(ep)) fail(`--eps: ${ep} is not wasm or webgpu`);

const server = await serve({ "/ort/": ORT, "/model/": dirname(model) });
const browser = await launch();
const results = [];
try {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  for (const ep of eps) {
    const r = await page.evaluate(
      async ({ ep, runs, file }) => {
        const ort = await import("/ort/ort.all.min.mjs");
        ort.env.wasm.wasmPaths = "/ort/";
        ort.env.wasm.numThreads = 1;
        const started = performance.now();
        const session = await ort.InferenceSession.create(`/model/${file}`, { executionProviders: [ep] });
        const createMs = performance.now() - started;
        const feeds = {};
        for (const [i, name] of session.inputNames.entries()) {
          const meta = session.inputMetadata[i];
          const shape = meta.shape.map((d) => (typeof d === "number" ? d : 1));
          const n = shape.reduce((a, b) => a * b, 1);
          feeds[name] =
            meta.type === "int64"
              ? new ort.Tensor("int64", BigInt64Array.from({ length: n }, () => 500n), shape)
              : new ort.Tensor("float32", Float32Array.from({ length: n }, () => Math.random() * 2 - 1), shape);
        }
        const time = async () => {
          const t = performance.now();
          const out = await session.run(feeds);
          await out[session.outputNames[0]].getData(); // on WebGPU: wait for the GPU
          return performance.now() - t;
        };
        const first = await time();
        const times = [];
        for (let i = 0; i < runs; i++) times.push(await time());
        times.sort((a, b) => a - b);
        await session.release();
        return { createMs, first, median: times[Math.floor((times.length - 1) / 2)], min: times[0] };
      },
      { ep, runs, file: basename(model) },
    );
    results.push({ ep, chromium: browser.version(), ...r });
  }
} finally {
  await browser.close();
  server.close();
}

if (args.json) {
  console.log(JSON.stringify(results, null, 2));
} else {
  console.log(`${model}: ONNX Runtime Web in Chromium ${results[0]?.chromium}, one UNet call, median of ${runs} after a warm-up`);
  console.log("EP       session ms  first ms  median ms    min ms");
  for (const r of results) {
    const ms = (v) => v.toFixed(1).padStart(9);
    console.log(`${r.ep.padEnd(8)} ${ms(r.createMs)} ${ms(r.first)} ${ms(r.median)} ${ms(r.min)}`);
  }
}
