// The page's side of worker.js: promises for requests, callbacks for their events, and a
// fresh worker after the engine crashed (a Rust panic, or a lost GPU device, ends the wasm
// instance). The next worker starts with the next request, so a worker that cannot even
// start (say, a broken download of the engine) is not restarted in a loop.

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
    this.worker = null;
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

  /** Fails every request in flight and drops the worker; the next request starts a fresh one. */
  crash(why) {
    const error = new EngineCrashed(why);
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
    this.worker.onmessage = this.worker.onerror = this.worker.onmessageerror = null;
    this.worker.terminate();
    this.worker = null;
    this.onCrash?.(error);
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

  /**
   * Sends request `type` with `args`; `onEvent` gets its progress / step events. With a
   * `signal`, aborting it cancels the request in the worker.
   */
  request(type, args = {}, { onEvent, signal } = {}) {
    const id = this.nextId++;
    if (!this.worker) this.start();
    const worker = this.worker;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onEvent });
      worker.postMessage({ id, type, ...args });
      signal?.addEventListener("abort", () => worker.postMessage({ type: "cancel", target: id }), { once: true });
    });
  }
}
