// Generation: the settings read from the form, the batch run with its progress bar and live
// preview, Cancel (and Esc), Ctrl+Enter, the seed buttons, and what each failure means.
import { $, duration, showAlert, hideAlert } from "./ui.js";
import { state, model, updateButtons } from "./state.js";
import { editor } from "./source.js";
import { addToGallery } from "./gallery.js";

let lastSeed = null; // the seed of the last image made, for "Reuse"

function readNumber(id) {
  const v = Number($(id).value);
  if (!Number.isFinite(v)) throw new Error(`${$(id).labels[0]?.textContent ?? id}: not a number`);
  return v;
}

// Seeds are u64 (0 to 2^64 − 1), more than a JS number holds exactly: the page keeps them
// as BigInt and passes them to the engine as decimal strings.
const MAX_SEED = 2n ** 64n - 1n;

/** The seed field: null for −1 (a random seed per image), else a BigInt. */
function readSeed(batch) {
  const text = $("seed").value.trim();
  if (text === "-1" || text === "") return null;
  if (!/^\d+$/.test(text) || BigInt(text) > MAX_SEED) {
    throw new Error(`Seed: a whole number from 0 to ${MAX_SEED}, or −1 for a random one.`);
  }
  const seed = BigInt(text);
  if (seed + BigInt(batch) - 1n > MAX_SEED) {
    throw new Error(`Seed: ${batch} images from seed ${seed} would pass ${MAX_SEED}, the largest seed; pick a smaller one.`);
  }
  return seed;
}

function settings() {
  const scheduler = $("scheduler").value;
  const s = {
    mode: state.mode,
    prompt: $("prompt").value,
    negativePrompt: $("negative").value,
    steps: readNumber("steps"),
    guidanceScale: readNumber("guidance"),
    scheduler,
    ownScheduler: !scheduler,
    width: readNumber("width"),
    height: readNumber("height"),
    batch: Math.max(1, Math.min(16, Math.round(readNumber("batch")))),
    strength: readNumber("strength"),
    preview: $("live-preview").checked,
  };
  s.seed = readSeed(s.batch);
  return s;
}

function showPreview(image) {
  const canvas = $("preview");
  if (canvas.width !== image.width || canvas.height !== image.height) {
    canvas.width = image.width;
    canvas.height = image.height;
    canvas.style.aspectRatio = `${image.width} / ${image.height}`;
  }
  canvas.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(image.data), image.width, image.height), 0, 0);
}

async function generate() {
  if (state.running || !model.loaded) return;
  let s;
  try {
    s = settings();
  } catch (e) {
    $("create-status").textContent = e.message;
    return;
  }
  if (state.mode !== "generate" && !editor.hasImage) {
    $("create-status").textContent = "Upload a source image first (or send one from the gallery).";
    return;
  }
  if (state.mode === "inpaint" && editor.coverage() === 0) {
    $("create-status").textContent = "Paint the mask first: the painted parts are the ones redrawn.";
    $("mask-canvas").focus();
    return;
  }
  hideAlert();
  state.running = new AbortController();
  const { signal } = state.running;
  updateButtons();
  $("progress").hidden = false;
  $("progress-bar").value = 0;
  $("create-status").textContent = "";
  const image = state.mode === "generate" ? null : editor.imageData();
  const mask = state.mode === "inpaint" ? editor.maskData() : null;
  let made = 0;
  try {
    for (let i = 0; i < s.batch && !signal.aborted; i++) {
      const options = {
        prompt: s.prompt,
        negativePrompt: s.negativePrompt,
        steps: s.steps,
        guidanceScale: s.guidanceScale,
        previewEvery: s.preview ? 1 : 0,
      };
      if (!s.ownScheduler) options.scheduler = s.scheduler;
      if (s.seed !== null) options.seed = String(s.seed + BigInt(i));
      if (image) {
        options.image = { width: image.width, height: image.height, data: image.data };
        options.strength = s.strength;
      } else {
        options.width = s.width;
        options.height = s.height;
      }
      if (mask) options.mask = { width: mask.width, height: mask.height, data: mask.data };
      const started = performance.now();
      $("progress-text").textContent = `Image ${i + 1} of ${s.batch}: encoding the prompt…`;
      const result = await state.engine[state.mode]({
        ...options,
        signal,
        onStep: ({ step, total, preview }) => {
          const elapsed = (performance.now() - started) / 1000;
          const perStep = elapsed / step;
          $("progress-bar").value = (i + step / total) / s.batch;
          const eta = perStep * (total - step) + perStep * total * (s.batch - i - 1);
          $("progress-text").textContent =
            `Image ${i + 1} of ${s.batch} · step ${step} / ${total} · ${perStep.toFixed(1)} s/step · ${duration(eta)} left`;
          if (preview) showPreview(preview);
        },
      });
      showPreview(result);
      lastSeed = result.seed;
      $("seed-reuse").disabled = false;
      made++;
      addToGallery(result, {
        ...s,
        seed: result.seed,
        width: result.width,
        height: result.height,
        ms: result.timings?.totalMs,
      });
    }
    $("create-status").textContent = made === 1 ? "Done: 1 image." : `Done: ${made} images.`;
  } catch (e) {
    if (e.name === "AbortError") {
      $("create-status").textContent = `Cancelled${made ? ` after ${made} image${made > 1 ? "s" : ""}` : ""}.`;
    } else if (e.code === "crashed") {
      $("create-status").textContent = "The engine stopped: see the message above.";
    } else if (e.code === "device-lost") {
      // The engine makes a new device on the next call and loads the model there again
      // (from this browser's storage): nothing to reload by hand.
      showAlert(
        "The GPU device was lost (the graphics driver was reset, or the browser took the GPU back), so this " +
          "image could not be finished. Generate again: the next run starts on a new GPU device and loads the " +
          "model again from this browser's storage.",
      );
    } else if (e.code === "out-of-memory") {
      showAlert(
        "The GPU ran out of memory. Try a smaller size or fewer images at once, or close other tabs " +
          "that use the GPU; the next run starts on a fresh GPU device.",
      );
    } else if (e.code === "gpu") {
      showAlert(`The GPU failed: ${e.message}. Try a smaller size, or reload the page.`, [
        { label: "Reload the page", run: () => location.reload() },
      ]);
    } else {
      $("create-status").textContent = `Could not generate: ${e.message}`;
    }
  } finally {
    state.running = null;
    $("progress").hidden = true;
    updateButtons();
  }
}

function cancel() {
  state.running?.abort();
}

export function wireGenerate() {
  $("seed-random").addEventListener("click", () => {
    $("seed").value = -1;
  });
  $("seed-reuse").addEventListener("click", () => {
    if (lastSeed !== null) $("seed").value = lastSeed;
  });

  $("create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    generate();
  });
  $("cancel").addEventListener("click", cancel);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      generate();
    } else if (e.key === "Escape" && state.running) {
      cancel();
    }
  });
}
