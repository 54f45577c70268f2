// The page's shared state, kept here only: the other modules read and change these objects
// (never copies of them), so they always see the current engine, model and run.
import { $, setState } from "./ui.js";

export const state = {
  engine: null, // the package's generator, on the engine chosen in "Your GPU" (gpu.js)
  running: null, // AbortController of the running batch (generate.js)
  mode: "generate", // "generate", "img2img" or "inpaint": the tab shown (source.js)
};

export const model = {
  key: null, // the loaded (or loading) model's URL key
  loaded: false,
  info: null, // the engine's ModelInfo (Generator's modelInfo) of the loaded model
  loading: null, // AbortController of a running load
};

/** The buttons follow the state: every module that changes it calls this. */
export function updateButtons() {
  const busy = Boolean(state.running) || Boolean(model.loading);
  $("generate").disabled = !model.loaded || busy;
  $("cancel").disabled = !state.running;
  $("load").disabled = busy;
  setState("busy", busy ? "yes" : "no");
}
