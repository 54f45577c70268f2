// importFile in headless Chromium (the package in www/pkg, its engine in a worker): the tiny
// fixtures given as files, as a visitor picks them, are stored byte for byte as
// `sd-weights convert` writes them (the binary the native tests build), and the imported model
// generates the CLI's image on the CPU engine. A cancelled import leaves nothing stored, and
// an import from files makes no request but to the page's own origin (the built-in configs)
// and none carrying the file. Bad files give the CLI's errors. importUrl converts a file
// served on 127.0.0.1 (another origin, with CORS) by range requests, or by one download where
// the server ignores ranges, byte for byte as the CLI does.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join, relative } from "node:path";
import { launch } from "./chromium.mjs";
import { serve } from "./serve.mjs";
import { fullSizeSd15, writeSafetensors } from "./safetensors.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const FIXTURES = join(ROOT, "tests", "fixtures");
const TARGET = process.env.CARGO_TARGET_DIR ?? join(ROOT, "target");
const work = mkdtempSync(join(tmpdir(), "sd-webgpu-import-"));

let server, browser, page, origin;
const requests = [];

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: "utf8" });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
}

/** `sd-weights convert INPUT OUT ARGS` into `work`; returns OUT's files by path. */
function nativeConvert(input, out, args) {
  run(join(TARGET, "release", "sd-weights"), ["convert", input, join(work, out), "--chunk-mb", "1", ...args]);
  const files = {};
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else files[relative(join(work, out), path)] = readFileSync(path);
    }
  };
  walk(join(work, out));
  return files;
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

before(async () => {
  // sd-weights, as the native tests built it (the same flags: nothing to do after them).
  run("cargo", ["build", "--release", "--locked", "--workspace", "--bins", "-q"]);
  server = await serve({ "/pkg/": join(ROOT, "www", "pkg") });
  origin = `http://127.0.0.1:${server.address().port}`;
  browser = await launch();
  const context = await browser.newContext();
  context.on("request", (r) => requests.push(r));
  page = await context.newPage();
  page.on("console", (m) => m.type() === "error" && console.log(`[page] ${m.text()}`));
  await page.goto(`${origin}/`);
  await page.setContent(
    '<input id="file" type="file"><input id="config" type="file" webkitdirectory><input id="folder" type="file" webkitdirectory>',
  );
  await page.evaluate(async () => {
    const { createGenerator } = await import("/pkg/index.js");
    window.gen = await createGenerator({ worker: true, backend: "cpu" });
    // What an import stored: its manifest's text and every blob's sha256, from IndexedDB.
    window.stored = async (key) => {
      const db = await new Promise((ok, fail) => {
        const r = indexedDB.open("sd-webgpu");
        r.onsuccess = () => ok(r.result);
        r.onerror = () => fail(r.error);
      });
      const get = (store, k) =>
        new Promise((ok) => {
          const r = db.transaction(store).objectStore(store)[k === undefined ? "getAllKeys" : "get"](k);
          r.onsuccess = () => ok(r.result);
        });
      const blobs = await get("blobs");
      const model = key === undefined ? null : await get("models", key);
      const hashes = {};
      for (const sha of model?.shas ?? []) {
        const bytes = await get("blobs", sha);
        hashes[sha] = [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))]
          .map((b) => b.toString(16).padStart(2, "0")).join("");
      }
      db.close();
      return { manifest: model?.manifest ?? null, hashes, blobCount: blobs.length };
    };
    window.importInput = (id, options) => {
      const files = document.getElementById(id).files;
      const config = options.config && document.getElementById(options.config).files;
      return gen.importFile(id === "file" ? files[0] : files, { ...options, config });
    };
  });
});

after(async () => {
  await browser?.close();
  server?.close();
  rmSync(work, { recursive: true, force: true });
});

/** Imports what input `id` holds; returns the key, what was stored, and the requests made. */
async function importFrom(id, options) {
  const start = requests.length;
  const key = await page.evaluate(([id, options]) => importInput(id, options), [id, options]);
  const made = requests.slice(start);
  return { key, ...(await page.evaluate((key) => stored(key), key)), made };
}

/** The import is what `sd-weights convert` wrote: the same manifest text, and every stored
 *  file is the native file its entry names (by sha256). */
function assertSameAsNative(imported, native, what) {
  assert.equal(imported.manifest, native["manifest.json"].toString(), `${what}: the manifest`);
  const manifest = JSON.parse(imported.manifest);
  const entries = [...manifest.files, ...manifest.chunks];
  assert.ok(manifest.chunks.length > 1, `${what}: several chunks`);
  for (const entry of entries) {
    assert.equal(sha256(native[entry.path]), entry.sha256, `${what}: native ${entry.path}`);
    assert.equal(imported.hashes[entry.sha256], entry.sha256, `${what}: stored ${entry.path}`);
  }
}

