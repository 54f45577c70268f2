// The engine and the "Your GPU" panel: starting the package's generator on the engine chosen
// there (remembered in this browser), switching engines, what happens when the engine
// crashes, and the WebGPU adapter's details and self-check. All the model's work runs in
// the npm package's worker (createGenerator({ worker: true }), from www/pkg, which
// scripts/build-wasm.py builds), so the page stays responsive.
import { createGenerator } from "./pkg/index.js";
import { $, setState, showAlert, hideAlert, NO_WEBGPU_ADVICE, webgpuMissing } from "./ui.js";
import { state, model, updateButtons } from "./state.js";
import { fillSchedulers, loadModel, refreshCached, startingModel } from "./model.js";

// ---- the engine ------------------------------------------------------------------------

function engineCrashed(error) {
  model.loaded = false;
  setState("model", "none");
  updateButtons();
  showAlert(
    `The engine stopped (${error.message}). This happens when the GPU is reset ("device lost"), ` +
      "for example after a driver update, when another program needs the GPU, or when it runs out of memory. " +
      "Load the model again to go on; a smaller size or fewer images at once uses less GPU memory.",
    [{ label: "Load the model again", run: () => { hideAlert(); loadModel(); } }],
  );
  $("model-status").textContent = "The engine restarted: load the model again.";
}

// ---- engine and GPU panel -------------------------------------------------------------

const gpuStatus = $("status");
const BACKEND_KEY = "sd-webgpu:backend"; // the engine chosen in "Your GPU", remembered here
let engineKind = null; // "webgpu" or "cpu" once the engine started

function backendChoice() {
  return localStorage.getItem(BACKEND_KEY) ?? "auto";
}

/**
 * Starts the engine on the remembered choice (Generator.create's `backend`: "auto" takes
 * WebGPU on a hardware GPU, the CPU engine without WebGPU or on a software adapter) and shows
 * what it chose. Resolves to whether it started.
 */
export async function startEngine() {
  const choice = backendChoice();
  $("backend").value = choice;
  gpuStatus.textContent = "Starting the engine…";
  delete gpuStatus.dataset.state;
  try {
    await state.engine?.unload(); // the engine chosen before, and its model's GPU memory
    state.engine = null;
    state.engine = await createGenerator({ worker: true, backend: choice, onCrash: engineCrashed });
    const { kind, adapter, reason } = state.engine.backend;
    engineKind = kind;
    const why = reason === "asked for" ? "chosen below" : reason;
    gpuStatus.textContent =
      kind === "webgpu" ? `WebGPU on ${adapter} (${why}).` : `CPU engine, WebAssembly (${why}).`;
    gpuStatus.dataset.state = "ready";
    // The engine's scheduler list; a failure shows when the engine is asked next.
    await fillSchedulers().catch((e) => console.warn("no scheduler list:", e.message));
    return true;
  } catch (e) {
    engineKind = null;
    gpuStatus.textContent = `The engine did not start: ${e.message}`;
    gpuStatus.dataset.state = "error";
    const useCpu = { label: "Use the CPU engine", run: () => switchBackend("cpu") };
    showAlert(e.code === "no-webgpu" ? webgpuMissing(e.message) : `The engine did not start: ${e.message}`, [useCpu]);
    return false;
  }
}

/** Another engine, chosen in "Your GPU": remembered, started, and the model loaded on it. */
async function switchBackend(choice) {
  if (model.loading || state.running) {
    $("backend").value = backendChoice();
    return;
  }
  localStorage.setItem(BACKEND_KEY, choice);
  hideAlert();
  model.loaded = false;
  setState("model", "none");
  updateButtons();
  if (!(await startEngine())) return;
  checkGpu();
  // The model it had, or (the first engine never started) the one the page starts with.
  if (model.key) loadModel(model.key);
  else loadModel(await startingModel());
}

function showField(field, text) {
  $("adapter").querySelector(`[data-field="${field}"]`).textContent = text;
}

function mib(bytes) {
  return bytes === undefined ? "?" : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

/**
 * Shows what WebGPU adapter the browser has, if any, and on the WebGPU engine checks that
 * burn's kernels compute right there. Without WebGPU it is a note: the CPU engine works.
 */
export async function checkGpu() {
  let info;
  try {
    info = await state.engine.call("adapterInfo");
  } catch (e) {
    const why = navigator.gpu ? "this browser offers WebGPU to pages but not to Web Workers" : e.message;
    $("gpu-note").textContent = `No WebGPU here (${why}): images are made on the CPU. ${NO_WEBGPU_ADVICE}`;
    $("gpu-note").hidden = false;
    $("adapter").hidden = true;
    return;
  }
  showField("name", info.name);
  showField("isFallbackAdapter", info.isFallbackAdapter ? "yes (slow, CPU)" : "no");
  showField("shaderF16", info.shaderF16 ? "yes" : "no (f32 path)");
  showField("maxBufferSize", mib(info.limits.maxBufferSize));
  showField("maxStorageBufferBindingSize", mib(info.limits.maxStorageBufferBindingSize));
  showField("maxStorageBuffersPerShaderStage", String(info.limits.maxStorageBuffersPerShaderStage));
  showField("maxComputeWorkgroupStorageSize", `${info.limits.maxComputeWorkgroupStorageSize / 1024} KiB`);
  showField("maxComputeInvocationsPerWorkgroup", String(info.limits.maxComputeInvocationsPerWorkgroup));
  $("adapter").hidden = false;
  $("gpu-note").hidden = true;
  if (engineKind !== "webgpu") {
    showField("selfCheck", "not run: the CPU engine is in use");
    return;
  }
  showField("selfCheck", "running…");
  try {
    const err = await state.engine.call("gpuSelfCheck");
    const ok = err < 1e-3;
    showField("selfCheck", ok ? `ok (max error ${err.toExponential(1)})` : `WRONG (max error ${err})`);
    if (!ok) {
      gpuStatus.textContent = "The GPU computed wrong results.";
      gpuStatus.dataset.state = "error";
      showAlert("Your GPU computed wrong results in a quick check: images would be garbage. Use the CPU engine, " +
        "another browser, or update the graphics driver.", [{ label: "Use the CPU engine", run: () => switchBackend("cpu") }]);
    }
  } catch (e) {
    showField("selfCheck", `failed: ${e.message}`);
  }
}

export function wireGpu() {
  $("backend").addEventListener("change", () => switchBackend($("backend").value));
}
