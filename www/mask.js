// The source image of image-to-image and inpainting, and the inpainting mask painted over it.
//
// Two canvases at the image's own pixel size, stacked and scaled up by CSS: the image below,
// the mask above (opaque where painted, shown half transparent). Painted pixels are repainted
// by the model; the rest is kept. Mouse, pen and touch paint through pointer events; from the
// keyboard, the arrow keys move a cursor (with Shift they paint), Space paints, [ and ] change the brush, E toggles
// the eraser, I inverts, Delete clears.

const MASK_COLOUR = "rgb(255, 40, 90)";

export class MaskEditor {
  /**
   * `imageCanvas`, `maskCanvas`: the stacked canvases. `cursor`: an element moved over the
   * image to show the brush. `onChange()` runs after every edit.
   */
  constructor({ imageCanvas, maskCanvas, cursor, onChange }) {
    this.imageCanvas = imageCanvas;
    this.maskCanvas = maskCanvas;
    this.cursor = cursor;
    this.onChange = onChange ?? (() => {});
    this.image = this.imageCanvas.getContext("2d", { willReadFrequently: true });
    this.mask = this.maskCanvas.getContext("2d", { willReadFrequently: true });
    this.brushSize = 8; // diameter in image pixels
    this.eraser = false;
    this.enabled = true; // painting on (inpaint) or off (image to image)
    this.last = null;
    this.keyCursor = null;
    this.hasImage = false;

    this.maskCanvas.addEventListener("pointerdown", (e) => this.pointerDown(e));
    this.maskCanvas.addEventListener("pointermove", (e) => this.pointerMove(e));
    this.maskCanvas.addEventListener("pointerup", (e) => this.pointerUp(e));
    this.maskCanvas.addEventListener("pointercancel", (e) => this.pointerUp(e));
    this.maskCanvas.addEventListener("pointerleave", () => this.showCursor(null));
    this.maskCanvas.addEventListener("keydown", (e) => this.key(e));
    this.maskCanvas.addEventListener("blur", () => this.showCursor(null));
  }

  get width() {
    return this.imageCanvas.width;
  }

  get height() {
    return this.imageCanvas.height;
  }

  /** Shows `imageData` as the source image and clears the mask. */
  setImage(imageData) {
    for (const c of [this.imageCanvas, this.maskCanvas]) {
      c.width = imageData.width;
      c.height = imageData.height;
    }
    this.image.putImageData(imageData, 0, 0);
    this.hasImage = true;
    this.clear();
  }

  /** The source image as an ImageData, or null when there is none. */
  imageData() {
    return this.hasImage ? this.image.getImageData(0, 0, this.width, this.height) : null;
  }

  /** The mask as RGBA ImageData: white where painted (repaint), black elsewhere (keep). */
  maskData() {
    const painted = this.mask.getImageData(0, 0, this.width, this.height).data;
    const out = new ImageData(this.width, this.height);
    for (let i = 0; i < painted.length; i += 4) {
      const v = painted[i + 3] >= 128 ? 255 : 0;
      out.data[i] = out.data[i + 1] = out.data[i + 2] = v;
      out.data[i + 3] = 255;
    }
    return out;
  }

  /** The fraction of the image that is painted. */
  coverage() {
    if (!this.hasImage) return 0;
    const painted = this.mask.getImageData(0, 0, this.width, this.height).data;
    let n = 0;
    for (let i = 3; i < painted.length; i += 4) if (painted[i] >= 128) n++;
    return n / (this.width * this.height);
  }

  clear() {
    this.mask.clearRect(0, 0, this.width, this.height);
    this.onChange();
  }

  /** Painted pixels become kept and kept ones painted. */
  invert() {
    const data = this.mask.getImageData(0, 0, this.width, this.height);
    const d = data.data;
    for (let i = 0; i < d.length; i += 4) {
      const on = d[i + 3] < 128;
      d[i] = 255;
      d[i + 1] = 40;
      d[i + 2] = 90;
      d[i + 3] = on ? 255 : 0;
    }
    this.mask.putImageData(data, 0, 0);
    this.onChange();
  }