/** No request but GETs to the page's own origin, none of them for the fixtures. */
function assertOnlyOwnOrigin(made, what) {
  for (const r of made) {
    assert.equal(new URL(r.url()).origin, origin, `${what}: ${r.url()}`);
    assert.equal(r.method(), "GET", `${what}: ${r.method()} ${r.url()}`);
    assert.equal(r.postData(), null, `${what}: a request with a body`);
  }
}

test("a diffusers folder imports at q8 and q4 byte for byte as sd-weights convert writes it, and generates the CLI's image", { timeout: 300_000 }, async () => {
  await page.setInputFiles("#folder", join(FIXTURES, "sd15-tiny"));
  for (const q of ["q8", "q4"]) {
    const native = nativeConvert(join(FIXTURES, "sd15-tiny"), `folder-${q}`, ["--quant", q]);
    const imported = await importFrom("folder", { quantization: q, chunkMb: 1 });
    assert.equal(imported.key, q === "q8" ? "local:sd15-tiny" : "local:sd15-tiny-2", "named after the folder, made unique");
    assertSameAsNative(imported, native, `folder ${q}`);
    // The first import loads the converter's module (sd_webgpu_import) from the package.
    assertOnlyOwnOrigin(imported.made, `folder ${q}`);
    const paths = imported.made.map((r) => new URL(r.url()).pathname);
    assert.deepEqual(paths.filter((p) => !/^\/pkg\/sd_webgpu_import(\.js|_bg\.wasm)$/.test(p)), [], `folder ${q}: ${paths}`);
  }
  // Loaded like a downloaded model: the image the CLI makes of its own conversion
  // (tests/fixtures/make_converted_fixtures.sh), within 1/255.
  const image = await page.evaluate(async () => {
    await gen.load("local:sd15-tiny");
    const img = await gen.generate({ prompt: "a red cube on a table", steps: 3, scheduler: "euler-a", seed: 5, width: 32, height: 32 });
    return { width: img.width, data: Array.from(img.data), parameters: img.parameters };
  });
  const npy = readFileSync(join(FIXTURES, "converted", "sd15-tiny-q8_image.npy"));
  const want = new Float32Array(npy.buffer.slice(npy.byteOffset + 10 + npy.readUInt16LE(8)));
  assert.equal(image.width, 32);
  let worst = 0;
  for (let i = 0; i < 32 * 32; i++) {
    for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(image.data[i * 4 + c] - Math.round(want[i * 3 + c] * 255)));
  }
  assert.ok(worst <= 1, `the imported model's image differs from the CLI's by ${worst}/255`);
  assert.match(image.parameters, /Model: sd15-tiny/);
});

test("single files import with a folder's configs at q8 and q4 byte for byte as sd-weights convert --config writes them", { timeout: 120_000 }, async () => {
  for (const [file, config, q, prediction] of [
    ["sd2-tiny", "sd2-tiny", "q4", "epsilon"],
    ["sd15-inpaint-tiny", "sd15-inpaint-tiny", "q8", undefined],
  ]) {
    const input = join(FIXTURES, "ldm", `${file}.safetensors`);
    const args = ["--quant", q, "--config", join(FIXTURES, config)];
    if (prediction) args.push("--prediction-type", prediction);
    const native = nativeConvert(input, `single-${file}-${q}`, args);
    await page.setInputFiles("#file", input);
    await page.setInputFiles("#config", join(FIXTURES, config));
    const imported = await importFrom("file", { quantization: q, chunkMb: 1, config: "config", predictionType: prediction });
    assert.equal(imported.key, `local:${file}`);
    assertSameAsNative(imported, native, `${file} ${q}`);
    assert.deepEqual(imported.made.map((r) => r.url()), [], `${file}: no request at all`);
  }
});

