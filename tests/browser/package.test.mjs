// The npm package as a web developer gets it: `npm pack www/pkg` (built by the run command's
// scripts/build-wasm.py), installed from the tarball into scratch copies of examples/plain-html
// (no bundler, an import map) and examples/vite (built with the Vite that scripts/setup.sh
// installs), each served on 127.0.0.1 and generating an image in headless Chromium through
// createGenerator({ worker: true }) with the built-in model. No network: npm installs the
// tarball offline.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { launch } from "./chromium.mjs";
import { serve } from "./serve.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const MODEL = join(ROOT, "www", "models", "shapes");
const work = mkdtempSync(join(tmpdir(), "sd-webgpu-package-"));
after(() => rmSync(work, { recursive: true, force: true }));

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8" });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

// `npm pack`: the tarball and the files in it.
const [packed] = JSON.parse(run("npm", ["pack", join(ROOT, "www", "pkg"), "--json", "--pack-destination", work], ROOT));
const tarball = join(work, packed.filename);

test("npm pack makes sd-webgpu with its modules, types, wasm and licences, and nothing else", () => {
  const manifest = JSON.parse(readFileSync(join(ROOT, "www", "pkg", "package.json"), "utf8"));
  assert.equal(packed.name, "sd-webgpu");
  assert.equal(manifest.type, "module");
  assert.deepEqual(Object.keys(manifest.exports), [".", "./worker", "./png", "./package.json"]);
  for (const key of ["license", "repository", "keywords", "description"]) assert.ok(manifest[key], `package.json has ${key}`);
  const files = packed.files.map((f) => f.path).sort();
  const expected = [...manifest.files.filter((f) => !f.endsWith("/")), "package.json"].sort();
  assert.deepEqual(files.filter((f) => !f.startsWith("snippets/") && !f.startsWith("specs/")), expected);
  // specs/: the built-in configs importFile fetches for a single file, as specs/index.json lists them.
  const specs = JSON.parse(readFileSync(join(ROOT, "www", "pkg", "specs", "index.json"), "utf8"));
  assert.deepEqual(Object.keys(specs).sort(), ["sd15", "sd15-inpaint", "sd21"]);
  const specFiles = new Set(Object.values(specs).flatMap((f) => Object.values(f)).map((f) => `specs/${f}`));
  assert.deepEqual(files.filter((f) => f.startsWith("specs/") && f !== "specs/index.json"), [...specFiles].sort());
  // snippets/: the crate's JS modules that wasm-bindgen binds (crate/js/storage.js), no other.
  const snippets = files.filter((f) => f.startsWith("snippets/"));
  assert.deepEqual(snippets.map((f) => f.split("/").at(-1)), ["storage.js"], `the snippets packed: ${snippets}`);
  // One list of engine functions and of error codes: the types say what the code does.
  const dts = readFileSync(join(ROOT, "www", "pkg", "index.d.ts"), "utf8");
  const union = (name) => [...dts.match(new RegExp(`type ${name} =([^;]*);`))[1].matchAll(/"([^"]+)"/g)].map((m) => m[1]).sort();
  const local = readFileSync(join(ROOT, "www", "pkg", "local.js"), "utf8");
  const listed = [...local.match(/ENGINE_FUNCTIONS = \[([^\]]*)\]/)[1].matchAll(/"([^"]+)"/g)].map((m) => m[1]).sort();
  assert.deepEqual(union("EngineFunction"), listed, "EngineFunction is ENGINE_FUNCTIONS");
  const rust = readFileSync(join(ROOT, "crate", "src", "web", "mod.rs"), "utf8");
  const codes = [...rust.matchAll(/Error::\w+(?:\(_\))? => "([a-z-]+)"/g)].map((m) => m[1]);
  assert.ok(codes.length >= 10, `the Rust error codes were found: ${codes}`);
  assert.deepEqual(union("ErrorCode"), [...codes, "quota", "crashed"].sort(), "ErrorCode is the engine's codes");
  // Nothing test-only: no hooks in the engine's exports (tests reach the GPU device themselves).
  const types = readFileSync(join(ROOT, "www", "pkg", "sd_webgpu.d.ts"), "utf8");
  assert.doesNotMatch(types, /ForTesting|forTesting/);
});

