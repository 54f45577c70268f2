// The page: model loading, text to image, image to image and inpainting, the gallery.
// All the model's work runs in the npm package's worker (createGenerator({ worker: true }),
// from www/pkg, which scripts/build-wasm.py builds), so the page stays responsive.
import { createGenerator } from "./pkg/index.js";
import { encodePng } from "./pkg/png.js";
import { MaskEditor, coverImage } from "./mask.js";

const $ = (id) => document.getElementById(id);
const DEFAULT_MODEL = "models/shapes";
const MAX_TOKENS = 75;

// ---- small helpers -------------------------------------------------------------------

function mb(bytes) {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

function duration(seconds) {
  if (!Number.isFinite(seconds)) return "…";
  if (seconds < 1) return "<1 s";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m} min ${Math.round(seconds % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Absolute model URL without a trailing slash: the key the engine stores models under. */
function modelKey(url) {
  return new URL(url.trim().replace(/\/+$/, "") + "/", location.href).href.replace(/\/+$/, "");
}

/** A model URL as shown to people: relative to this page when it is on this site. */
function modelLabel(key) {
  const here = new URL(".", location.href).href;
  return key.startsWith(here) ? key.slice(here.length) : key;
}

function modelName(key) {
  return key.split("/").filter(Boolean).pop() ?? key;
}

function setState(name, value) {
  document.body.dataset[name] = value;
}

// ---- alerts (blocking problems, with what to do) ---------------------------------------

function showAlert(text, actions = []) {
  $("alert-text").textContent = text;
  const box = $("alert-actions");
  box.replaceChildren(
    ...actions.map(({ label, run }) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.addEventListener("click", run);
      return b;
    }),
  );
  $("alert").hidden = false;
}

function hideAlert() {
  $("alert").hidden = true;
}

const NO_WEBGPU_ADVICE =
  "Use a browser with WebGPU: Chrome or Edge 113 or newer, Safari 26 or newer, or Firefox 141 or newer " +
  "on Windows. On Linux, start Chrome with --enable-unsafe-webgpu. If WebGPU is there but the GPU is " +
  "blocked, chrome://gpu says why; updating the graphics driver usually helps.";

function webgpuMissing(detail) {
  if (!window.isSecureContext) {
    return "WebGPU needs a secure page: open this site over https:// (or on localhost).";
  }
  return `WebGPU is not available in this browser${detail ? ` (${detail})` : ""}. ${NO_WEBGPU_ADVICE}`;
}

// ---- the engine ------------------------------------------------------------------------

let engine = null; // the package's generator, on the engine chosen in "Your GPU"
window.sdWebgpu = { get engine() { return engine; } }; // for the console (and the tests)

function engineCrashed(error) {
  model.loaded = false;
  setState("model", "none");
  updateButtons();
  showAlert(
    `The engine stopped (${error.message}). This happens when the GPU is reset ("device lost"), ` +
      "for example after a driver update, when another program needs the GPU, or when it runs out of memory. " +
      "Load the model again to go on; a smaller size or fewer images at once uses less GPU memory.",
    [{ label: "Load the model again", run: () => { hideAlert(); loadModel(); } }],
  );
  $("model-status").textContent = "The engine restarted: load the model again.";
}

// ---- engine and GPU panel -------------------------------------------------------------

const gpuStatus = $("status");
const BACKEND_KEY = "sd-webgpu:backend"; // the engine chosen in "Your GPU", remembered here
let engineKind = null; // "webgpu" or "cpu" once the engine started

function backendChoice() {
  return localStorage.getItem(BACKEND_KEY) ?? "auto";
}

/**
 * Starts the engine on the remembered choice (Generator.create's `backend`: "auto" takes
 * WebGPU on a hardware GPU, the CPU engine without WebGPU or on a software adapter) and shows
 * what it chose. Resolves to whether it started.
 */
async function startEngine() {
  const choice = backendChoice();
  $("backend").value = choice;
  gpuStatus.textContent = "Starting the engine…";
  delete gpuStatus.dataset.state;
  try {
    await engine?.unload(); // the engine chosen before, and its model's GPU memory
    engine = null;
    engine = await createGenerator({ worker: true, backend: choice, onCrash: engineCrashed });
    const { kind, adapter, reason } = engine.backend;
    engineKind = kind;
    const why = reason === "asked for" ? "chosen below" : reason;
    gpuStatus.textContent =
      kind === "webgpu" ? `WebGPU on ${adapter} (${why}).` : `CPU engine, WebAssembly (${why}).`;
    gpuStatus.dataset.state = "ready";
    // The engine's scheduler list; a failure shows when the engine is asked next.
    await fillSchedulers().catch((e) => console.warn("no scheduler list:", e.message));
    return true;
  } catch (e) {
    engineKind = null;
    gpuStatus.textContent = `The engine did not start: ${e.message}`;
    gpuStatus.dataset.state = "error";
    const useCpu = { label: "Use the CPU engine", run: () => switchBackend("cpu") };
    showAlert(e.code === "no-webgpu" ? webgpuMissing(e.message) : `The engine did not start: ${e.message}`, [useCpu]);
    return false;
  }
}

/** Another engine, chosen in "Your GPU": remembered, started, and the model loaded on it. */
async function switchBackend(choice) {
  if (model.loading || running) {
    $("backend").value = backendChoice();
    return;
  }
  localStorage.setItem(BACKEND_KEY, choice);
  hideAlert();
  model.loaded = false;
  setState("model", "none");
  updateButtons();
  if (!(await startEngine())) return;
  checkGpu();
  if (model.key) loadModel(model.key);
}

function showField(field, text) {
  $("adapter").querySelector(`[data-field="${field}"]`).textContent = text;
}

function mib(bytes) {
  return bytes === undefined ? "?" : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

/**
 * Shows what WebGPU adapter the browser has, if any, and on the WebGPU engine checks that
 * burn's kernels compute right there. Without WebGPU it is a note: the CPU engine works.
 */
async function checkGpu() {
  let info;
  try {
    info = await engine.call("adapterInfo");
  } catch (e) {
    const why = navigator.gpu ? "this browser offers WebGPU to pages but not to Web Workers" : e.message;
    $("gpu-note").textContent = `No WebGPU here (${why}): images are made on the CPU. ${NO_WEBGPU_ADVICE}`;
    $("gpu-note").hidden = false;
    $("adapter").hidden = true;
    return;
  }
  showField("name", info.name);
  showField("isFallbackAdapter", info.isFallbackAdapter ? "yes (slow, CPU)" : "no");
  showField("shaderF16", info.shaderF16 ? "yes" : "no (f32 path)");
  showField("maxBufferSize", mib(info.limits.maxBufferSize));
  showField("maxStorageBufferBindingSize", mib(info.limits.maxStorageBufferBindingSize));
  showField("maxStorageBuffersPerShaderStage", String(info.limits.maxStorageBuffersPerShaderStage));
  showField("maxComputeWorkgroupStorageSize", `${info.limits.maxComputeWorkgroupStorageSize / 1024} KiB`);
  showField("maxComputeInvocationsPerWorkgroup", String(info.limits.maxComputeInvocationsPerWorkgroup));
  $("adapter").hidden = false;
  $("gpu-note").hidden = true;
  if (engineKind !== "webgpu") {
    showField("selfCheck", "not run: the CPU engine is in use");
    return;
  }
  showField("selfCheck", "running…");
  try {
    const err = await engine.call("gpuSelfCheck");
    const ok = err < 1e-3;
    showField("selfCheck", ok ? `ok (max error ${err.toExponential(1)})` : `WRONG (max error ${err})`);
    if (!ok) {
      gpuStatus.textContent = "The GPU computed wrong results.";
      gpuStatus.dataset.state = "error";
      showAlert("Your GPU computed wrong results in a quick check: images would be garbage. Use the CPU engine, " +
        "another browser, or update the graphics driver.", [{ label: "Use the CPU engine", run: () => switchBackend("cpu") }]);
    }
  } catch (e) {
    showField("selfCheck", `failed: ${e.message}`);
  }
}

// ---- model -----------------------------------------------------------------------------

const model = {
  key: null, // the loaded (or loading) model's URL key
  loaded: false,
  info: null, // the engine's ModelInfo (Generator's modelInfo) of the loaded model
  loading: null, // AbortController of a running load
};

/**
 * Fills the scheduler list from the engine's (`Generator.schedulers()`): A1111's names, our
 * names as values. "Model's own" stays first.
 */
async function fillSchedulers() {
  const select = $("scheduler");
  if (select.options.length > 1) return; // filled by an engine started before
  const list = await engine.call("schedulers");
  for (const { name, a1111Name, className } of list) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = a1111Name;
    option.title = `${className} (${name})`;
    select.append(option);
  }
}

/**
 * What the page shows of a model before loading it, from its manifest (the network's, else
 * the stored copy: the engine's fetchManifest): its quantization, bytes and the optional page
 * defaults. `null` when there is none; the load then says why.
 */
async function manifestSummary(url) {
  try {
    const m = JSON.parse(await engine.call("fetchManifest", url));
    const bytes = [...m.files, ...m.chunks].reduce((sum, f) => sum + f.size, 0);
    return { quantization: m.quantization, bytes, defaults: m.defaults };
  } catch (_) {
    return null;
  }
}

function chosenModelUrl() {
  const choice = $("model-choice").value;
  return choice === "custom" ? $("model-url").value : choice;
}

/**
 * Sets the controls to what the model is made for: the engine's ModelInfo (`info`), with the
 * manifest's optional `"defaults"` (`start`: the page's starting values, which the engine
 * ignores) over its defaults.
 */
function applyModelDefaults(info, start) {
  const defaults = { ...info.defaults, ...start };
  for (const id of ["width", "height"]) {
    $(id).step = info.sizeStep;
    $(id).min = info.sizeStep;
    $(id).value = defaults[id];
  }
  $("steps").value = defaults.steps;
  $("guidance").value = defaults.guidanceScale;
  $("scheduler").value = defaults.scheduler ?? "";
  if (defaults.prompt && !$("prompt").dataset.edited) $("prompt").value = defaults.prompt;
  const label = $("scheduler").querySelector('option[value=""]');
  const own = info.scheduler && $("scheduler").querySelector(`option[value="${info.scheduler}"]`);
  label.textContent = own ? `Model's own (${own.textContent})` : "Model's own (not one we have: pick one)";
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.disabled = info.inpainting && tab.dataset.mode !== "inpaint";
  }
  if (info.inpainting) setMode("inpaint");
}

/** Download progress: bytes, speed (of what actually came over the network) and time left. */
function showDownload({ loaded, total, cached, chunk }, counter) {
  const bar = $("download-bar");
  bar.max = total;
  bar.value = loaded;
  if (!cached) counter.fresh += loaded - counter.last;
  counter.last = loaded;
  const seconds = (performance.now() - counter.started) / 1000;
  const speed = counter.fresh / Math.max(seconds, 1e-3);
  let text = `${mb(loaded)} of ${mb(total)}`;
  if (counter.fresh > 0 && loaded < total) text += ` · ${mb(speed)}/s · ${duration((total - loaded) / speed)} left`;
  if (cached) text += " · from this browser's storage";
  $("download-text").textContent = `${text} (${chunk})`;
}

function loadError(e, retry) {
  const retryAction = { label: "Retry", run: () => { hideAlert(); retry(); } };
  if (e.name === "AbortError") {
    $("model-status").textContent = "Download stopped. Load again to continue (finished parts are kept).";
    return;
  }
  if (e.code === "quota") {
    $("cached").open = true;
    showAlert(
      `Not enough browser storage for this model: ${e.message}. The stored models are listed below; ` +
        "a smaller precision (q4 is the smallest) needs less.",
      [retryAction],
    );
  } else if (e.code === "io") {
    showAlert(`The model could not be downloaded: ${e.message}. Parts already downloaded are kept; Retry continues.`, [retryAction]);
  } else if (e.code === "no-webgpu") {
    showAlert(webgpuMissing(e.message));
  } else if (e.code === "crashed") {
    return; // engineCrashed() has said it
  } else {
    showAlert(`The model could not be loaded: ${e.message}`, [retryAction]);
  }
  $("model-status").textContent = `Not loaded: ${e.message.replace(/[.\s]*$/, ".")}`;
}

async function loadModel(url = chosenModelUrl()) {
  if (model.loading || running) return;
  let key;
  try {
    key = modelKey(url);
  } catch (_) {
    $("model-status").textContent = "That model URL is not valid.";
    return;
  }
  hideAlert();
  const changed = key !== model.key;
  const previous = { key: model.key, info: model.info, loaded: model.loaded };
  model.loading = new AbortController();
  model.loaded = false;
  setState("model", "loading");
  updateButtons();
  $("load-cancel").hidden = false;
  $("download").hidden = false;
  $("download-bar").removeAttribute("value");
  $("download-text").textContent = "Reading the model's manifest…";
  $("model-status").textContent = `Loading ${modelLabel(key)}…`;
  const counter = { started: performance.now(), fresh: 0, last: 0 };
  try {
    const manifest = await manifestSummary(key);
    const info = await engine.load(key, {
      signal: model.loading.signal,
      onProgress: (p) => {
        if (p.phase === "download") showDownload(p, counter);
        if (p.phase === "build") $("download-text").textContent = "Preparing the model…";
      },
    });
    model.key = key;
    model.info = info;
    model.loaded = true;
    setState("model", "ready");
    localStorage.setItem("sd-webgpu:model", key);
    const parts = [info.family, manifest?.quantization, manifest && mb(manifest.bytes), `${info.width}×${info.height}`];
    $("model-status").textContent = `Loaded ${modelName(key)} (${parts.filter(Boolean).join(", ")}).`;
    if (changed) applyModelDefaults(info, manifest?.defaults);
    countTokens();
  } catch (e) {
    setState("model", "error");
    loadError(e, () => loadModel(url));
    // The engine keeps the model it had until a new one is complete.
    if (previous.loaded && e.code !== "crashed") {
      Object.assign(model, previous);
      setState("model", "ready");
      $("model-status").textContent += ` Still using ${modelName(previous.key)}.`;
    }
  } finally {
    model.loading = null;
    $("load-cancel").hidden = true;
    $("download").hidden = true;
    updateButtons();
    refreshCached();
  }
}

async function refreshCached() {
  let models = [];
  try {
    models = await engine.call("cachedModels");
  } catch (_) {
    // storage unavailable (private window): nothing stored
  }
  const list = $("cached-list");
  list.replaceChildren(
    ...models.map((m) => {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = modelLabel(m.url);
      name.title = m.url;
      const meta = document.createElement("span");
      meta.className = "numbers";
      meta.textContent = `${mb(m.bytes)} · ${new Date(m.stored).toLocaleDateString()}`;
      const load = document.createElement("button");
      load.type = "button";
      load.textContent = "Load";
      load.setAttribute("aria-label", `Load ${modelLabel(m.url)}`);
      load.addEventListener("click", () => {
        selectModelUrl(m.url);
        loadModel(m.url);
      });
      const del = document.createElement("button");
      del.type = "button";
      del.textContent = "Delete";
      del.setAttribute("aria-label", `Delete ${modelLabel(m.url)} from this browser`);
      del.addEventListener("click", async () => {
        del.disabled = true;
        await engine.call("deleteCachedModel", m.url);
        refreshCached();
      });
      li.append(name, " ", meta, " ", load, " ", del);
      return li;
    }),
  );
  const total = models.reduce((s, m) => s + m.bytes, 0);
  let summary = models.length ? `(${models.length}, ${mb(total)})` : "(none)";
  try {
    const { usage, quota } = await navigator.storage.estimate();
    if (quota) summary += ` · ${mb(quota - usage)} free`;
  } catch (_) {
    // no estimate
  }
  $("cached-summary").textContent = summary;
}

function selectModelUrl(key) {
  const builtIn = modelKey(DEFAULT_MODEL);
  if (key === builtIn) {
    $("model-choice").value = DEFAULT_MODEL;
  } else {
    $("model-choice").value = "custom";
    $("model-url").value = key;
  }
  showModelUrl();
}

function showModelUrl() {
  const custom = $("model-choice").value === "custom";
  $("model-url-row").hidden = !custom;
  $("model-url-hint").hidden = !custom;
  $("model-url").required = custom;
}

// ---- token counter ---------------------------------------------------------------------

let tokenTimer = 0;

function countTokens() {
  clearTimeout(tokenTimer);
  tokenTimer = setTimeout(async () => {
    for (const [field, out] of [["prompt", "prompt-tokens"], ["negative", "negative-tokens"]]) {
      let n = null;
      try {
        if (model.loaded) n = await engine.countTokens($(field).value);
      } catch (_) {
        // no model yet
      }
      const el = $(out);
      el.textContent = n === null ? `– / ${MAX_TOKENS} tokens` : `${n} / ${MAX_TOKENS} tokens`;
      el.classList.toggle("over", n !== null && n > MAX_TOKENS);
      el.title = n !== null && n > MAX_TOKENS ? `Only the first ${MAX_TOKENS} tokens are used` : "";
    }
  }, 150);
}

// ---- modes and the source image --------------------------------------------------------

let mode = "generate";

const editor = new MaskEditor({
  imageCanvas: $("source-canvas"),
  maskCanvas: $("mask-canvas"),
  cursor: $("brush-cursor"),
  onChange: () => {},
});
editor.onBrushKey = (d) => {
  const s = $("brush-size");
  s.value = Math.max(1, Math.min(64, Number(s.value) + d * Math.max(1, Math.round(s.value / 4))));
  s.dispatchEvent(new Event("input"));
};
editor.onEraserKey = () => setEraser(!editor.eraser);

function setEraser(on) {
  editor.eraser = on;
  $("tool-brush").setAttribute("aria-pressed", String(!on));
  $("tool-eraser").setAttribute("aria-pressed", String(on));
}

function setMode(next) {
  mode = next;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.mode === next;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    if (selected) $("create-form").setAttribute("aria-labelledby", tab.id);
  }
  const image = next !== "generate";
  $("source").hidden = !image;
  $("mask-tools").hidden = next !== "inpaint";
  editor.enabled = next === "inpaint";
  $("mask-canvas").classList.toggle("painting", next === "inpaint");
  $("mask-canvas").style.visibility = next === "inpaint" ? "visible" : "hidden";
  $("strength").value = next === "inpaint" ? 1 : Math.min(Number($("strength").value), 0.75);
  $("strength").dispatchEvent(new Event("input"));
  syncSizeFields();
  setState("mode", next);
}

