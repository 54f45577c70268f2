// The engine in a Web Worker (./worker.js), seen from the page: the same methods as on this
// thread (index.js's LocalEngine), each a request to the worker. Callbacks stay here
// (progress and step events come back as messages); a `signal` aborts in the worker.
//
// A crashed engine (a Rust panic, or an error that ends the wasm instance) fails the requests
// in flight with code "crashed", calls `onCrash`, and the next request starts a fresh worker
// on the same backend, with the model loaded again from where it came from (this browser's
// storage: no download). A worker that cannot even start is not restarted in a loop: only a
// request starts one.

import { absoluteModel } from "./local.js";
import { withToBlob } from "./png.js";

export class EngineCrashed extends Error {
  constructor(message) {
    super(message);
    this.name = "EngineCrashed";
    this.code = "crashed";
  }
}

export class WorkerEngine {
  constructor({ backend = "auto", onCrash } = {}) {
    this.options = { backend };
    this.onCrash = onCrash;
    this.nextId = 1;
    this.pending = new Map(); // id → { resolve, reject, onEvent }
    this.worker = null;
    this.starting = null; // the start of the current worker (create, and the model again)
    this.backend = null;
    this.modelInfo = null;
    this.model = null; // what to load again after a crash: a model id, or "files"
  }

  get loaded() {
    return this.modelInfo !== null;
  }

  /** Starts the worker and its Generator (and the model it had, after a crash), once. */
  start() {
    this.starting ??= (async () => {
      this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
      this.worker.onmessage = ({ data }) => this.receive(data);
      this.worker.onerror = (e) => {
        e.preventDefault();
        this.crash(e.message || "the engine stopped");
      };
      this.worker.onmessageerror = () => this.crash("a message from the engine could not be read");
      this.backend = await this.send("create", { options: this.options });
      if (typeof this.model === "string") this.modelInfo = await this.send("load", { model: this.model });
    })().catch((e) => {
      this.stop(); // the next request tries again
      throw e;
    });
    return this.starting;
  }

  /** Fails every request in flight and drops the worker; the next request starts a fresh one. */
  crash(why) {
    const error = new EngineCrashed(why);
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
    this.stop();
    if (this.model === "files") {
      this.model = null;
      this.modelInfo = null;
    }
    this.onCrash?.(error);
  }

  stop() {
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
      this.pending.set(id, { resolve, reject, onEvent });
      signal?.addEventListener("abort", () => worker.postMessage({ type: "cancel", target: id }), { once: true });
    });
  }

  /** A request, once the worker (started again if need be) is ready. */
  async request(type, args, events) {
    await this.start();
    return this.send(type, args, events);
  }

  async load(model, { onProgress, signal } = {}) {
    if (!this.worker) this.model = null; // a fresh worker: no need to load the old model first
    model = absoluteModel(model); // relative to the page, not to the worker's script
    const info = await this.request("load", { model }, {
      signal,
      onEvent: (p) => onProgress?.({ phase: p.phase, loaded: p.loaded, total: p.total, chunk: p.chunk, cached: p.cached }),
    });
    this.model = model;
    this.modelInfo = info;
    return info;
  }

  async loadFiles(files) {
    this.modelInfo = await this.request("loadFiles", { files });
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
    signal?.addEventListener("abort", () => controller.abort(), { once: true });
    if (signal?.aborted) controller.abort();
    const image = await this.request("generate", { mode, options }, {
      signal: controller.signal,
      // `onStep` returning false stops the run, as on this thread.
      onEvent: ({ step, total, preview }) => {
        if (onStep?.({ step, total, preview }) === false) controller.abort();
      },
    });
    return withToBlob(image);
  }

  countTokens(text) {
    return this.request("countTokens", { text });
  }

  /** Ends the worker: its GPU memory and its WebAssembly heap are given back. The next call
   *  starts a fresh worker, without a model. */
  async unload() {
    this.stop();
    this.model = null;
    this.modelInfo = null;
  }

  /** Runs engine function `name` (index.js's ENGINE_FUNCTIONS) in the worker. */
  call(name, ...args) {
    return this.request("call", { name, args });
  }
}
