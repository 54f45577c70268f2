// The engine in a Web Worker (./worker.js), seen from the page: the same methods as on this
// thread (local.js's LocalEngine), each a request to the worker. Callbacks stay here
// (progress and step events come back as messages); a `signal` aborts in the worker.
//
// A crashed engine (a Rust panic, or an error that ends the wasm instance) fails the requests
// in flight with code "crashed" and calls `onCrash`; the next request starts a fresh worker
// on the same backend, and the next one that needs the model (generate, img2img, inpaint,
// countTokens) first loads it again from where it came from (this browser's storage, if it
// was stored: no download). A model given as files must be given again. A worker that cannot
// even start is not restarted in a loop: only a request starts one.

import { absoluteModel, modelArgs } from "./local.js";
import { withToBlob } from "./png.js";

export class EngineCrashed extends Error {
  constructor(message) {
    super(message);
    this.name = "EngineCrashed";
    this.code = "crashed";
  }
}

/** The error of a request that `unload()` (or `onStep` returning false, or a signal) ended. */
function abortError(message) {
  return Object.assign(new Error(message), { name: "AbortError", code: "cancelled" });
}

/** An import's events from the worker, to its `onProgress` and `onNote`. */
function importEvents(onProgress, onNote) {
  return (e) => {
    if (e.event === "note") onNote?.(e.note);
    else onProgress?.({ bytesRead: e.bytesRead, totalBytes: e.totalBytes, bytesPerSecond: e.bytesPerSecond, secondsLeft: e.secondsLeft });
  };
}

export class WorkerEngine {
  constructor({ backend = "auto", onCrash } = {}) {
    this.options = { backend };
    this.onCrash = onCrash;
    this.nextId = 1;
    this.pending = new Map(); // id → { resolve, reject, onEvent, done }
    this.worker = null;
    this.starting = null; // the start of the current worker: Generator.create there
    this.backend = null;
    this.modelInfo = null;
    this.model = null; // where the model came from (a URL), "files", or null
    this.reload = false; // the current worker lacks the model it should have (after a crash)
    this.unloads = 0; // how many times unload() ran: a call made before one is ended by it
  }

  get loaded() {
    return this.modelInfo !== null;
  }

  /** Starts the worker and its Generator, once per worker. */
  start() {
    if (this.starting) return this.starting;
    const starting = (async () => {
      this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
      this.worker.onmessage = ({ data }) => this.receive(data);
      this.worker.onerror = (e) => {
        e.preventDefault();
        this.crash(e.message || "the engine stopped");
      };
      this.worker.onmessageerror = () => this.crash("a message from the engine could not be read");
      this.backend = await this.send("create", { options: this.options });
    })().catch((e) => {
      if (this.starting === starting) this.stop(); // the next request tries again
      throw e;
    });
    this.starting = starting;
    return starting;
  }

  /** The worker (with the model loaded again if a crash took it, for calls that need it);
   *  rejects with an AbortError when unload() ran meanwhile. */
  async ready({ model = false } = {}) {
    const unloads = this.unloads;
    await this.start();
    if (model && this.reload) {
      this.reload = false;
      this.modelInfo = await this.send("load", { model: this.model });
    }
    if (unloads !== this.unloads) throw abortError("the engine was unloaded");
  }

  /** Fails every request in flight and drops the worker; the next request starts a fresh one. */
  crash(why) {
    const error = new EngineCrashed(why);
    this.stop(error);
    if (this.model === "files") {
      this.model = null;
      this.modelInfo = null;
    }
    this.reload = typeof this.model === "string";
    this.onCrash?.(error);
  }

  /** Ends the worker; requests in flight reject with `error`. */
  stop(error = abortError("the engine was unloaded")) {
    for (const request of this.pending.values()) {
      request.done();
      request.reject(error);
    }
    this.pending.clear();
    if (this.worker) {
      this.worker.onmessage = this.worker.onerror = this.worker.onmessageerror = null;
      this.worker.terminate();
    }
    this.worker = null;
    this.starting = null;
  }

  receive(data) {
    if (data.event === "crashed") {
      this.crash(data.message);
      return;
    }
    const request = this.pending.get(data.id);
    if (!request) return;
    if (data.event) {
      request.onEvent?.(data);
      return;
    }
    this.pending.delete(data.id);
    request.done();
    if (data.ok) {
      request.resolve(data.result);
    } else {
      const error = new Error(data.error.message);
      error.code = data.error.code;
      if (data.error.name) error.name = data.error.name;
      request.reject(error);
      // A trap (Rust panic) leaves the wasm instance unusable: start a fresh one.
      if (error.code === "crashed") this.crash(error.message);
    }
  }

