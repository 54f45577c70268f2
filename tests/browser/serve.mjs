// A static server on 127.0.0.1 for browser tests and benchmarks that load a wasm package
// without the page: each URL prefix of `mounts` ("/pkg/", "/model/", ...) served from a
// folder, and an empty page at `/` to run scripts in. With `ranges`, a `Range: bytes=A-B`
// request gets a 206 with those bytes (as model hubs answer), else the whole file (200); with
// `cors`, any origin may read the files. `server.served` lists each file answer:
// { path, range (the header, or null), status, bytes (the length of the answer's body) }.
import { createReadStream, existsSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";

const TYPES = {
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".html": "text/html",
};

/** Listens on a free port; resolves to the `http.Server` (its `address().port`). */
export function serve(mounts, { ranges = false, cors = false } = {}) {
  const served = [];
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    const prefix = Object.keys(mounts).find((p) => path.startsWith(p));
    const file = prefix && join(mounts[prefix], path.slice(prefix.length));
    const headers = cors
      ? { "access-control-allow-origin": "*", "access-control-allow-headers": "range", "access-control-expose-headers": "content-range, accept-ranges" }
      : {};
    if (req.method === "OPTIONS") {
      res.writeHead(204, headers).end();
    } else if (path === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>sd-webgpu</title>");
    } else if (file && !path.includes("..") && existsSync(file) && statSync(file).isFile()) {
      const size = statSync(file).size;
      const range = req.headers.range ?? null;
      const match = ranges && range && /^bytes=(\d+)-(\d+)$/.exec(range);
      const [start, end] = match ? [Number(match[1]), Math.min(Number(match[2]), size - 1)] : [0, size - 1];
      if (match && start > end) {
        served.push({ path, range, status: 416, bytes: 0 });
        res.writeHead(416, { ...headers, "content-range": `bytes */${size}` }).end();
        return;
      }
      const status = match ? 206 : 200;
      served.push({ path, range, status, bytes: end - start + 1 });
      res.writeHead(status, {
        ...headers,
        "content-type": TYPES[extname(file)] ?? "application/octet-stream",
        "content-length": end - start + 1,
        ...(ranges ? { "accept-ranges": "bytes" } : {}),
        ...(match ? { "content-range": `bytes ${start}-${end}/${size}` } : {}),
      });
      createReadStream(file, { start, end }).pipe(res);
    } else {
      served.push({ path, range: req.headers.range ?? null, status: 404, bytes: 0 });
      res.writeHead(404, headers).end();
    }
  });
  server.served = served;
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}
