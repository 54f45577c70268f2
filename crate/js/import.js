// Importing a model from the user's own files: a single-file .safetensors checkpoint or a
// diffusers folder, converted by the engine (crate/src/web/import.rs, the code of
// `sd-weights convert`) and stored in this browser as "local:NAME", which `load` takes.
// Files are read one range at a time (Blob.slice), never whole, and never leave the machine.
// The built-in configs a single file needs are fetched only then, from this package's own
// specs/ folder (scripts/build-wasm.py puts them there). The converter is a wasm module of
// its own (sd_webgpu_import, wasm-pack.toml), loaded on the first import only.

const SPECS = new URL("./specs/", import.meta.url);

function badInput(message) {
  return Object.assign(new Error(message), { code: "bad-input" });
}

/** `{ folder, files: [{ path, blob }] }` from what `importFile` takes: a File, a list of
 *  Files (from a folder picker: paths from their webkitRelativePath, less the folder's own
 *  name, which is `folder`), or a `{ "unet/config.json": Blob, ... }` record. */
export function filesOf(input) {
  if (input instanceof Blob) return { folder: null, files: [{ path: input.name ?? "model.safetensors", blob: input }] };
  let files;
  if (typeof input?.length === "number") {
    files = Array.from(input, (f) => ({ path: f.webkitRelativePath || f.name, blob: f }));
  } else if (input && typeof input === "object") {
    files = Object.entries(input).map(([path, blob]) => ({ path, blob }));
  }
  if (!files || files.length === 0 || !files.every((f) => f.blob instanceof Blob && typeof f.path === "string")) {
    throw badInput("importFile: give a File, a list of Files (a folder's) or a { path: Blob } record");
  }
  // A folder picker names each file "folder/unet/config.json": the folder is the model.
  const first = files[0].path.split("/")[0];
  let folder = null;
  if (files.every((f) => f.path.startsWith(`${first}/`))) {
    folder = first;
    files = files.map((f) => ({ path: f.path.slice(first.length + 1), blob: f.blob }));
  }
  return { folder, files };
}

async function fetched(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

/** The built-in spec files of `family` ("sd15", "sd15-inpaint", "sd21"), by diffusers path. */
async function builtinSpec(family) {
  const index = await (await fetched(new URL("index.json", SPECS))).json();
  if (!index[family]) throw new Error(`no built-in spec for ${family}`);
  const out = {};
  for (const [path, file] of Object.entries(index[family])) {
    out[path] = new Uint8Array(await (await fetched(new URL(file, SPECS))).arrayBuffer());
  }
  return out;
}

/**
 * Converts and stores a model from the user's files; resolves to its key ("local:NAME").
 * `input`: see filesOf. Options: those of the engine's `importModel` (quantization,
 * predictionType, name, chunkMb, onProgress, onNote, signal) and `config`: a diffusers
 * folder's files (as `input`) whose configs and tokenizer a single file converts with,
 * instead of the built-in SD 1.5 / 2.1 ones.
 */
export async function importFiles(input, { config, ...options } = {}) {
  const { folder, files } = filesOf(input);
  const configFiles = config ? filesOf(config).files : null;
  const lists = { files, config: configFiles };
  const describe = (list) => list && list.map(({ path, blob }) => ({ path, size: blob.size }));
  const source = {
    files: describe(files),
    config: describe(configFiles),
    read: async (list, index, start, length) =>
      new Uint8Array(await lists[list][index].blob.slice(start, start + length).arrayBuffer()),
    spec: builtinSpec,
  };
  const { default: init, importModel } = await import("./sd_webgpu_import.js");
  await init();
  return importModel(source, { ...options, name: options.name ?? folder ?? undefined });
}
