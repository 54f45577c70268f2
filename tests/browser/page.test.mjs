// Starts the README's run command, opens the page it serves in headless Chromium, and checks
// that the WebGPU adapter is shown and that burn's kernels ran on it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { launch } from "./chromium.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const ARTIFACTS = join(ROOT, "target", "test-artifacts");
mkdirSync(ARTIFACTS, { recursive: true });

let server;
let url;
let browser;

// The run command builds first (incremental here, since the test command built already),
// then prints the URL once it listens.
function startRunCommand() {
  return new Promise((resolve, reject) => {
    server = spawn("scripts/run.sh", [], {
      cwd: ROOT,
      env: { ...process.env, PORT: "0" },
      stdio: ["ignore", "pipe", "inherit"],
      detached: true, // own process group, so after() can stop the server and its children
    });
    let out = "";
    const timer = setTimeout(() => reject(new Error(`run command printed no URL within 20 min:\n${out}`)), 20 * 60_000);
    server.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/http:\/\/127\.0\.0\.1:\d+\//);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    });
    server.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`run command exited with ${code} before serving:\n${out}`));
    });
  });
}

before(async () => {
  url = await startRunCommand();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) process.kill(-server.pid, "SIGTERM");
});

test("the page shows the WebGPU adapter and burn kernels run on it", { timeout: 300_000 }, async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(url);
  const status = page.locator("#status");
  await page.waitForFunction(
    () => ["ready", "error"].includes(document.querySelector("#status")?.dataset.state),
    null,
    { timeout: 240_000 },
  );
  await page.screenshot({ path: join(ARTIFACTS, "page-adapter.png"), fullPage: true });
  assert.equal(await status.getAttribute("data-state"), "ready", `page says: ${await status.textContent()}`);
  const name = await page.locator('[data-field="name"]').textContent();
  assert.ok(name && name !== "unknown adapter", `adapter name shown: ${name}`);
  assert.match(await page.locator('[data-field="maxStorageBufferBindingSize"]').textContent(), /^\d+ MiB$/);
  assert.match(await page.locator('[data-field="shaderF16"]').textContent(), /^(yes|no \(f32 path\))$/);
  assert.match(await page.locator('[data-field="selfCheck"]').textContent(), /^ok /);
  assert.deepEqual(errors, []);
  await page.close();
});

test("without WebGPU the page says so instead of failing silently", { timeout: 120_000 }, async () => {
  const page = await browser.newPage();
  // A browser without WebGPU: navigator.gpu is absent.
  await page.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined });
  });
  await page.goto(url);
  await page.waitForFunction(() => document.querySelector("#status")?.dataset.state === "error", null, {
    timeout: 60_000,
  });
  assert.match(await page.locator("#status").textContent(), /WebGPU is not available/);
  await page.screenshot({ path: join(ARTIFACTS, "page-no-webgpu.png") });
  await page.close();
});