test("a cancelled import of a full-size SD 1.5 file leaves nothing stored, fetches only the package's configs, and the next import works", { timeout: 120_000 }, async () => {
  const big = join(work, "sd15-full.safetensors");
  fullSizeSd15(big);
  await page.setInputFiles("#file", big);
  const before = await page.evaluate(() => stored());
  const start = requests.length;
  const result = await page.evaluate(async () => {
    const controller = new AbortController();
    const events = [];
    const notes = [];
    let storedMidway = null;
    try {
      await gen.importFile(document.getElementById("file").files[0], {
        quantization: "q4",
        signal: controller.signal,
        onNote: (n) => notes.push(n),
        onProgress: (p) => {
          events.push(p);
          // Past the 76 MB token embedding and more: chunks are stored by then.
          if (p.bytesRead >= 160 << 20 && storedMidway === null) {
            storedMidway = -1;
            stored().then(({ blobCount }) => {
              storedMidway = blobCount;
              controller.abort();
            });
          }
        },
      });
      return { error: null };
    } catch (e) {
      const models = (await gen.call("cachedModels")).map((m) => m.url);
      return { error: { name: e.name, code: e.code }, events, notes, models, storedMidway };
    }
  });
  assert.deepEqual(result.error, { name: "AbortError", code: "cancelled" });
  assert.ok(result.storedMidway > before.blobCount, `chunks were stored during the import (${result.storedMidway} blobs, ${before.blobCount} before)`);
  const last = result.events.at(-1);
  assert.ok(last.totalBytes > 2e9 && last.bytesRead >= 160 << 20 && last.bytesPerSecond > 0 && last.secondsLeft > 0, JSON.stringify(last));
  console.log(`full-size SD 1.5 at q4 in the browser: ${(last.bytesPerSecond / 1e6).toFixed(0)} MB/s, ${last.secondsLeft.toFixed(0)} s left when cancelled`);
  assert.ok(result.notes.some((n) => n.includes("built-in SD 1.5 configs")), result.notes.join("\n"));
  assert.ok(!result.models.some((url) => url.startsWith("local:sd15-full")), `listed: ${result.models}`);
  const after = await page.evaluate(() => stored());
  assert.equal(after.blobCount, before.blobCount, "the chunks stored before the cancel were deleted");
  // The built-in configs came from the package, on this origin; nothing else was fetched.
  const made = requests.slice(start);
  assertOnlyOwnOrigin(made, "full-size import");
  assert.ok(made.every((r) => new URL(r.url()).pathname.startsWith("/pkg/specs/")), made.map((r) => r.url()).join("\n"));
  assert.ok(made.some((r) => r.url().endsWith("/pkg/specs/index.json")));

  // The next import works.
  await page.setInputFiles("#folder", join(FIXTURES, "sd15-tiny"));
  const next = await importFrom("folder", { quantization: "q8", name: "after cancel" });
  assert.equal(next.key, "local:after cancel");
  assert.ok(JSON.parse(next.manifest).chunks.length >= 1);
  // Its key is taken as it is (no URL escaping), offline: nothing is fetched.
  const start2 = requests.length;
  const info = await page.evaluate((key) => gen.load(key), next.key);
  assert.equal(info.family, "sd1");
  assert.deepEqual(requests.slice(start2).map((r) => r.url()), [], "loading an imported model fetches nothing");
});

test("bad files give the CLI's errors, without its flags, and store nothing", { timeout: 60_000 }, async () => {
  const pickle = join(work, "model.ckpt");
  writeFileSync(pickle, "not really a pickle");
  const sdxl = join(work, "sdxl.safetensors");
  writeSafetensors(sdxl, [["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", "F16", [4, 2], 16]]);
  // The tiny SD 2 file with its first used tensor's values set to NaN.
  const raw = readFileSync(join(FIXTURES, "ldm", "sd2-tiny.safetensors"));
  const headerLen = Number(raw.readBigUInt64LE(0));
  const header = JSON.parse(raw.subarray(8, 8 + headerLen).toString());
  const [name, info] = Object.entries(header).find(([n]) => n.startsWith("model.diffusion_model.input_blocks.0.0.weight"));
  const damaged = Buffer.from(raw);
  damaged.fill(0xff, 8 + headerLen + info.data_offsets[0], 8 + headerLen + info.data_offsets[1]);
  const broken = join(work, "broken.safetensors");
  writeFileSync(broken, damaged);
  const before = await page.evaluate(() => stored());
  for (const [path, config, code, pattern] of [
    [pickle, false, "bad-input", /model\.ckpt: refused: pickle files .* can run arbitrary code.*Get the model as \.safetensors instead/],
    [sdxl, false, "bad-weights", /sdxl\.safetensors: this is an SDXL checkpoint; only SD 1\.x and 2\.x are supported/],
    [broken, true, "bad-weights", new RegExp(`broken\\.safetensors: tensor unet/conv_in\\.weight holds NaN or infinite values`)],
  ]) {
    await page.setInputFiles("#file", path);
    if (config) await page.setInputFiles("#config", join(FIXTURES, "sd2-tiny"));
    const error = await page.evaluate((config) => importInput("file", { config: config ? "config" : undefined }).then(() => null, (e) => ({ code: e.code, message: e.message })), config);
    assert.equal(error?.code, code, `${path}: ${error?.message}`);
    assert.match(error.message, pattern);
    assert.doesNotMatch(error.message, / --[a-z]/, "no CLI flags in a browser's message");
  }
  assert.ok(name);
  const after = await page.evaluate(() => stored());
  assert.equal(after.blobCount, before.blobCount, "nothing stored");
});

