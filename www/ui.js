// What every part of the page uses: the DOM lookup, number formatting, the body's data-*
// states (the CSS and the tests read them) and the alert box for blocking problems.

export const $ = (id) => document.getElementById(id);

// ---- small helpers -------------------------------------------------------------------

export function mb(bytes) {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

export function duration(seconds) {
  if (!Number.isFinite(seconds)) return "…";
  if (seconds < 1) return "<1 s";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m} min ${Math.round(seconds % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function setState(name, value) {
  document.body.dataset[name] = value;
}

// ---- alerts (blocking problems, with what to do) ---------------------------------------

export function showAlert(text, actions = []) {
  $("alert-text").textContent = text;
  const box = $("alert-actions");
  box.replaceChildren(
    ...actions.map(({ label, run }) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.addEventListener("click", run);
      return b;
    }),
  );
  $("alert").hidden = false;
}

export function hideAlert() {
  $("alert").hidden = true;
}

export const NO_WEBGPU_ADVICE =
  "Use a browser with WebGPU: Chrome or Edge 113 or newer, Safari 26 or newer, or Firefox 141 or newer " +
  "on Windows. On Linux, start Chrome with --enable-unsafe-webgpu. If WebGPU is there but the GPU is " +
  "blocked, chrome://gpu says why; updating the graphics driver usually helps.";

export function webgpuMissing(detail) {
  if (!window.isSecureContext) {
    return "WebGPU needs a secure page: open this site over https:// (or on localhost).";
  }
  return `WebGPU is not available in this browser${detail ? ` (${detail})` : ""}. ${NO_WEBGPU_ADVICE}`;
}