/** In the image modes the output has the source image's size. */
function syncSizeFields() {
  const image = mode !== "generate" && editor.hasImage;
  for (const id of ["width", "height"]) $(id).disabled = mode !== "generate";
  if (image) {
    $("width").value = editor.width;
    $("height").value = editor.height;
  }
}

function setSource(imageData) {
  editor.setImage(imageData);
  $("source-empty").hidden = true;
  $("editor").classList.add("has-image");
  $("editor").style.aspectRatio = `${imageData.width} / ${imageData.height}`;
  syncSizeFields();
}

/** An uploaded picture, scaled to the model's size (its longer side) and cropped to whole units. */
async function uploadSource(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (_) {
    $("create-status").textContent = `${file.name} is not an image this browser can read.`;
    return;
  }
  // Before any model is loaded: SD's 512 pixels and the VAE's step of 8.
  const size = model.info ? Math.max(model.info.width, model.info.height) : 512;
  const unit = model.info?.sizeStep ?? 8;
  const scale = size / Math.max(bitmap.width, bitmap.height);
  const w = Math.max(unit, Math.round((bitmap.width * scale) / unit) * unit);
  const h = Math.max(unit, Math.round((bitmap.height * scale) / unit) * unit);
  setSource(coverImage(bitmap, w, h));
  bitmap.close();
  $("create-status").textContent = `Source image: ${file.name}, resized to ${w}×${h}.`;
}