test("a single file imports by URL at q8 byte for byte as sd-weights convert writes it, by range requests or one download; a cancel or a 404 stores nothing", { timeout: 120_000 }, async () => {
  const file = "sd15-inpaint-tiny";
  const input = join(FIXTURES, "ldm", `${file}.safetensors`);
  const size = readFileSync(input).length;
  const native = nativeConvert(input, `url-${file}-q8`, ["--quant", "q8", "--config", join(FIXTURES, file)]);
  await page.setInputFiles("#config", join(FIXTURES, file));
  const ranged = await serve({ "/files/": join(FIXTURES, "ldm") }, { ranges: true, cors: true });
  const plain = await serve({ "/files/": join(FIXTURES, "ldm") }, { cors: true });
  const urlOf = (server, name) => `http://127.0.0.1:${server.address().port}/files/${name}`;
  const importUrl = (url, options) =>
    page.evaluate(async ([url, options]) => {
      const events = [];
      try {
        const key = await gen.importUrl(url, { ...options, config: document.getElementById("config").files, onProgress: (p) => events.push(p) });
        return { key, events };
      } catch (e) {
        return { error: { code: e.code, message: e.message }, events };
      }
    }, [url, options]);
  try {
    for (const [server, how, name] of [[ranged, "ranges", undefined], [plain, "one download", "by download"]]) {
      const result = await importUrl(urlOf(server, `${file}.safetensors`), { quantization: "q8", chunkMb: 1, name });
      assert.equal(result.error, undefined, `${how}: ${result.error?.message}`);
      // The name defaults to the URL's file name, made unique (the file test stored it already).
      assert.match(result.key, name ? /^local:by download$/ : new RegExp(`^local:${file}(-\\d+)?$`), how);
      assertSameAsNative(await page.evaluate((key) => stored(key), result.key), native, `${file} by ${how}`);
      const last = result.events.at(-1);
      assert.ok(last.bytesRead === last.totalBytes && last.bytesPerSecond > 0 && last.secondsLeft === 0, `${how}: ${JSON.stringify(last)}`);
      const served = server.served.filter((r) => r.path.endsWith(".safetensors"));
      if (server === ranged) {
        // The header, then the converter's ranges: every answer a 206, none the whole file.
        assert.ok(served.length > 3, `${served.length} requests`);
        for (const r of served) {
          assert.equal(r.status, 206, JSON.stringify(r));
          assert.ok(r.range && r.bytes < size, `a request for the whole file: ${JSON.stringify(r)}`);
        }
        const total = served.reduce((n, r) => n + r.bytes, 0);
        console.log(`importUrl by ranges: ${served.length} requests, ${total} bytes served of a ${size}-byte file`);
      } else {
        assert.deepEqual(served.map((r) => [r.status, r.bytes]), [[200, size]], "one download, read once");
      }
    }

    // Cancelled at the first progress event: an AbortError, nothing stored or listed.
    const beforeCancel = await page.evaluate(() => stored());
    const modelsBefore = await page.evaluate(() => gen.call("cachedModels"));
    const cancelled = await page.evaluate(async (url) => {
      const controller = new AbortController();
      try {
        await gen.importUrl(url, { quantization: "q8", chunkMb: 1, config: document.getElementById("config").files, signal: controller.signal, onProgress: () => controller.abort() });
        return null;
      } catch (e) {
        return { name: e.name, code: e.code };
      }
    }, urlOf(ranged, `${file}.safetensors`));
    assert.deepEqual(cancelled, { name: "AbortError", code: "cancelled" });
    assert.equal((await page.evaluate(() => stored())).blobCount, beforeCancel.blobCount, "a cancel stores nothing");
    assert.deepEqual(await page.evaluate(() => gen.call("cachedModels")), modelsBefore, "a cancel lists nothing");

    // A missing file: the URL and the status, and nothing stored.
    const before = await page.evaluate(() => stored());
    const models = await page.evaluate(() => gen.call("cachedModels"));
    const missing = urlOf(ranged, "missing.safetensors");
    const result = await importUrl(missing, { quantization: "q8" });
    assert.equal(result.error?.code, "io", JSON.stringify(result));
    assert.ok(result.error.message.includes(missing) && /HTTP 404/.test(result.error.message), result.error.message);
    assert.equal((await page.evaluate(() => stored())).blobCount, before.blobCount, "nothing stored");
    assert.deepEqual(await page.evaluate(() => gen.call("cachedModels")), models, "nothing listed");
  } finally {
    ranged.close();
    plain.close();
  }
});
