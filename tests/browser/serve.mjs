// A static server on 127.0.0.1 for browser tests and benchmarks that load the wasm package
// without the page: `/pkg/...` from www/pkg, `/model/...` from a converted model folder, and an
// empty page at `/` to run scripts in.
import { createReadStream, existsSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { dirname, extname, join, normalize } from "node:path";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const TYPES = { ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".html": "text/html" };

/** Listens on a free port; resolves to the `http.Server` (its `address().port`). */
export function serve(model) {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    let file = null;
    if (path.startsWith("/pkg/")) file = join(ROOT, "www", path);
    else if (path.startsWith("/model/")) file = join(model, path.slice("/model/".length));
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
