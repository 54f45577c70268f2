// The engine on this thread: the wasm package (`Generator`, made by wasm-bindgen into
// ./sd_webgpu.js), loaded once, with the methods createGenerator's generators share (the
// worker's, engine.js, has the same). worker.js runs it in a Web Worker; it imports nothing
// that starts a worker.
import init, { Generator } from "./sd_webgpu.js";
import * as wasm from "./sd_webgpu.js";
import { withToBlob } from "./png.js";
import { importFiles, importUrl } from "./import.js";

let ready = null;

/** Loads the engine's WebAssembly on this thread, once; later calls wait for the same load. */
export function initEngine(input) {
  ready ??= init(input ? { module_or_path: input } : undefined);
  return ready;
}

/** The functions of the engine that need no model, by name: what `gen.call(name)` and the
 *  worker may run. */
export const ENGINE_FUNCTIONS = [
  "schedulers", // Generator.schedulers()
  "cachedModels",
  "deleteCachedModel",
  "fetchManifest",
  "resolveModel",
  "modelInfoFromManifest",
  "adapterInfo",
  "gpuSelfCheck",
];

/** A model id as the engine gets it: a relative URL made absolute against the page (so a model
 *  is stored under one key, whichever thread loads it); `hf:` ids, imported models' `local:`
 *  ids and absolute URLs as they are. */
export function absoluteModel(model) {
  if (typeof model !== "string" || model.trim() === "" || /^(hf|local):/.test(model.trim())) return model;
  return new URL(model, globalThis.document?.baseURI ?? globalThis.location?.href).href;
}

/** `args` of engine function `name` with a model id among them made absolute (see
 *  absoluteModel): "fetchManifest", "deleteCachedModel" and "resolveModel" take the ids
 *  `load` takes. */
export function modelArgs(name, args) {
  const takesModel = ["fetchManifest", "deleteCachedModel", "resolveModel"].includes(name);
  return takesModel ? [absoluteModel(args[0]), ...args.slice(1)] : args;
}

/** Runs engine function `name` (one of ENGINE_FUNCTIONS) on this thread. */
export async function callEngine(name, ...args) {
  if (!ENGINE_FUNCTIONS.includes(name)) {
    const e = new Error(`unknown engine function ${name}: one of ${ENGINE_FUNCTIONS.join(", ")}`);
    e.code = "bad-input";
    throw e;
  }
  await initEngine();
  const f = Generator[name] ?? wasm[name];
  return await f(...args);
}

/** The engine on this thread: a `Generator` with the same methods as the worker's. */
export class LocalEngine {
  constructor(generator) {
    this.generator = generator;
  }
  get backend() { return this.generator?.backend ?? null; }
  get modelInfo() { return this.generator?.modelInfo ?? null; }
  get loaded() { return this.generator?.loaded ?? false; }
  async load(model, options) {
    await this.generator.load(absoluteModel(model), options ?? {});
    return this.modelInfo;
  }
  async importFile(files, options) {
    return importFiles(files, options);
  }
  async importUrl(url, options) {
    return importUrl(url, options);
  }
  async loadFiles(files) {
    this.generator.loadFiles(files);
    return this.modelInfo;
  }
  async generate(options) { return withToBlob(await this.generator.generate(options)); }
  async img2img(options) { return withToBlob(await this.generator.img2img(options)); }
  async inpaint(options) { return withToBlob(await this.generator.inpaint(options)); }
  async countTokens(text) { return this.generator.countTokens(text); }
  async unload() { this.generator.unload(); }
  call(name, ...args) { return callEngine(name, ...modelArgs(name, args)); }
}

