// Safetensors files for the browser tests: written from a tensor list, the data left sparse
// (zeros that take no disk), such as a full-size SD 1.5 checkpoint from its LDM tensor list.
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Writes a safetensors file of `tensors` ([name, dtype, shape, bytes] each), the data all
 *  zeros and sparse. */
export function writeSafetensors(path, tensors) {
  const header = {};
  let offset = 0;
  for (const [name, dtype, shape, bytes] of tensors) {
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const fd = openSync(path, "w");
  writeSync(fd, Buffer.concat([len, json]));
  ftruncateSync(fd, 8 + json.length + offset);
  closeSync(fd);
}

/** A full-size SD 1.5 single file with a real one's LDM names and shapes
 *  (weights-tools/synth/sd15/ldm_tensors.txt), all zeros: 2.1 GB announced, the header
 *  written. */
export function fullSizeSd15(path) {
  const list = readFileSync(join(ROOT, "weights-tools", "synth", "sd15", "ldm_tensors.txt"), "utf8");
  const size = { F16: 2, F32: 4, I64: 8 };
  writeSafetensors(
    path,
    list.trim().split("\n").map((line) => {
      const [name, dtype, shape = ""] = line.split(" ");
      const dims = shape.split(",").filter(Boolean).map(Number);
      return [name, dtype, dims, dims.reduce((a, b) => a * b, 1) * size[dtype]];
    }),
  );
}