// ---- generation ------------------------------------------------------------------------

let running = null; // AbortController of the running batch
let lastSeed = null;

function updateButtons() {
  const busy = Boolean(running) || Boolean(model.loading);
  $("generate").disabled = !model.loaded || busy;
  $("cancel").disabled = !running;
  $("load").disabled = busy;
  setState("busy", busy ? "yes" : "no");
}

function readNumber(id) {
  const v = Number($(id).value);
  if (!Number.isFinite(v)) throw new Error(`${$(id).labels[0]?.textContent ?? id}: not a number`);
  return v;
}

// Seeds are u64 (0 to 2^64 − 1), more than a JS number holds exactly: the page keeps them
// as BigInt and passes them to the engine as decimal strings.
const MAX_SEED = 2n ** 64n - 1n;

/** The seed field: null for −1 (a random seed per image), else a BigInt. */
function readSeed(batch) {
  const text = $("seed").value.trim();
  if (text === "-1" || text === "") return null;
  if (!/^\d+$/.test(text) || BigInt(text) > MAX_SEED) {
    throw new Error(`Seed: a whole number from 0 to ${MAX_SEED}, or −1 for a random one.`);
  }
  const seed = BigInt(text);
  if (seed + BigInt(batch) - 1n > MAX_SEED) {
    throw new Error(`Seed: ${batch} images from seed ${seed} would pass ${MAX_SEED}, the largest seed; pick a smaller one.`);
  }
  return seed;
}

