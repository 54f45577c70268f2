// Loads the wasm package and shows what the WebGPU adapter offers.
import init, { adapterInfo, gpuSelfCheck } from "./pkg/sd_webgpu.js";

const status = document.getElementById("status");
const adapterList = document.getElementById("adapter");

function show(field, text) {
  adapterList.querySelector(`[data-field="${field}"]`).textContent = text;
}

function mib(bytes) {
  return bytes === undefined ? "?" : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

async function main() {
  await init();
  let info;
  try {
    info = await adapterInfo();
  } catch (e) {
    status.textContent =
      e.code === "no-webgpu"
        ? `WebGPU is not available: ${e.message}`
        : `Could not query the GPU: ${e.message}`;
    status.dataset.state = "error";
    return;
  }
  show("name", info.name);
  show("isFallbackAdapter", info.isFallbackAdapter ? "yes (slow, CPU)" : "no");
  show("shaderF16", info.shaderF16 ? "yes" : "no (f32 path)");
  show("maxBufferSize", mib(info.limits.maxBufferSize));
  show("maxStorageBufferBindingSize", mib(info.limits.maxStorageBufferBindingSize));
  show("maxStorageBuffersPerShaderStage", String(info.limits.maxStorageBuffersPerShaderStage));
  show("maxComputeWorkgroupStorageSize", `${info.limits.maxComputeWorkgroupStorageSize / 1024} KiB`);
  show("maxComputeInvocationsPerWorkgroup", String(info.limits.maxComputeInvocationsPerWorkgroup));
  adapterList.hidden = false;
  status.textContent = "WebGPU adapter found.";
  status.dataset.state = "adapter";

  try {
    const err = await gpuSelfCheck();
    const ok = err < 1e-3;
    show("selfCheck", ok ? `ok (max error ${err.toExponential(1)})` : `WRONG (max error ${err})`);
    status.textContent = ok ? "WebGPU works: burn kernels ran on your GPU." : "The GPU computed wrong results.";
    status.dataset.state = ok ? "ready" : "error";
  } catch (e) {
    show("selfCheck", `failed: ${e.message}`);
    status.textContent = `The GPU could not run sd-webgpu's kernels: ${e.message}`;
    status.dataset.state = "error";
  }
}

main().catch((e) => {
  status.textContent = `sd-webgpu failed to start: ${e.message ?? e}`;
  status.dataset.state = "error";
});
