// PNG files with the generation parameters embedded, as AUTOMATIC1111's web UI writes them
// (and reads them back: readParameters):
// a text chunk with the keyword "parameters", which image viewers and model sites read back.
// The text itself comes from the engine (each generated image's `parameters`, made by the
// crate as `sd-weights generate` makes it); this module only writes it into the file.
//
// The browser encodes the pixels (canvas.toBlob); we insert the text chunk after IHDR.
// Latin-1 text goes in a tEXt chunk; anything else in an iTXt chunk (UTF-8), as the
// native `sd-weights generate` does.

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (ISO 3309, as PNG uses it) of `bytes`. */
export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** One PNG chunk: length, type, data, CRC over type and data. */
export function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

function isLatin1(text) {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 255) return false;
  return true;
}

/** A tEXt chunk (Latin-1 text) or, when the text needs it, an iTXt chunk (UTF-8). */
export function textChunk(keyword, text) {
  if (isLatin1(text)) {
    const data = new Uint8Array(keyword.length + 1 + text.length);
    for (let i = 0; i < keyword.length; i++) data[i] = keyword.charCodeAt(i);
    for (let i = 0; i < text.length; i++) data[keyword.length + 1 + i] = text.charCodeAt(i);
    return chunk("tEXt", data);
  }
  // iTXt: keyword, 0, compression flag 0, method 0, empty language tag, 0, empty
  // translated keyword, 0, then the UTF-8 text.
  const utf8 = new TextEncoder().encode(text);
  const head = keyword.length;
  const data = new Uint8Array(head + 5 + utf8.length);
  for (let i = 0; i < head; i++) data[i] = keyword.charCodeAt(i);
  data.set(utf8, head + 5);
  return chunk("iTXt", data);
}

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

function notPng() {
  return Object.assign(new Error("not a PNG file"), { code: "bad-input" });
}

/** `png` (bytes of a PNG file) with a `keyword` text chunk inserted after IHDR. */
export function withText(png, keyword, text) {
  for (let i = 0; i < 8; i++) {
    if (png[i] !== SIGNATURE[i]) throw notPng();
  }
  const ihdrLength = new DataView(png.buffer, png.byteOffset).getUint32(8);
  const afterIhdr = 8 + 12 + ihdrLength;
  const extra = textChunk(keyword, text);
  const out = new Uint8Array(png.length + extra.length);
  out.set(png.subarray(0, afterIhdr), 0);
  out.set(extra, afterIhdr);
  out.set(png.subarray(afterIhdr), afterIhdr + extra.length);
  return out;
}

/** PNG file bytes of `imageData` (an ImageData) with `parameters` embedded. */
export async function encodePng(imageData, parameters) {
  const canvas = new OffscreenCanvas(imageData.width, imageData.height);
  canvas.getContext("2d").putImageData(imageData, 0, 0);
  const blob = await canvas.convertToBlob({ type: "image/png" });
  const png = new Uint8Array(await blob.arrayBuffer());
  return parameters ? withText(png, "parameters", parameters) : png;
}

/**
 * The AUTOMATIC1111 `parameters` text of a PNG file (a Blob, an ArrayBuffer or bytes), from
 * its tEXt or uncompressed iTXt chunk; `null` when it has none. Rejects on a file that is not
 * a PNG.
 */
export async function readParameters(file) {
  const bytes =
    file instanceof Uint8Array ? file : new Uint8Array(file instanceof ArrayBuffer ? file : await file.arrayBuffer());
  for (let i = 0; i < 8; i++) {
    if (bytes[i] !== SIGNATURE[i]) throw notPng();
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const latin1 = (a, b) => {
    let text = "";
    for (let i = a; i < b; i++) text += String.fromCharCode(bytes[i]);
    return text;
  };
  for (let at = 8; at + 12 <= bytes.length; ) {
    const length = view.getUint32(at);
    const type = latin1(at + 4, at + 8);
    const data = bytes.subarray(at + 8, at + 8 + length);
    const zero = data.indexOf(0);
    if (zero > 0 && latin1(at + 8, at + 8 + zero) === "parameters") {
      if (type === "tEXt") return latin1(at + 8 + zero + 1, at + 8 + length);
      // iTXt: compression flag and method, then language tag and translated keyword (each
      // ended by 0), then the UTF-8 text; a compressed one is skipped.
      if (type === "iTXt" && data[zero + 1] === 0) {
        let start = zero + 3;
        start = data.indexOf(0, start) + 1;
        start = data.indexOf(0, start) + 1;
        return new TextDecoder().decode(data.subarray(start));
      }
    }
    if (type === "IEND") break;
    at += 12 + length;
  }
  return null;
}

/** Gives a generated image (`{ width, height, data, parameters, … }`) `toBlob({ parameters })`:
 *  a PNG Blob, with the `parameters` text chunk when `parameters` is true. */
export function withToBlob(image) {
  image.toBlob = async ({ parameters = false } = {}) => {
    const data = new Uint8ClampedArray(image.data.buffer, image.data.byteOffset, image.data.length);
    const png = await encodePng(new ImageData(data, image.width, image.height), parameters ? image.parameters : null);
    return new Blob([png], { type: "image/png" });
  };
  return image;
}
