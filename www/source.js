// The tabs (text to image, image to image, inpaint) and the source image with its mask
// editor (mask.js).
import { MaskEditor, coverImage } from "./mask.js";
import { $, setState } from "./ui.js";
import { state, model } from "./state.js";

export const editor = new MaskEditor({
  imageCanvas: $("source-canvas"),
  maskCanvas: $("mask-canvas"),
  cursor: $("brush-cursor"),
  onChange: () => {},
});
editor.onBrushKey = (d) => {
  const s = $("brush-size");
  s.value = Math.max(1, Math.min(64, Number(s.value) + d * Math.max(1, Math.round(s.value / 4))));
  s.dispatchEvent(new Event("input"));
};
editor.onEraserKey = () => setEraser(!editor.eraser);

function setEraser(on) {
  editor.eraser = on;
  $("tool-brush").setAttribute("aria-pressed", String(!on));
  $("tool-eraser").setAttribute("aria-pressed", String(on));
}

export function setMode(next) {
  state.mode = next;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.mode === next;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    if (selected) $("create-form").setAttribute("aria-labelledby", tab.id);
  }
  const image = next !== "generate";
  $("source").hidden = !image;
  $("mask-tools").hidden = next !== "inpaint";
  editor.enabled = next === "inpaint";
  $("mask-canvas").classList.toggle("painting", next === "inpaint");
  $("mask-canvas").style.visibility = next === "inpaint" ? "visible" : "hidden";
  $("strength").value = next === "inpaint" ? 1 : Math.min(Number($("strength").value), 0.75);
  $("strength").dispatchEvent(new Event("input"));
  syncSizeFields();
  setState("mode", next);
}

/** In the image modes the output has the source image's size. */
function syncSizeFields() {
  const image = state.mode !== "generate" && editor.hasImage;
  for (const id of ["width", "height"]) $(id).disabled = state.mode !== "generate";
  if (image) {
    $("width").value = editor.width;
    $("height").value = editor.height;
  }
}

export function setSource(imageData) {
  editor.setImage(imageData);
  $("source-empty").hidden = true;
  $("editor").classList.add("has-image");
  $("editor").style.aspectRatio = `${imageData.width} / ${imageData.height}`;
  syncSizeFields();
}

/** An uploaded picture, scaled to the model's size (its longer side) and cropped to whole units. */
async function uploadSource(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (_) {
    $("create-status").textContent = `${file.name} is not an image this browser can read.`;
    return;
  }
  // Before any model is loaded: SD's 512 pixels and the VAE's step of 8.
  const size = model.info ? Math.max(model.info.width, model.info.height) : 512;
  const unit = model.info?.sizeStep ?? 8;
  const scale = size / Math.max(bitmap.width, bitmap.height);
  const w = Math.max(unit, Math.round((bitmap.width * scale) / unit) * unit);
  const h = Math.max(unit, Math.round((bitmap.height * scale) / unit) * unit);
  setSource(coverImage(bitmap, w, h));
  bitmap.close();
  $("create-status").textContent = `Source image: ${file.name}, resized to ${w}×${h}.`;
}

export function wireSource() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => setMode(tab.dataset.mode));
    tab.addEventListener("keydown", (e) => {
      const d = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (!d) return;
      const enabled = tabs.filter((t) => !t.disabled);
      const next = enabled[(enabled.indexOf(tab) + d + enabled.length) % enabled.length];
      setMode(next.dataset.mode);
      next.focus();
    });
  }

  $("source-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) uploadSource(file);
    e.target.value = "";
  });
  $("editor").addEventListener("dragover", (e) => e.preventDefault());
  $("editor").addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer.files[0];
    if (file) uploadSource(file);
  });

  $("brush-size").addEventListener("input", () => {
    editor.brushSize = Number($("brush-size").value);
    $("brush-size-value").textContent = `${editor.brushSize} px`;
  });
  $("tool-brush").addEventListener("click", () => setEraser(false));
  $("tool-eraser").addEventListener("click", () => setEraser(true));
  $("mask-clear").addEventListener("click", () => editor.clear());
  $("mask-invert").addEventListener("click", () => editor.invert());
  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
  });
}