/** Opens `url`, waits for the model, generates, and returns what the example shows. */
async function generateIn(url) {
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(url);
    await page.waitForFunction(() => /^Ready|did not load/.test(document.getElementById("status").textContent), null, { timeout: 120_000 });
    const ready = await page.locator("#status").textContent();
    assert.match(ready, /^Ready: cpu engine/, `the model loaded (page errors: ${errors})`);
    await page.click("#generate");
    await page.waitForFunction(() => /^Done|^Failed/.test(document.getElementById("status").textContent), null, { timeout: 120_000 });
    assert.match(await page.locator("#status").textContent(), /^Done in \d+ ms/);
    return {
      parameters: await page.locator("#parameters").textContent(),
      width: await page.evaluate(() => document.getElementById("image").naturalWidth),
    };
  } finally {
    await browser.close();
  }
}

/** The built-in model's image, as the examples make it: its PNG carries the A1111 text. */
function assertImage({ parameters, width }) {
  assert.equal(width, 64, "the built-in model's 64×64 image is shown");
  assert.match(parameters, /\nSteps: \d+, Sampler: [^,]+, CFG scale: [\d.]+, Seed: 1, Size: 64x64/);
}

test("the plain-HTML example installs the tarball and generates through createGenerator", { timeout: 300_000 }, async () => {
  const dir = join(work, "plain-html");
  cpSync(join(ROOT, "examples", "plain-html"), dir, { recursive: true });
  run("npm", ["install", "--offline", "--no-audit", "--no-fund", tarball], dir);
  cpSync(MODEL, join(dir, "models", "shapes"), { recursive: true });
  const server = await serve({ "/": dir });
  try {
    const origin = `http://127.0.0.1:${server.address().port}`;
    assertImage(await generateIn(`${origin}/index.html`));
    // The same API on the page's own thread (worker: false), then unload.
    const browser = await launch();
    try {
      const page = await browser.newPage();
      await page.goto(`${origin}/index.html?model=hf:no-such-user/no-such-repo@bad/../x`);
      await page.waitForFunction(() => /did not load/.test(document.getElementById("status").textContent));
      assert.match(await page.locator("#status").textContent(), /the folder must be a plain path.*\(bad-input\)/);
      const r = await page.evaluate(async () => {
        const { createGenerator } = await import("sd-webgpu");
        const { readParameters } = await import("sd-webgpu/png");
        const gen = await createGenerator({ model: "models/shapes", backend: "cpu" });
        const image = await gen.generate({ prompt: "a red circle", steps: 2, seed: 7 });
        const text = await readParameters(await image.toBlob({ parameters: true }));
        const without = await readParameters(await image.toBlob());
        await gen.unload();
        const after = await gen.generate({ prompt: "a red circle" }).catch((e) => e.code);
        // In a worker: a generated image goes back in as img2img's image; the model the page
        // loaded from the same relative URL is one stored model, under its absolute URL.
        const worker = await createGenerator({ model: "models/shapes", worker: true });
        const again = await worker.img2img({ prompt: "a blue square", image, steps: 2, seed: 7, strength: 0.6 });
        const stored = (await worker.call("cachedModels")).map((m) => m.url);
        const resolved = await worker.call("resolveModel", "models/shapes");
        // An onStep that throws ends the run with its error, as on the page's thread.
        const thrown = await worker
          .generate({ prompt: "a red circle", steps: 3, onStep: () => { throw new Error("stop here"); } })
          .catch((e) => e.message);
        // unload() while a generation runs: it rejects with an AbortError, nothing hangs.
        const running = worker.generate({ prompt: "a red circle", steps: 20 });
        await worker.unload();
        const unloaded = await running.then(() => "resolved", (e) => `${e.name} ${e.code}`);
        // An aborted load rejects with code "cancelled", and leaves no engine running.
        const aborted = await createGenerator({ model: "models/shapes", worker: true, signal: AbortSignal.abort() })
          .then(() => "resolved", (e) => `${e.name} ${e.code}`);
        const deleted = await gen.call("deleteCachedModel", "models/shapes");
        const left = await gen.call("cachedModels");
        return {
          text, without, loaded: gen.loaded, after, kind: gen.backend.kind, again: again.width, stored, resolved,
          thrown, unloaded, aborted, deleted, left: left.length,
        };
      });
      assert.equal(r.again, 64, "img2img in the worker took the generated image");
      assert.deepEqual(r.stored, [`${origin}/models/shapes`], "one stored model, by its absolute URL");
      assert.deepEqual(r.resolved, { url: `${origin}/models/shapes`, name: "shapes" });
      assert.equal(r.thrown, "stop here");
      assert.equal(r.unloaded, "AbortError cancelled");
      assert.equal(r.aborted, "AbortError cancelled");
      assert.deepEqual([r.deleted, r.left], [true, 0], "a relative URL deletes the model stored under its absolute one");
      assert.match(r.text, /^a red circle\nSteps: 2, .*Seed: 7, Size: 64x64/);
      assert.equal(r.without, null, "toBlob() without parameters writes none");
      assert.deepEqual([r.kind, r.loaded, r.after], ["cpu", false, "bad-input"], "unload drops the model");
    } finally {
      await browser.close();
    }
  } finally {
    server.close();
  }
});

