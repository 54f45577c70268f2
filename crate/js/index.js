// sd-webgpu: Stable Diffusion in the browser, on WebGPU or the CPU (WebAssembly).
//
//   import { createGenerator } from "sd-webgpu";
//   const gen = await createGenerator({ model: "https://…/models/sd15-q8", worker: true, onProgress });
//   const image = await gen.generate({ prompt: "a watercolor fox", seed: 42 });
//   const png = await image.toBlob({ parameters: true });
//
// The engine runs on this thread (./local.js) or in a Web Worker (./engine.js driving
// ./worker.js), with the same methods both ways.
import { Generator } from "./sd_webgpu.js";
import { LocalEngine, initEngine } from "./local.js";
import { WorkerEngine } from "./engine.js";

export { Generator };
export { ENGINE_FUNCTIONS, callEngine, initEngine } from "./local.js";
export { EngineCrashed } from "./engine.js";
export { readParameters } from "./png.js";

/**
 * Starts the engine and, with `model`, loads a model: resolves to a generator with
 * `Generator`'s methods (`load`, `loadFiles`, `generate`, `img2img`, `inpaint`,
 * `countTokens`, all returning promises), its `backend`, `modelInfo` and `loaded`, plus
 * `unload()` and `call(name, ...args)` (ENGINE_FUNCTIONS). Images have `toBlob({ parameters })`.
 *
 * Options: `model` (a converted model's folder URL, or "hf:user/repo[@revision][/folder]"),
 * `worker` (true: run in a Web Worker, so the page never freezes; false: this thread),
 * `backend` ("auto", "webgpu", "cpu": see Generator.create), `onProgress` (load events),
 * `signal` (aborts the load), `onCrash(error)` (worker only: the engine stopped and the next
 * call starts a fresh one, and the model is loaded again from where it came from before it is
 * next needed; engine.js says how).
 */
export async function createGenerator({ model, worker = false, backend = "auto", onProgress, signal, onCrash } = {}) {
  let gen;
  if (worker) {
    gen = new WorkerEngine({ backend, onCrash });
    await gen.start();
  } else {
    await initEngine();
    gen = new LocalEngine(await Generator.create({ backend }));
  }
  if (model !== undefined) {
    try {
      await gen.load(model, { onProgress, signal });
    } catch (e) {
      // No engine left running that the caller cannot reach.
      await gen.unload();
      if (gen instanceof LocalEngine) gen.generator.free();
      throw e;
    }
  }
  return gen;
}
