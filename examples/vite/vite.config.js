// A plain object (no import of "vite"): the same config works with any Vite install.
// Vite 8 needs neither setting; they keep the package as it ships on other versions and
// bundlers' defaults.
export default {
  // The package's worker is an ES module (it imports the engine): bundle workers as ES
  // modules, not classic scripts.
  worker: { format: "es" },
  // The package finds its .wasm and worker with new URL(…, import.meta.url): no
  // pre-bundling that would move it away from them in development.
  optimizeDeps: { exclude: ["sd-webgpu"] },
};
