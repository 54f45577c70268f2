// The engine in a Web Worker: the wasm package's Generator, driven by messages from
// ./engine.js (WorkerEngine), so a page never freezes while it works.
//
// Requests { id, type, ...args }; answers { id, ok: true, result } or { id, ok: false,
// error: { message, code, name } }; events on the way: { id, event: "progress", ... } while
// a model loads or is imported, { id, event: "note", note } from an import, { id, event:
// "step", step, total, preview } while an image is made.
// { type: "cancel", target } aborts request `target`. { event: "crashed", message } says the
// wasm instance died outside a request.
import { Generator } from "./sd_webgpu.js";
import { callEngine, initEngine } from "./local.js";
import { importFiles, importUrl } from "./import.js";

let generator = null;
const controllers = new Map(); // request id → AbortController

function current() {
  if (!generator) throw Object.assign(new Error("the engine was not created"), { code: "bad-input" });
  return generator;
}

// An import's options as the worker passes them on: its cancel signal, and its progress and
// notes posted back to the request's caller.
function importEvents(options, id, signal) {
  return {
    ...options,
    signal,
    onProgress: (p) => postMessage({ id, event: "progress", ...p }),
    onNote: (note) => postMessage({ id, event: "note", note }),
  };
}

const handlers = {
  // Generator.create(options): what it chose ({ kind, adapter, reason }).
  async create({ options }) {
    await initEngine();
    generator?.free();
    generator = await Generator.create(options);
    return generator.backend;
  },

  async load({ model }, id, signal) {
    await current().load(model, {
      signal,
      onProgress: (p) => postMessage({ id, event: "progress", ...p }),
    });
    return generator.modelInfo;
  },

  // A model from the user's files (import.js): its key. Files come as File objects, which
  // reach the worker without being read.
  async importFile({ files, options }, id, signal) {
    return importFiles(files, importEvents(options, id, signal));
  },

  // The same from a .safetensors file at `url` (absolute: engine.js resolves it).
  async importUrl({ url, options }, id, signal) {
    return importUrl(url, importEvents(options, id, signal));
  },

  async loadFiles({ files }) {
    current().loadFiles(files);
    return generator.modelInfo;
  },

  async generate({ mode, options }, id, signal) {
    if (!["generate", "img2img", "inpaint"].includes(mode)) throw new Error(`unknown mode ${mode}`);
    return current()[mode]({
      ...options,
      signal,
      onStep: ({ step, total, preview }) => {
        postMessage({ id, event: "step", step, total, preview }, preview ? [preview.data.buffer] : []);
      },
    });
  },

  async countTokens({ text }) {
    return current().countTokens(text);
  },

  async call({ name, args }) {
    return callEngine(name, ...args);
  },
};

function errorObject(e) {
  return {
    message: e?.message ?? String(e),
    code: e?.code ?? (e instanceof WebAssembly.RuntimeError ? "crashed" : undefined),
    name: e?.name,
  };
}

// A Rust panic inside a promise chain (a lost GPU device can make wgpu panic) ends up here,
// not in a request: report it, so the page's side restarts the engine.
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
