// The page: model loading, text to image, image to image and inpainting, the gallery. This
// entry point wires the modules' controls and starts the page; the parts:
//   ui.js        the DOM lookup, formatting, the alert box
//   state.js     the shared state (engine, model, running batch, mode) and the buttons
//   gpu.js       the engine and the "Your GPU" panel
//   model.js     loading models, their defaults, the stored models
//   import.js    importing the visitor's own model from their files
//   tokens.js    the prompts' token counters
//   source.js    the tabs and the source image with its mask (mask.js)
//   generate.js  generation, its progress and preview
//   gallery.js   the images made
// No import cycles: ui.js and state.js import nothing of the page's, and no module imports
// one that imports it back, so no module's top level depends on the order they load in.
import { $, showAlert } from "./ui.js";
import { state, updateButtons } from "./state.js";
import { startEngine, checkGpu, wireGpu } from "./gpu.js";
import { DEFAULT_MODEL, modelKey, selectModelUrl, loadModel, refreshCached, startingModel, wireModel } from "./model.js";
import { countTokens, wireTokens } from "./tokens.js";
import { setMode, wireSource } from "./source.js";
import { wireGenerate } from "./generate.js";
import { wireImport } from "./import.js";

window.sdWebgpu = { get engine() { return state.engine; } }; // for the console (and the tests)

async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return;
  try {
    await navigator.serviceWorker.register("sw.js");
  } catch (e) {
    console.warn("no offline copy: the service worker did not register:", e.message);
  }
}

async function main() {
  wireModel();
  wireGpu();
  wireTokens();
  wireSource();
  wireGenerate();
  wireImport();
  setMode("generate");
  updateButtons();
  countTokens();
  registerServiceWorker();
  selectModelUrl(modelKey(DEFAULT_MODEL));
  if (!(await startEngine())) {
    $("model-status").textContent = "The engine did not start: see “Your GPU” below.";
    return;
  }
  refreshCached();
  const start = await startingModel();
  selectModelUrl(start);
  checkGpu();
  loadModel(start);
}

main().catch((e) => {
  showAlert(`sd-webgpu failed to start: ${e.message ?? e}`);
});
