// Service worker: keeps the page and the wasm engine in the Cache API so that, once loaded,
// the page reloads and works without a network. Model weights are not kept here: the engine
// stores them in IndexedDB by sha256 (crate/js/storage.js), so chunk and tokenizer files
// pass straight through.
//
// Strategy: network first (a rebuilt page or engine is picked up on the next reload), the
// cached copy when the network fails. Every successful same-origin GET refreshes the cache,
// and model manifests (small) are kept too, from any origin, for the page's defaults.

const CACHE = "sd-webgpu-v1";

// The app shell: the page's own files here; the npm package's modules and wasm (pkg/) are
// read at install time from its package.json ("files"), and its JS snippets
// (pkg/snippets/<crate>-<hash>/..., hashed names) from the import lines of pkg/sd_webgpu.js.
const SHELL = [
  "./",
  "index.html",
  "style.css",
  // The page's modules (app.js imports the others).
  "app.js",
  "ui.js",
  "state.js",
  "gpu.js",
  "model.js",
  "import.js",
  "tokens.js",
  "source.js",
  "generate.js",
  "gallery.js",
  "mask.js",
  "icon.svg",
];

/** The package's modules and wasm: what its package.json ships, less types and texts, and
 *  less the importer's module (sd_webgpu_import, 0.9 MB gzipped), which only an import of the
 *  visitor's own model loads: it is kept when first fetched, like the built-in configs. */
async function packageFiles() {
  const response = await fetch("pkg/package.json", { cache: "no-cache" });
  const { files } = await response.json();
  return files.filter((f) => /\.(js|wasm)$/.test(f) && !f.startsWith("sd_webgpu_import")).map((f) => `pkg/${f}`);
}

async function snippets() {
  const response = await fetch("pkg/sd_webgpu.js", { cache: "no-cache" });
  const text = await response.text();
  return [...text.matchAll(/from\s+['"]\.\/(snippets\/[^'"]+)['"]/g)].map((m) => `pkg/${m[1]}`);
}

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      const files = [...SHELL, ...(await packageFiles()), ...(await snippets())];
      await cache.addAll(files.map((f) => new Request(f, { cache: "no-cache" })));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
      await self.clients.claim();
    })(),
  );
});

// Weights: IndexedDB keeps them; caching them here too would store every model twice. The
// package's specs/ (the built-in configs and tokenizer an imported single file converts with,
// fetched on the first such import) are kept: importing works offline after that.
function isWeights(url) {
  if (url.pathname.includes("/pkg/specs/")) return false;
  return /\/chunk-\d+\.bin$/.test(url.pathname) || /\/tokenizer\/[^/]+$/.test(url.pathname);
}

function isManifest(url) {
  return url.pathname.endsWith("/manifest.json");
}

// Same validator as the cached copy: no need to write the (possibly 10 MB) body again.
function sameVersion(a, b) {
  for (const header of ["etag", "last-modified"]) {
    const x = a.headers.get(header);
    if (x && x === b.headers.get(header)) return true;
  }
  return false;
}

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok && response.type !== "opaque") {
      const cached = await cache.match(request, { ignoreSearch: true });
      if (!cached || !sameVersion(cached, response)) await cache.put(request, response.clone());
    }
    return response;
  } catch (networkError) {
    const cached =
      (await cache.match(request, { ignoreSearch: true })) ??
      (request.mode === "navigate" ? await cache.match("index.html") : undefined);
    if (cached) return cached;
    throw networkError;
  }
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (isWeights(url)) return;
  if (url.origin === self.location.origin || isManifest(url)) {
    event.respondWith(networkFirst(request));
  }
});
