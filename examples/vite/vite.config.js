// A plain object (no import of "vite"): the same config works with any Vite install.
export default {
  // The package's worker is an ES module (it imports the engine), as is the engine's wasm
  // glue: bundle workers as ES modules too.
  worker: { format: "es" },
  // Pre-bundling would move the package away from its .wasm and worker, which it finds with
  // new URL(…, import.meta.url): serve it as it is in development.
  optimizeDeps: { exclude: ["sd-webgpu"] },
};