  /** Posts request `type` to the current worker; `onEvent` gets its events. */
  send(type, args = {}, { onEvent, signal } = {}) {
    const id = this.nextId++;
    const worker = this.worker;
    return new Promise((resolve, reject) => {
      try {
        worker.postMessage({ id, type, ...args });
      } catch (e) {
        // Not cloneable (a function, say): a bad-input error, nothing left pending.
        reject(Object.assign(new Error(`${type}: ${e.message}`), { code: "bad-input" }));
        return;
      }
      const cancel = () => worker.postMessage({ type: "cancel", target: id });
      const done = () => signal?.removeEventListener("abort", cancel);
      this.pending.set(id, { resolve, reject, onEvent, done });
      if (signal?.aborted) cancel();
      else signal?.addEventListener("abort", cancel, { once: true });
    });
  }

  async load(model, { onProgress, signal } = {}) {
    model = absoluteModel(model); // relative to the page, not to the worker's script
    await this.ready();
    const hadModel = !this.reload && this.modelInfo !== null;
    this.reload = false; // the model loaded now replaces the one a crash took
    try {
      this.modelInfo = await this.send("load", { model }, {
        signal,
        onEvent: (p) => onProgress?.({ phase: p.phase, loaded: p.loaded, total: p.total, chunk: p.chunk, cached: p.cached }),
      });
      this.model = model;
      return this.modelInfo;
    } catch (e) {
      // The engine keeps the model it had until a new one is complete; a fresh worker has none.
      if (!hadModel) this.model = this.modelInfo = null;
      throw e;
    }
  }

  /** Converts and stores a model from the user's files (import.js): its key, for `load`. */
  async importFile(files, { onProgress, onNote, signal, ...options } = {}) {
    await this.ready();
    return this.send("importFile", { files, options }, {
      signal,
      onEvent: importEvents(onProgress, onNote),
    });
  }

  /** The same from a single .safetensors file at `url` (import.js, importUrl). */
  async importUrl(url, { onProgress, onNote, signal, ...options } = {}) {
    await this.ready();
    // Resolved here: the worker's own URL is not the page's.
    const href = new URL(url, location.href).href;
    return this.send("importUrl", { url: href, options }, {
      signal,
      onEvent: importEvents(onProgress, onNote),
    });
  }

  async loadFiles(files) {
    await this.ready();
    this.reload = false;
    this.modelInfo = await this.send("loadFiles", { files });
    this.model = "files";
    return this.modelInfo;
  }

  generate(options) {
    return this.image("generate", options);
  }

  img2img(options) {
    return this.image("img2img", options);
  }

  inpaint(options) {
    return this.image("inpaint", options);
  }

  async image(mode, { onStep, signal, ...options } = {}) {
    // Images and masks go as their pixels: a generated image's toBlob cannot be posted.
    for (const key of ["image", "mask"]) {
      const picture = options[key];
      if (picture && typeof picture === "object") {
        options[key] = { width: picture.width, height: picture.height, data: picture.data };
      }
    }
    const controller = new AbortController();
    const forward = () => controller.abort();
    if (signal?.aborted) forward();
    else signal?.addEventListener("abort", forward, { once: true });
    let stepError = null;
    try {
      await this.ready({ model: true });
      const image = await this.send("generate", { mode, options }, {
        signal: controller.signal,
        // `onStep` returning false stops the run, and one that throws ends it with its error,
        // as on this thread.
        onEvent: ({ step, total, preview }) => {
          try {
            if (onStep?.({ step, total, preview }) === false) controller.abort();
          } catch (e) {
            stepError = e;
            controller.abort();
          }
        },
      });
      return withToBlob(image);
    } catch (e) {
      throw stepError ?? e;
    } finally {
      signal?.removeEventListener("abort", forward);
    }
  }

  async countTokens(text) {
    await this.ready({ model: true });
    return this.send("countTokens", { text });
  }

  /** Ends the worker: its GPU memory and its WebAssembly heap are given back, and requests in
   *  flight reject with an AbortError. The next call starts a fresh worker, without a model. */
  async unload() {
    this.unloads++;
    this.stop();
    this.model = this.modelInfo = null;
    this.reload = false;
  }

  /** Runs engine function `name` (local.js's ENGINE_FUNCTIONS) in the worker. */
  async call(name, ...args) {
    await this.ready();
    return this.send("call", { name, args: modelArgs(name, args) });
  }
}
