// "Import from this computer": the visitor's own .safetensors checkpoint or diffusers folder,
// converted in the engine's worker (gen.importFile) and stored in this browser; then loaded.
// The files are picked, chosen as a folder or dropped; nothing is uploaded. Or a link to a
// .safetensors file (gen.importUrl), converted as it downloads.
import { $, mb, duration } from "./ui.js";
import { state, model } from "./state.js";
import { loadModel, refreshCached, selectModelUrl } from "./model.js";

let chosen = null; // what importFile takes (a File, a folder's Files, or { path: File }), or a URL string
let importing = null; // the AbortController of the import running

function choose(files, label) {
  chosen = files;
  $("import-chosen").textContent = label;
  $("import-start").disabled = !files || importing !== null;
}

/** Every file under a dropped folder entry, by its path inside that folder. */
async function folderFiles(entry, prefix = "", out = {}) {
  const reader = entry.createReader();
  for (;;) {
    const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
    if (batch.length === 0) return out;
    for (const child of batch) {
      const path = `${prefix}${child.name}`;
      if (child.isDirectory) await folderFiles(child, `${path}/`, out);
      else out[path] = await new Promise((ok, fail) => child.file(ok, fail));
    }
  }
}

async function dropped(event) {
  event.preventDefault();
  $("import-drop").classList.remove("over");
  const entry = event.dataTransfer.items?.[0]?.webkitGetAsEntry?.();
  if (entry?.isDirectory) {
    const files = await folderFiles(entry);
    if (!$("import-name").value) $("import-name").placeholder = entry.name;
    choose(files, `Folder ${entry.name}: ${Object.keys(files).length} files`);
  } else if (event.dataTransfer.files.length === 1) {
    const file = event.dataTransfer.files[0];
    choose(file, `${file.name}: ${mb(file.size)}`);
  } else {
    choose(null, "Drop one .safetensors file, or one folder.");
  }
}

function showProgress({ bytesRead, totalBytes, bytesPerSecond, secondsLeft }) {
  $("import-bar").max = totalBytes;
  $("import-bar").value = bytesRead;
  let text = `${mb(bytesRead)} of ${mb(totalBytes)}`;
  if (bytesPerSecond > 0) text += ` · ${mb(bytesPerSecond)}/s · ${duration(secondsLeft)} left`;
  $("import-text").textContent = text;
}

async function start() {
  if (!chosen || importing || !state.engine) return;
  importing = new AbortController();
  $("import-start").disabled = true;
  $("import-cancel").hidden = false;
  $("import-progress").hidden = false;
  $("import-bar").removeAttribute("value");
  $("import-text").textContent = "Reading the model's headers…";
  $("import-status").textContent = "";
  $("import-notes").replaceChildren();
  const notes = [];
  try {
    const options = {
      quantization: $("import-quant").value,
      predictionType: $("import-prediction").value || undefined,
      name: $("import-name").value.trim() || undefined,
      onProgress: showProgress,
      onNote: (note) => notes.push(note),
      signal: importing.signal,
    };
    const key = typeof chosen === "string" ? await state.engine.importUrl(chosen, options) : await state.engine.importFile(chosen, options);
    $("import-status").textContent = `Imported as ${key}.`;
    // What the converter says, as sd-weights convert prints it: assumptions, tensors kept wider.
    $("import-notes").replaceChildren(...notes.map((note) => Object.assign(document.createElement("li"), { textContent: note })));
    refreshCached();
    if (!model.loading && !state.running) {
      selectModelUrl(key);
      loadModel(key);
    }
  } catch (e) {
    $("import-status").textContent =
      e.name === "AbortError" ? "Import cancelled: nothing was kept." : `Not imported: ${e.message}`;
  } finally {
    importing = null;
    $("import-cancel").hidden = true;
    $("import-progress").hidden = true;
    $("import-start").disabled = !chosen;
  }
}

export function wireImport() {
  $("import-file").addEventListener("change", () => {
    const file = $("import-file").files[0];
    choose(file ?? null, file ? `${file.name}: ${mb(file.size)}` : "Nothing chosen.");
  });
  $("import-folder").addEventListener("change", () => {
    const files = $("import-folder").files;
    const folder = files[0]?.webkitRelativePath.split("/")[0];
    choose(files.length ? files : null, files.length ? `Folder ${folder}: ${files.length} files` : "Nothing chosen.");
  });
  $("import-url").addEventListener("input", () => {
    const url = $("import-url").value.trim();
    choose(url || null, url ? `Link: ${url}` : "Nothing chosen.");
  });
  const drop = $("import-drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => dropped(e).catch((err) => choose(null, `Could not read what was dropped: ${err.message}`)));
  $("import-start").addEventListener("click", start);
  $("import-cancel").addEventListener("click", () => importing?.abort());
}
