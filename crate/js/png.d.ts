/** PNG bytes of `image` with the AUTOMATIC1111 `parameters` text chunk (none when `parameters` is null). */
export function encodePng(image: ImageData, parameters: string | null): Promise<Uint8Array>;
/** `png` with a `keyword` text chunk after IHDR (tEXt for Latin-1 text, iTXt otherwise). */
export function withText(png: Uint8Array, keyword: string, text: string): Uint8Array;
/** The `parameters` text of a PNG file, `null` when it has none; rejects for a file that is not a PNG. */
export function readParameters(file: Blob | ArrayBuffer | Uint8Array): Promise<string | null>;
/** Gives a generated image `toBlob({ parameters })`. */
export function withToBlob<T extends { width: number; height: number; data: Uint8Array | Uint8ClampedArray; parameters: string }>(
  image: T,
): T & { toBlob(options?: { parameters?: boolean }): Promise<Blob> };
export function crc32(bytes: Uint8Array): number;
