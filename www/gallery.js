// The gallery: every image made, with its settings, and its buttons (Download PNG with the
// A1111 parameters text, Reuse settings, To image to image, To inpaint, Delete). It lives
// in the tab only.
import { encodePng } from "./pkg/png.js";
import { $ } from "./ui.js";
import { countTokens } from "./tokens.js";
import { setMode, setSource } from "./source.js";

let galleryId = 0;

export function addToGallery(result, params) {
  const imageData = new ImageData(new Uint8ClampedArray(result.data), result.width, result.height);
  const li = $("gallery-item").content.firstElementChild.cloneNode(true);
  li.dataset.id = String(++galleryId);
  li.dataset.seed = String(params.seed);
  const canvas = li.querySelector("canvas");
  canvas.width = imageData.width;
  canvas.height = imageData.height;
  canvas.getContext("2d").putImageData(imageData, 0, 0);
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${params.prompt} (seed ${params.seed})`);
  li.querySelector(".caption").textContent = params.prompt || "(no prompt)";
  const kind = { generate: "", img2img: " · image to image", inpaint: " · inpaint" }[params.mode];
  li.querySelector(".meta").textContent =
    `seed ${params.seed} · ${params.width}×${params.height} · ${params.steps} steps${kind}` +
    (params.ms ? ` · ${(params.ms / 1000).toFixed(1)} s` : "");
  const parameters = result.parameters;
  li.querySelector("figure").title = parameters;
  li.addEventListener("click", async (e) => {
    const action = e.target.closest("button")?.dataset.action;
    if (action === "download") {
      const png = await encodePng(imageData, parameters);
      const url = URL.createObjectURL(new Blob([png], { type: "image/png" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `sd-webgpu-${params.seed}.png`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } else if (action === "reuse") {
      $("prompt").value = params.prompt;
      $("negative").value = params.negativePrompt;
      $("steps").value = params.steps;
      $("guidance").value = params.guidanceScale;
      $("scheduler").value = params.ownScheduler ? "" : params.scheduler;
      $("seed").value = params.seed;
      if (params.mode === "generate") {
        $("width").value = params.width;
        $("height").value = params.height;
      }
      countTokens();
      $("prompt").focus();
    } else if (action === "img2img" || action === "inpaint") {
      setSource(imageData);
      setMode(action);
      $("create-panel").scrollIntoView({ behavior: "smooth", block: "start" });
      (action === "inpaint" ? $("mask-canvas") : $("prompt")).focus({ preventScroll: true });
    } else if (action === "delete") {
      li.remove();
      $("gallery-empty").hidden = $("gallery").children.length > 0;
    }
  });
  $("gallery").prepend(li);
  $("gallery-empty").hidden = true;
}