  /** A stroke from (x0, y0) to (x1, y1) in image pixels. */
  stroke(x0, y0, x1, y1) {
    const m = this.mask;
    m.save();
    m.globalCompositeOperation = this.eraser ? "destination-out" : "source-over";
    m.strokeStyle = m.fillStyle = MASK_COLOUR;
    m.lineWidth = this.brushSize;
    m.lineCap = m.lineJoin = "round";
    m.beginPath();
    if (x0 === x1 && y0 === y1) {
      m.arc(x0, y0, this.brushSize / 2, 0, 2 * Math.PI);
      m.fill();
    } else {
      m.moveTo(x0, y0);
      m.lineTo(x1, y1);
      m.stroke();
    }
    m.restore();
    this.onChange();
  }

  /** Image pixel coordinates of a pointer event. */
  at(e) {
    const r = this.maskCanvas.getBoundingClientRect();
    return [((e.clientX - r.left) * this.width) / r.width, ((e.clientY - r.top) * this.height) / r.height];
  }

  pointerDown(e) {
    if (!this.enabled || !this.hasImage || e.button !== 0) return;
    e.preventDefault();
    this.maskCanvas.setPointerCapture?.(e.pointerId);
    const [x, y] = this.at(e);
    this.last = [x, y];
    this.stroke(x, y, x, y);
  }

  pointerMove(e) {
    if (!this.enabled || !this.hasImage) return;
    const [x, y] = this.at(e);
    this.showCursor([x, y]);
    if (!this.last) return;
    this.stroke(this.last[0], this.last[1], x, y);
    this.last = [x, y];
  }

  pointerUp() {
    this.last = null;
  }

  /** Moves the brush outline to image position `p` (null hides it). */
  showCursor(p) {
    if (!this.cursor) return;
    if (!p || !this.enabled) {
      this.cursor.hidden = true;
      return;
    }
    const r = this.maskCanvas.getBoundingClientRect();
    const scale = r.width / this.width;
    const size = this.brushSize * scale;
    Object.assign(this.cursor.style, {
      width: `${size}px`,
      height: `${size}px`,
      left: `${p[0] * scale - size / 2}px`,
      top: `${p[1] * (r.height / this.height) - size / 2}px`,
    });
    this.cursor.classList.toggle("eraser", this.eraser);
    this.cursor.hidden = false;
  }

  key(e) {
    if (!this.enabled || !this.hasImage || e.ctrlKey || e.metaKey || e.altKey) return;
    const step = Math.max(1, this.brushSize / 2);
    this.keyCursor ??= [this.width / 2, this.height / 2];
    const [x, y] = this.keyCursor;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    let handled = true;
    if (moves[e.key]) {
      const [dx, dy] = moves[e.key];
      this.keyCursor = [Math.min(this.width, Math.max(0, x + dx)), Math.min(this.height, Math.max(0, y + dy))];
      if (e.shiftKey) this.stroke(x, y, ...this.keyCursor);
    } else if (e.key === " " || e.key === "Enter") {
      this.stroke(x, y, x, y);
    } else if (e.key === "[" || e.key === "]") {
      this.onBrushKey?.(e.key === "]" ? 1 : -1);
    } else if (e.key === "e" || e.key === "E") {
      this.onEraserKey?.();
    } else if (e.key === "i" || e.key === "I") {
      this.invert();
    } else if (e.key === "Delete" || e.key === "Backspace") {
      this.clear();
    } else {
      handled = false;
    }
    if (handled) {
      e.preventDefault();
      this.showCursor(this.keyCursor);
    }
  }
}

/**
 * `source` (anything drawImage takes, with width/height) scaled to cover `width`×`height`,
 * centred and cropped, as an ImageData. Transparent parts are flattened onto white, as the
 * engine does with an RGBA init image (and AUTOMATIC1111): the editor shows what the model
 * will see.
 */
export function coverImage(source, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d");
  const sw = source.width;
  const sh = source.height;
  const scale = Math.max(width / sw, height / sh);
  const dw = sw * scale;
  const dh = sh * scale;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, (width - dw) / 2, (height - dh) / 2, dw, dh);
  return ctx.getImageData(0, 0, width, height);
}
