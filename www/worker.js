// The engine: the wasm package in a Web Worker, so the page never freezes while it works (on
// the GPU through WebGPU, or on the CPU).
//
// The page sends { id, type, ...args }; the worker answers { id, ok: true, result } or
// { id, ok: false, error: { message, code, name } }, and sends events on the way:
// { id, event: "progress", ... } while a model loads, { id, event: "step", step, total,
// preview } while an image is made. { type: "cancel", target } aborts request `target`.
import init, { Generator, adapterInfo, gpuSelfCheck } from "./pkg/sd_webgpu.js";

const ready = init();
let generator = null;
let backend = "auto"; // the generator's Generator.create({ backend })
const controllers = new Map(); // request id → AbortController

/** The generator, made on first use, or made anew (its model dropped) for another backend. */
async function engine(choice = backend) {
  await ready;
  if (generator && choice !== backend) {
    generator.free();
    generator = null;
  }
  backend = choice;
  generator ??= await Generator.create({ backend });
  return generator;
}

// The manifest of a converted model (its text), for the page's defaults (image size,
// scheduler, ...): from the network (or the service worker's copy), else the copy the model
// cache keeps in IndexedDB (crate/js/chunk_cache.js: database "sd-webgpu", store "models",
// key = URL).
async function manifest(url) {
  try {
    const response = await fetch(`${url}/manifest.json`);
    if (response.ok) return await response.text();
  } catch (_) {
    // offline: try the stored copy
  }
  const stored = await new Promise((resolve) => {
    const open = indexedDB.open("sd-webgpu");
    open.onerror = () => resolve(undefined);
    open.onupgradeneeded = () => open.transaction.abort(); // no database yet: nothing stored
    open.onsuccess = () => {
      const db = open.result;
      if (!db.objectStoreNames.contains("models")) return resolve(undefined);
      const get = db.transaction("models").objectStore("models").get(url);
      get.onsuccess = () => resolve(get.result);
      get.onerror = () => resolve(undefined);
    };
  });
  if (stored) return stored.manifest;
  return null;
}

const handlers = {
  async adapter() {
    if (!self.navigator.gpu) {
      const e = new Error("this browser offers WebGPU to pages but not to Web Workers");
      e.code = "no-webgpu-worker";
      throw e;
    }
    await ready;
    return adapterInfo();
  },

  // The engine on `backend` ("auto", "webgpu" or "cpu"): what it chose ({ kind, adapter, reason }).
  async start({ backend }) {
    return (await engine(backend)).backend;
  },

  async selfCheck() {
    await ready;
    return gpuSelfCheck();
  },

  // What the page shows of a manifest, and its optional page defaults. What the model is comes
  // from the engine: `load` answers with the loaded model's ModelInfo (modelInfoFromManifest
  // would give the same from the manifest's text, before loading).
  async manifest({ url }) {
    const text = await manifest(url);
    if (!text) return null;
    const m = JSON.parse(text);
    const bytes = [...m.files, ...m.chunks].reduce((sum, f) => sum + f.size, 0);
    return { quantization: m.quantization, bytes, defaults: m.defaults };
  },

  async schedulers() {
    await ready;
    return Generator.schedulers();
  },

  async load({ url, backend }, id, signal) {
    const gen = await engine(backend);
    await gen.load(url, {
      signal,
      onProgress: (p) => postMessage({ id, event: "progress", ...p }),
    });
    return gen.modelInfo;
  },

  async generate({ mode, options }, id, signal) {
    if (!["generate", "img2img", "inpaint"].includes(mode)) throw new Error(`unknown mode ${mode}`);
    const gen = await engine();
    const result = await gen[mode]({
      ...options,
      signal,
      onStep: ({ step, total, preview }) => {
        const message = { id, event: "step", step, total, preview };
        postMessage(message, preview ? [preview.data.buffer] : []);
      },
    });
    return result;
  },

  async countTokens({ text }) {
    if (!generator?.loaded) return null;
    return generator.countTokens(text);
  },

  async cachedModels() {
    await ready;
    return Generator.cachedModels();
  },

  async deleteCachedModel({ url }) {
    await ready;
    return Generator.deleteCachedModel(url);
  },

  // For the page tests: destroys the engine's GPU device, as a driver reset would.
  async loseDeviceForTesting() {
    await ready;
    Generator.loseDeviceForTesting();
    return true;
  },
};

function errorObject(e) {
  return {
    message: e?.message ?? String(e),
    code: e?.code ?? (e instanceof WebAssembly.RuntimeError ? "crashed" : undefined),
    name: e?.name,
  };
}

// A Rust panic inside a promise chain (a lost GPU device makes wgpu panic) ends up here,
// not in a request: report it, so the page restarts the engine.
self.addEventListener("unhandledrejection", (e) => {
  if (e.reason instanceof WebAssembly.RuntimeError) {
    e.preventDefault();
    postMessage({ event: "crashed", message: e.reason.message });
  }
});

self.onmessage = async ({ data }) => {
  const { id, type } = data;
  if (type === "cancel") {
    controllers.get(data.target)?.abort();
    return;
  }
  const handler = handlers[type];
  if (!handler) {
    postMessage({ id, ok: false, error: { message: `unknown request ${type}`, code: "bad-input" } });
    return;
  }
  const controller = new AbortController();
  controllers.set(id, controller);
  try {
    const result = await handler(data, id, controller.signal);
    const transfer = result?.data?.buffer ? [result.data.buffer] : [];
    postMessage({ id, ok: true, result }, transfer);
  } catch (e) {
    postMessage({ id, ok: false, error: errorObject(e) });
  } finally {
    controllers.delete(id);
  }
};
