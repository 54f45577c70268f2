// Downloading and storage of converted models: the one module that fetches model files and
// owns the IndexedDB schema. Rust (crate/src/web/load.rs) decides what to fetch and checks
// every file's sha256 before it is stored; the page and the worker ask through the engine
// (`fetchManifest`, `Generator.cachedModels`, `Generator.deleteCachedModel`). An import
// (crate/src/web/import.rs) stores here too: its chunks as they are made, its model entry last.
//
// Database "sd-webgpu", version 1:
// - store "blobs": file contents keyed by their sha256 (so a chunk shared by two models is
//   stored once, and a damaged entry is caught by the loader's hash check);
// - store "models": per model URL (`local:NAME` for an imported one), { url, manifest (its
//   text), shas (every file it needs), bytes, stored (ms since the epoch) }. A model is usable
//   offline once all its blobs are stored.

const DB_NAME = "sd-webgpu";
const DB_VERSION = 1;

let opening = null;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function db() {
  if (!opening) {
    if (typeof indexedDB === "undefined") return Promise.resolve(null);
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      req.result.createObjectStore("blobs");
      req.result.createObjectStore("models");
    };
    opening = request(req).catch(() => null); // private windows may refuse: work uncached
  }
  return opening;
}

async function store(name, mode) {
  const d = await db();
  return d ? d.transaction(name, mode).objectStore(name) : null;
}

export async function cacheGet(sha256) {
  const s = await store("blobs", "readonly");
  if (!s) return undefined;
  const value = await request(s.get(sha256));
  return value === undefined ? undefined : new Uint8Array(value);
}

export async function cacheHas(sha256) {
  const s = await store("blobs", "readonly");
  return s ? (await request(s.count(sha256))) > 0 : false;
}

export async function cachePut(sha256, bytes) {
  const s = await store("blobs", "readwrite");
  if (!s) return false;
  try {
    await request(s.put(bytes.slice().buffer, sha256));
    return true;
  } catch (e) {
    if (e && e.name === "QuotaExceededError") {
      const err = new Error("the browser's storage is full: free space or delete a cached model, then load again");
      err.code = "quota";
      throw err;
    }
    throw e;
  }
}

async function cacheGetModel(url) {
  const s = await store("models", "readonly");
  return s ? await request(s.get(url)) : undefined;
}

// The manifest text stored with model `url`, or undefined.
export async function storedManifest(url) {
  return (await cacheGetModel(url).catch(() => undefined))?.manifest;
}

export async function cachePutModel(url, manifestText, shas, bytes) {
  const s = await store("models", "readwrite");
  if (s) await request(s.put({ url, manifest: manifestText, shas, bytes, stored: Date.now() }, url));
}

// [{ url, bytes, stored }] of the models stored.
export async function cacheListModels() {
  const s = await store("models", "readonly");
  if (!s) return [];
  const all = await request(s.getAll());
  return all.map(({ url, bytes, stored }) => ({ url, bytes, stored }));
}

// Deletes a model and every blob no other stored model needs.
export async function cacheDeleteModel(url) {
  const models = await store("models", "readonly");
  if (!models) return false;
  const all = await request(models.getAll());
  const target = all.find((m) => m.url === url);
  if (!target) return false;
  const keep = new Set(all.filter((m) => m.url !== url).flatMap((m) => m.shas));
  const d = await db();
  const tx = d.transaction(["blobs", "models"], "readwrite");
  for (const sha of target.shas) if (!keep.has(sha)) tx.objectStore("blobs").delete(sha);
  tx.objectStore("models").delete(url);
  await new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
  });
  return true;
}

// Deletes the blobs of `shas` that no stored model needs: what an import that failed or was
// cancelled had stored before its model was listed.
export async function cacheDropUnlisted(shas) {
  const models = await store("models", "readonly");
  if (!models) return;
  const keep = new Set((await request(models.getAll())).flatMap((m) => m.shas));
  const d = await db();
  const tx = d.transaction("blobs", "readwrite");
  for (const sha of shas) if (!keep.has(sha)) tx.objectStore("blobs").delete(sha);
  await new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
  });
}

// Bytes free for this origin (undefined when the browser does not say), after asking for
// persistent storage so the browser does not evict the model under pressure.
export async function storageFree() {
  const storage = globalThis.navigator && navigator.storage;
  if (!storage || !storage.estimate) return undefined;
  // Under WebDriver, headless Chrome stalls the page on persist() (measured: the renderer
  // stops answering for 30 s), so automated browsers skip the request.
  if (storage.persist && !navigator.webdriver) {
    try {
      await storage.persist();
    } catch (_) {
      // not granted: the cache still works, it may just be evicted
    }
  }
  const { quota, usage } = await storage.estimate();
  return quota === undefined ? undefined : quota - (usage || 0);
}

/**
 * The bytes of `url` (a Uint8Array), read as they arrive: `onBytes(n)` after each piece, with
 * the bytes received so far, so a 100 MB chunk shows progress while it downloads.
 * Network failures and aborts reject with fetch's own error (an abort keeps its name
 * "AbortError"); an HTTP error rejects with an Error carrying `status`.
 */
export async function download(url, signal, onBytes) {
  const response = await fetch(url, signal ? { signal } : {});
  if (!response.ok) {
    const e = new Error(`HTTP ${response.status}`);
    e.status = response.status;
    throw e;
  }
  if (!response.body) return new Uint8Array(await response.arrayBuffer());
  const length = Number(response.headers.get("content-length")) || 0;
  const reader = response.body.getReader();
  const pieces = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    pieces.push(value);
    received += value.length;
    onBytes?.(received);
  }
  if (pieces.length === 1 && (!length || length === received)) return pieces[0];
  const out = new Uint8Array(received);
  let at = 0;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

/**
 * The text of the manifest of the model at `url` (fetched from `manifestUrl`): from the
 * network, else (offline, or the server gone) the copy stored with the model. Without either
 * it rejects with the network's error, as `download` does.
 */
export async function manifestText(url, manifestUrl, signal) {
  let networkError;
  try {
    return new TextDecoder().decode(await download(manifestUrl, signal));
  } catch (e) {
    if (e?.name === "AbortError") throw e;
    networkError = e;
  }
  const stored = await storedManifest(url);
  if (stored) return stored;
  throw networkError;
}
