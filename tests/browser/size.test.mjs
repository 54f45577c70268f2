// The engine the page loads stays within its budget: 12 MB, 3 MB gzipped (after the build
// that scripts/test.sh runs before these tests).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const WASM = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "www", "pkg", "sd_webgpu_bg.wasm");

test("the page's wasm is at most 12 MB, 3 MB gzipped", () => {
  const bytes = readFileSync(WASM);
  const gzipped = gzipSync(bytes, { level: 9 }).length;
  console.log(`sd_webgpu_bg.wasm: ${(bytes.length / 1e6).toFixed(2)} MB, ${(gzipped / 1e6).toFixed(2)} MB gzipped`);
  assert.ok(bytes.length <= 12e6, `${bytes.length} bytes`);
  assert.ok(gzipped <= 3e6, `${gzipped} bytes gzipped`);
});
