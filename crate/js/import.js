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

function ioError(message) {
  return Object.assign(new Error(message), { code: "io" });
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

const sliced = async (blob, start, length) => new Uint8Array(await blob.slice(start, start + length).arrayBuffer());

/** What the engine's `importModel` reads (its ImportSource): `files` ({ path, size }) read by
 *  `read(index, start, length)`, and the files of `config` (see filesOf) if given. */
function importSource(files, read, config, plan) {
  const configFiles = config ? filesOf(config).files : null;
  return {
    files,
    config: configFiles && configFiles.map(({ path, blob }) => ({ path, size: blob.size })),
    read: (list, index, start, length) =>
      list === "config" ? sliced(configFiles[index].blob, start, length) : read(index, start, length),
    plan,
    spec: builtinSpec,
  };
}

/** The converter module, loaded on the first import. */
async function importer() {
  const module = await import("./sd_webgpu_import.js");
  await module.default();
  return module.importModel;
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
  const source = importSource(
    files.map(({ path, blob }) => ({ path, size: blob.size })),
    (index, start, length) => sliced(files[index].blob, start, length),
    config,
  );
  const importModel = await importer();
  return importModel(source, { ...options, name: options.name ?? folder ?? undefined });
}

/** `fetch`, with a network failure (or a response the page may not read: CORS) and an HTTP
 *  error status named with the URL. An abort stays an AbortError. */
async function get(url, { range, signal } = {}) {
  let response;
  try {
    response = await fetch(url, { headers: range ? { Range: `bytes=${range[0]}-${range[1] - 1}` } : {}, signal });
  } catch (e) {
    if (e?.name === "AbortError") throw Object.assign(new Error("the import was cancelled"), { name: "AbortError", code: "cancelled" });
    throw ioError(`${url}: the request failed (a network error, or the server does not let this page read the file: CORS)`);
  }
  if (!response.ok) throw ioError(`${url}: HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`);
  return response;
}

/** Reads `[start, start + length)` of a file over HTTP, one range request each time. */
class RangeReader {
  constructor(url, signal) {
    this.url = url;
    this.signal = signal;
  }

  async read(start, length) {
    if (length === 0) return new Uint8Array(0);
    const response = await get(this.url, { range: [start, start + length], signal: this.signal });
    if (response.status !== 206) {
      response.body?.cancel().catch(() => {});
      throw ioError(`${this.url}: the server stopped answering range requests (HTTP ${response.status})`);
    }
    return new Uint8Array(await response.arrayBuffer());
  }
}

/** The most bytes StreamReader keeps for later (see there). */
const KEEP_BYTES = 512 << 20;

/**
 * Reads a file from a streamed response (a server that refuses ranges), in file order.
 * The converter reads by component (text encoder, UNet, VAE: crate/src/convert/converter.rs),
 * not in file order, so the tensors the stream passes before they are asked for are kept until
 * then: only those of the converter's plan (`plan`), never the whole file. Where the file is
 * laid out in another order, that could be most of it: past KEEP_BYTES nothing more is kept,
 * and a tensor the stream passed unkept is read by downloading again from the start (a
 * safetensors file written by the `safetensors` library is in name order: text encoder, VAE,
 * UNet, so only the VAE is kept, and the file is downloaded once). Before the plan (the
 * header's reads) everything read is kept: that is the header only.
 */
class StreamReader {
  constructor(url, response, signal) {
    this.url = url;
    this.signal = signal;
    this.reader = response.body.getReader();
    this.kept = 0; // bytes kept for later
    this.pos = 0; // bytes taken from the stream
    this.left = new Uint8Array(0); // what the last piece has left
    this.head = new Uint8Array(0); // everything read before the plan
    this.wanted = null; // the plan's ranges by start: { start, end, bytes, done }
  }

  plan(ranges) {
    this.wanted = ranges.map(([, start, length]) => ({ start, end: start + length, bytes: null, done: false }));
    this.wanted.sort((a, b) => a.start - b.start);
    this.head = null;
  }

  /** Takes the stream up to byte `to`, handing each piece to `sink(at, bytes)`. */
  async advance(to, sink) {
    while (this.pos < to) {
      if (this.left.length === 0) {
        const { done, value } = await this.reader.read();
        if (done) throw ioError(`${this.url}: the download ended at byte ${this.pos}, before byte ${to}`);
        this.left = value;
      }
      const n = Math.min(this.left.length, to - this.pos);
      sink(this.pos, this.left.subarray(0, n));
      this.pos += n;
      this.left = this.left.subarray(n);
    }
  }

  /** Keeps the bytes of wanted ranges the stream passes before they are asked for, up to
   *  KEEP_BYTES (a range is kept whole or not at all). */
  keep(at, bytes, except = null) {
    const end = at + bytes.length;
    for (const w of this.wanted) {
      if (w === except || w.done || w.skipped || w.end <= at || w.start >= end) continue;
      if (!w.bytes) {
        // The first of its bytes: kept whole, or passed by (read again by a new download).
        if (at > w.start || this.kept + (w.end - w.start) > KEEP_BYTES) {
          w.skipped = true;
          continue;
        }
        w.bytes = new Uint8Array(w.end - w.start);
        this.kept += w.end - w.start;
      }
      const from = Math.max(at, w.start);
      w.bytes.set(bytes.subarray(from - at, Math.min(end, w.end) - at), from - w.start);
    }
  }

  async read(start, length) {
    const end = start + length;
    if (this.wanted === null) {
      // The header: kept whole, since it is read twice (its length, then itself).
      if (end > this.pos) {
        const head = new Uint8Array(end);
        head.set(this.head);
        await this.advance(end, (at, bytes) => head.set(bytes, at));
        this.head = head;
      }
      return this.head.slice(start, end);
    }
    // The converter reads each range in pieces, in order: a piece ending its range ends it.
    const current = this.wanted.find((w) => !w.done && w.start <= start && end <= w.end);
    if (current?.bytes) {
      const bytes = current.bytes.slice(start - current.start, end - current.start);
      if (end === current.end) {
        this.kept -= current.end - current.start;
        Object.assign(current, { bytes: null, done: true });
      }
      return bytes;
    }
    if (start < this.pos) await this.restart();
    await this.advance(start, (at, bytes) => this.keep(at, bytes));
    const out = new Uint8Array(length);
    await this.advance(end, (at, bytes) => {
      out.set(bytes, at - start);
      this.keep(at, bytes, current); // the same bytes, if another range wants them too
    });
    if (current && end === current.end) current.done = true;
    return out;
  }

  /** Downloads the file again from the start: the stream passed bytes it could not keep. */
  async restart() {
    this.cancel();
    const response = await get(this.url, { signal: this.signal });
    this.reader = response.body.getReader();
    this.pos = 0;
    this.left = new Uint8Array(0);
    for (const w of this.wanted) w.skipped = false;
  }

  cancel() {
    this.reader.cancel().catch(() => {});
  }
}

/** The file name at the end of `url`'s path ("model.safetensors"), or "model.safetensors". */
function fileName(url) {
  const last = new URL(url).pathname.split("/").pop() ?? "";
  let name = last;
  try {
    name = decodeURIComponent(last);
  } catch {
    // Not valid %-escapes: the name as it is.
  }
  return name.replaceAll("/", "_") || "model.safetensors";
}

/**
 * Converts and stores a single-file `.safetensors` checkpoint served at `url` while it is
 * read; resolves to its key ("local:NAME", NAME by default the file's name less
 * `.safetensors`). With HTTP range requests (a 206 to the first, which reads 8 bytes) only
 * the header and then the tensors the converter asks for are fetched; a server that answers
 * 200 instead is read as a stream, in one download (or two for a file laid out in an unusual
 * order: StreamReader). The file is never stored, nor held whole in memory. Options: those of `importFiles`.
 */
export async function importUrl(url, { config, ...options } = {}) {
  let href;
  try {
    href = new URL(url, globalThis.location?.href).href;
  } catch {
    throw badInput(`importUrl: ${url} is not a URL`);
  }
  const { signal } = options;
  const first = await get(href, { range: [0, 8], signal });
  let reader, size;
  if (first.status === 206) {
    // "bytes 0-7/SIZE": the file's size (a server letting a page read ranges exposes it).
    size = Number(/\/(\d+)$/.exec(first.headers.get("content-range") ?? "")?.[1]);
    first.body?.cancel().catch(() => {});
    if (!Number.isFinite(size)) throw ioError(`${href}: the server's range answer gives no file size (Content-Range)`);
    reader = new RangeReader(href, signal);
  } else {
    size = Number(first.headers.get("content-length"));
    if (!first.headers.has("content-length") || !Number.isFinite(size)) {
      first.body?.cancel().catch(() => {});
      throw ioError(`${href}: the server gives neither ranges nor the file's size (Content-Length)`);
    }
    reader = new StreamReader(href, first, signal);
  }
  const source = importSource(
    [{ path: fileName(href), size }],
    (_, start, length) => reader.read(start, length),
    config,
    reader.plan && ((ranges) => reader.plan(ranges)),
  );
  try {
    const importModel = await importer();
    return await importModel(source, options);
  } finally {
    reader.cancel?.();
  }
}