function settings() {
  const scheduler = $("scheduler").value;
  const s = {
    mode,
    prompt: $("prompt").value,
    negativePrompt: $("negative").value,
    steps: readNumber("steps"),
    guidanceScale: readNumber("guidance"),
    scheduler,
    ownScheduler: !scheduler,
    width: readNumber("width"),
    height: readNumber("height"),
    batch: Math.max(1, Math.min(16, Math.round(readNumber("batch")))),
    strength: readNumber("strength"),
    preview: $("live-preview").checked,
  };
  s.seed = readSeed(s.batch);
  return s;
}

function showPreview(image) {
  const canvas = $("preview");
  if (canvas.width !== image.width || canvas.height !== image.height) {
    canvas.width = image.width;
    canvas.height = image.height;
    canvas.style.aspectRatio = `${image.width} / ${image.height}`;
  }
  canvas.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(image.data), image.width, image.height), 0, 0);
}

async function generate() {
  if (running || !model.loaded) return;
  let s;
  try {
    s = settings();
  } catch (e) {
    $("create-status").textContent = e.message;
    return;
  }
  if (mode !== "generate" && !editor.hasImage) {
    $("create-status").textContent = "Upload a source image first (or send one from the gallery).";
    return;
  }
  if (mode === "inpaint" && editor.coverage() === 0) {
    $("create-status").textContent = "Paint the mask first: the painted parts are the ones redrawn.";
    $("mask-canvas").focus();
    return;
  }
  hideAlert();
  running = new AbortController();
  const { signal } = running;
  updateButtons();
  $("progress").hidden = false;
  $("progress-bar").value = 0;
  $("create-status").textContent = "";
  const image = mode === "generate" ? null : editor.imageData();
  const mask = mode === "inpaint" ? editor.maskData() : null;
  let made = 0;
  try {
    for (let i = 0; i < s.batch && !signal.aborted; i++) {
      const options = {
        prompt: s.prompt,
        negativePrompt: s.negativePrompt,
        steps: s.steps,
        guidanceScale: s.guidanceScale,
        previewEvery: s.preview ? 1 : 0,
      };
      if (!s.ownScheduler) options.scheduler = s.scheduler;
      if (s.seed !== null) options.seed = String(s.seed + BigInt(i));
      if (image) {
        options.image = { width: image.width, height: image.height, data: image.data };
        options.strength = s.strength;
      } else {
        options.width = s.width;
        options.height = s.height;
      }
      if (mask) options.mask = { width: mask.width, height: mask.height, data: mask.data };
      const started = performance.now();
      $("progress-text").textContent = `Image ${i + 1} of ${s.batch}: encoding the prompt…`;
      const result = await engine[mode]({
        ...options,
        signal,
        onStep: ({ step, total, preview }) => {
          const elapsed = (performance.now() - started) / 1000;
          const perStep = elapsed / step;
          $("progress-bar").value = (i + step / total) / s.batch;
          const eta = perStep * (total - step) + perStep * total * (s.batch - i - 1);
          $("progress-text").textContent =
            `Image ${i + 1} of ${s.batch} · step ${step} / ${total} · ${perStep.toFixed(1)} s/step · ${duration(eta)} left`;
          if (preview) showPreview(preview);
        },
      });
      showPreview(result);
      lastSeed = result.seed;
      $("seed-reuse").disabled = false;
      made++;
      addToGallery(result, {
        ...s,
        seed: result.seed,
        width: result.width,
        height: result.height,
        ms: result.timings?.totalMs,
      });
    }
    $("create-status").textContent = made === 1 ? "Done: 1 image." : `Done: ${made} images.`;
  } catch (e) {
    if (e.name === "AbortError") {
      $("create-status").textContent = `Cancelled${made ? ` after ${made} image${made > 1 ? "s" : ""}` : ""}.`;
    } else if (e.code === "crashed") {
      $("create-status").textContent = "The engine stopped: see the message above.";
    } else if (e.code === "device-lost") {
      // The engine makes a new device on the next call and loads the model there again
      // (from this browser's storage): nothing to reload by hand.
      showAlert(
        "The GPU device was lost (the graphics driver was reset, or the browser took the GPU back), so this " +
          "image could not be finished. Generate again: the next run starts on a new GPU device and loads the " +
          "model again from this browser's storage.",
      );
    } else if (e.code === "out-of-memory") {
      showAlert(
        "The GPU ran out of memory. Try a smaller size or fewer images at once, or close other tabs " +
          "that use the GPU; the next run starts on a fresh GPU device.",
      );
    } else if (e.code === "gpu") {
      showAlert(`The GPU failed: ${e.message}. Try a smaller size, or reload the page.`, [
        { label: "Reload the page", run: () => location.reload() },
      ]);
    } else {
      $("create-status").textContent = `Could not generate: ${e.message}`;
    }
  } finally {
    running = null;
    $("progress").hidden = true;
    updateButtons();
  }
}

