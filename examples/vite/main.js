// sd-webgpu with a bundler: Vite finds the package's worker and .wasm through
// new URL(…, import.meta.url). The model is a converted folder under public/ (copy
// www/models/shapes to public/models/shapes), or ?model=<a model URL or hf:user/repo>.
import { createGenerator } from "sd-webgpu";
import { readParameters } from "sd-webgpu/png";

const $ = (id) => document.getElementById(id);
const model = new URLSearchParams(location.search).get("model") ?? "models/shapes";

try {
  const gen = await createGenerator({
    model,
    worker: true,
    onProgress: ({ phase, loaded, total }) => {
      $("status").textContent = phase === "download" ? `Downloading ${loaded} of ${total} bytes…` : "Preparing…";
    },
  });
  $("prompt").value = gen.modelInfo.defaults.prompt ?? "a red circle on a blue background";
  $("status").textContent = `Ready: ${gen.backend.kind} engine.`;
  $("prompt").disabled = $("generate").disabled = false;
  $("form").onsubmit = async (event) => {
    event.preventDefault();
    $("generate").disabled = true;
    $("status").textContent = "Generating…";
    try {
      const image = await gen.generate({
        prompt: $("prompt").value,
        seed: 1,
        onStep: ({ step, total }) => {
          $("status").textContent = `Step ${step} of ${total}`;
        },
      });
      const png = await image.toBlob({ parameters: true });
      $("image").src = URL.createObjectURL(png);
      $("parameters").textContent = await readParameters(png);
      $("status").textContent = `Done in ${Math.round(image.timings.totalMs)} ms.`;
    } catch (e) {
      $("status").textContent = `Failed: ${e.message} (${e.code})`;
    } finally {
      $("generate").disabled = false;
    }
  };
} catch (e) {
  $("status").textContent = `The model did not load: ${e.message} (${e.code})`;
}