test("the Vite example builds with the tarball installed and generates through createGenerator", { timeout: 300_000 }, async () => {
  const dir = join(work, "vite");
  cpSync(join(ROOT, "examples", "vite"), dir, { recursive: true });
  // The tarball, offline; Vite is the one scripts/setup.sh installed (not downloaded here).
  // Without the example's devDependencies: npm would want Vite's registry metadata even with
  // --omit=dev, which a fresh machine's cache (filled by `npm ci` from a lock) does not hold.
  const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  delete manifest.devDependencies;
  writeFileSync(join(dir, "package.json"), JSON.stringify(manifest, null, 2));
  run("npm", ["install", "--offline", "--no-audit", "--no-fund", tarball], dir);
  cpSync(MODEL, join(dir, "public", "models", "shapes"), { recursive: true });
  run(process.execPath, [join(ROOT, "node_modules", "vite", "bin", "vite.js"), "build", "--logLevel", "warn"], dir);
  typeCheck(dir);
  const server = await serve({ "/": join(dir, "dist") });
  try {
    assertImage(await generateIn(`http://127.0.0.1:${server.address().port}/index.html`));
  } finally {
    server.close();
  }
});

/** The package's .d.ts files, as a TypeScript user compiles against them (strict): the calls of
 *  the README's example type-check, and a wrong scheduler name does not. */
function typeCheck(dir) {
  writeFileSync(
    join(dir, "check.ts"),
    `import { createGenerator, type Image, type ModelInfo, type SdGenerator } from "sd-webgpu";
import { readParameters } from "sd-webgpu/png";
const gen: SdGenerator = await createGenerator({ model: "hf:user/repo", worker: true, backend: "auto", onProgress: (p) => p.loaded });
const info: ModelInfo | null = gen.modelInfo;
const image: Image = await gen.generate({ prompt: "a fox", steps: 2, seed: 1, scheduler: "euler-a" });
const text: string | null = await readParameters(await image.toBlob({ parameters: true }));
// @ts-expect-error: not a scheduler
await gen.generate({ prompt: "a fox", scheduler: "euler-b" });
await gen.unload();
export { info, text };
`,
  );
  const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  run(process.execPath, [tsc, "--noEmit", "--strict", "--target", "esnext", "--module", "esnext", "--moduleResolution", "bundler",
    "--lib", "esnext,dom", "--skipLibCheck", "false", "check.ts"], dir);
}