function cancel() {
  running?.abort();
}

// ---- gallery ---------------------------------------------------------------------------

let galleryId = 0;

function addToGallery(result, params) {
  const imageData = new ImageData(new Uint8ClampedArray(result.data), result.width, result.height);
  const li = $("gallery-item").content.firstElementChild.cloneNode(true);
  li.dataset.id = String(++galleryId);
  li.dataset.seed = String(params.seed);
  const canvas = li.querySelector("canvas");
  canvas.width = imageData.width;
  canvas.height = imageData.height;
  canvas.getContext("2d").putImageData(imageData, 0, 0);
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${params.prompt} (seed ${params.seed})`);
  li.querySelector(".caption").textContent = params.prompt || "(no prompt)";
  const kind = { generate: "", img2img: " · image to image", inpaint: " · inpaint" }[params.mode];
  li.querySelector(".meta").textContent =
    `seed ${params.seed} · ${params.width}×${params.height} · ${params.steps} steps${kind}` +
    (params.ms ? ` · ${(params.ms / 1000).toFixed(1)} s` : "");
  const parameters = result.parameters;
  li.querySelector("figure").title = parameters;
  li.addEventListener("click", async (e) => {
    const action = e.target.closest("button")?.dataset.action;
    if (action === "download") {
      const png = await encodePng(imageData, parameters);
      const url = URL.createObjectURL(new Blob([png], { type: "image/png" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `sd-webgpu-${params.seed}.png`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } else if (action === "reuse") {
      $("prompt").value = params.prompt;
      $("negative").value = params.negativePrompt;
      $("steps").value = params.steps;
      $("guidance").value = params.guidanceScale;
      $("scheduler").value = params.ownScheduler ? "" : params.scheduler;
      $("seed").value = params.seed;
      if (params.mode === "generate") {
        $("width").value = params.width;
        $("height").value = params.height;
      }
      countTokens();
      $("prompt").focus();
    } else if (action === "img2img" || action === "inpaint") {
      setSource(imageData);
      setMode(action);
      $("create-panel").scrollIntoView({ behavior: "smooth", block: "start" });
      (action === "inpaint" ? $("mask-canvas") : $("prompt")).focus({ preventScroll: true });
    } else if (action === "delete") {
      li.remove();
      $("gallery-empty").hidden = $("gallery").children.length > 0;
    }
  });
  $("gallery").prepend(li);
  $("gallery-empty").hidden = true;
}

// ---- wiring ----------------------------------------------------------------------------

function wire() {
  $("model-choice").addEventListener("change", showModelUrl);
  $("model-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadModel();
  });
  $("load-cancel").addEventListener("click", () => model.loading?.abort());
  $("backend").addEventListener("change", () => switchBackend($("backend").value));

  for (const id of ["prompt", "negative"]) {
    $(id).addEventListener("input", () => {
      $(id).dataset.edited = "yes";
      countTokens();
    });
  }

  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => setMode(tab.dataset.mode));
    tab.addEventListener("keydown", (e) => {
      const d = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (!d) return;
      const enabled = tabs.filter((t) => !t.disabled);
      const next = enabled[(enabled.indexOf(tab) + d + enabled.length) % enabled.length];
      setMode(next.dataset.mode);
      next.focus();
    });
  }

  $("source-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) uploadSource(file);
    e.target.value = "";
  });
  $("editor").addEventListener("dragover", (e) => e.preventDefault());
  $("editor").addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer.files[0];
    if (file) uploadSource(file);
  });

  $("brush-size").addEventListener("input", () => {
    editor.brushSize = Number($("brush-size").value);
    $("brush-size-value").textContent = `${editor.brushSize} px`;
  });
  $("tool-brush").addEventListener("click", () => setEraser(false));
  $("tool-eraser").addEventListener("click", () => setEraser(true));
  $("mask-clear").addEventListener("click", () => editor.clear());
  $("mask-invert").addEventListener("click", () => editor.invert());
  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
  });

  $("seed-random").addEventListener("click", () => {
    $("seed").value = -1;
  });
  $("seed-reuse").addEventListener("click", () => {
    if (lastSeed !== null) $("seed").value = lastSeed;
  });

  $("create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    generate();
  });
  $("cancel").addEventListener("click", cancel);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      generate();
    } else if (e.key === "Escape" && running) {
      cancel();
    }
  });
}

async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return;
  try {
    await navigator.serviceWorker.register("sw.js");
  } catch (e) {
    console.warn("no offline copy: the service worker did not register:", e.message);
  }
}

async function main() {
  wire();
  setMode("generate");
  updateButtons();
  countTokens();
  registerServiceWorker();
  selectModelUrl(modelKey(DEFAULT_MODEL));
  if (!(await startEngine())) {
    $("model-status").textContent = "The engine did not start: see “Your GPU” below.";
    return;
  }
  refreshCached();
  // Start with the last model used if it is stored here, else the built-in one.
  const last = localStorage.getItem("sd-webgpu:model");
  const stored = last ? (await engine.call("cachedModels").catch(() => [])).some((m) => m.url === last) : false;
  const start = stored ? last : modelKey(DEFAULT_MODEL);
  selectModelUrl(start);
  checkGpu();
  loadModel(start);
}

main().catch((e) => {
  showAlert(`sd-webgpu failed to start: ${e.message ?? e}`);
});
