// Launches Debian's Chromium (never a downloaded browser) with WebGPU on, headless.
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/lib/chromium/chromium";

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--enable-unsafe-webgpu", // WebGPU on Linux, here on the SwiftShader software adapter
      "--no-sandbox", // CI runs as root
      "--headless=new",
      // The network is closed here: stop Chromium from trying to reach Google.
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
      // playwright gives each launch a fresh temporary profile.
    ],
  });
}
