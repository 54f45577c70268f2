// Models: loading one (with download progress and what to do when it fails), the model's
// defaults on the controls, the scheduler list and the models stored in this browser.
import { $, mb, duration, setState, showAlert, hideAlert, webgpuMissing } from "./ui.js";
import { state, model, updateButtons } from "./state.js";
import { countTokens } from "./tokens.js";
import { setMode } from "./source.js";

export const DEFAULT_MODEL = "models/shapes";
const LAST_MODEL_KEY = "sd-webgpu:model"; // the last model loaded, started with next time

/** A model id as the page keeps it: an absolute URL without a trailing slash, an hf: id
 *  (the engine's resolveModel gives the URL it is stored under), or an imported model's
 *  local: id. */
export function modelKey(url) {
  // An imported model's id (local:NAME) is its key as it is: a URL parser would escape it.
  if (url.trim().startsWith("local:")) return url.trim();
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

/**
 * Fills the scheduler list from the engine's (`Generator.schedulers()`): A1111's names, our
 * names as values. "Model's own" stays first.
 */
export async function fillSchedulers() {
  const select = $("scheduler");
  if (select.options.length > 1) return; // filled by an engine started before
  const list = await state.engine.call("schedulers");
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
    const m = JSON.parse(await state.engine.call("fetchManifest", url));
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
    return; // engineCrashed() (gpu.js) has said it
  } else {
    showAlert(`The model could not be loaded: ${e.message}`, [retryAction]);
  }
  $("model-status").textContent = `Not loaded: ${e.message.replace(/[.\s]*$/, ".")}`;
}

export async function loadModel(url = chosenModelUrl()) {
  if (model.loading || state.running) return;
  if (!state.engine) {
    $("model-status").textContent = "The engine did not start: see “Your GPU” below.";
    return;
  }
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
    const info = await state.engine.load(key, {
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
    localStorage.setItem(LAST_MODEL_KEY, key);
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

export async function refreshCached() {
  let models = [];
  try {
    models = await state.engine.call("cachedModels");
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
        await state.engine.call("deleteCachedModel", m.url);
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

export function selectModelUrl(key) {
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

/** The model to start with: the last one used if it is stored here, else the built-in one. */
export async function startingModel() {
  const last = localStorage.getItem(LAST_MODEL_KEY);
  if (!last) return modelKey(DEFAULT_MODEL);
  try {
    // Stored under the URL the engine resolves it to (an hf: id's is the Hub's).
    const { url } = await state.engine.call("resolveModel", last);
    const stored = (await state.engine.call("cachedModels")).some((m) => m.url === url);
    return stored ? last : modelKey(DEFAULT_MODEL);
  } catch (_) {
    return modelKey(DEFAULT_MODEL);
  }
}

export function wireModel() {
  $("model-choice").addEventListener("change", showModelUrl);
  $("model-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadModel();
  });
  $("load-cancel").addEventListener("click", () => model.loading?.abort());
}
