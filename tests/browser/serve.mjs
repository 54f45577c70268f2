// A static server on 127.0.0.1 for browser tests and benchmarks that load a wasm package
// without the page: each URL prefix of `mounts` ("/pkg/", "/model/", ...) served from a
// folder, and an empty page at `/` to run scripts in.
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
export function serve(mounts) {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    const prefix = Object.keys(mounts).find((p) => path.startsWith(p));
    const file = prefix && join(mounts[prefix], path.slice(prefix.length));
    if (path === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>sd-webgpu</title>");
    } else if (file && !path.includes("..") && existsSync(file) && statSync(file).isFile()) {
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "content-length": statSync(file).size });
      createReadStream(file).pipe(res);
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}
