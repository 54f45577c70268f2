// The page's side of worker.js: promises for requests, callbacks for their events, and a
// restart after the engine crashed (a Rust panic, or a lost GPU device, ends the wasm instance).

export class EngineCrashed extends Error {
  constructor(message) {
    super(message);
    this.name = "EngineCrashed";
    this.code = "crashed";
  }
}

export class Engine {
  constructor({ onCrash } = {}) {
    this.onCrash = onCrash;
    this.nextId = 1;
    this.pending = new Map(); // id → { resolve, reject, onEvent }
    this.start();
  }

  start() {
    this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    this.worker.onmessage = ({ data }) => this.receive(data);
    this.worker.onerror = (e) => {
      e.preventDefault();
      this.crash(e.message || "the engine stopped");
    };
    this.worker.onmessageerror = () => this.crash("a message from the engine could not be read");
  }

  /** Fails every request in flight and starts a fresh worker (a fresh wasm instance). */
  crash(why) {
    const error = new EngineCrashed(why);
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
    this.worker.terminate();
    this.start();
    this.onCrash?.(error);
  }

  receive(data) {
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
    }
  }

  /**
   * Sends request `type` with `args`; `onEvent` gets its progress / step events. With a
   * `signal`, aborting it cancels the request in the worker.
   */
  request(type, args = {}, { onEvent, signal } = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onEvent });
      this.worker.postMessage({ id, type, ...args });
      signal?.addEventListener("abort", () => this.worker.postMessage({ type: "cancel", target: id }), { once: true });
    });
  }
}
