// The CLIP token counters under the prompts (`n / 75`), counted with the loaded model's own
// tokenizer: tokens past 75 are cut off.
import { $ } from "./ui.js";
import { state, model } from "./state.js";

const MAX_TOKENS = 75;

let tokenTimer = 0;

export function countTokens() {
  clearTimeout(tokenTimer);
  tokenTimer = setTimeout(async () => {
    for (const [field, out] of [["prompt", "prompt-tokens"], ["negative", "negative-tokens"]]) {
      let n = null;
      try {
        if (model.loaded) n = await state.engine.countTokens($(field).value);
      } catch (_) {
        // no model yet
      }
      const el = $(out);
      el.textContent = n === null ? `– / ${MAX_TOKENS} tokens` : `${n} / ${MAX_TOKENS} tokens`;
      el.classList.toggle("over", n !== null && n > MAX_TOKENS);
      el.title = n !== null && n > MAX_TOKENS ? `Only the first ${MAX_TOKENS} tokens are used` : "";
    }
  }, 150);
}

export function wireTokens() {
  for (const id of ["prompt", "negative"]) {
    $(id).addEventListener("input", () => {
      // An edited prompt stays when a model with its own starting prompt loads.
      $(id).dataset.edited = "yes";
      countTokens();
    });
  }
}
