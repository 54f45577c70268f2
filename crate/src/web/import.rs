//! `importModel`: a model from the user's own files (a single-file SD 1.x / 2.x `.safetensors`
//! checkpoint, or a diffusers folder) converted in the browser by [`crate::convert`], the code
//! `sd-weights convert` runs, and stored in IndexedDB as `local:NAME`, which `load` takes
//! like a downloaded model.
//!
//! `crate/js/import.js` calls it with the files' paths and sizes and a `read` function (a
//! `Blob.slice` each time: no file is ever read whole, and nothing goes over the network; or,
//! for `importUrl`, an HTTP range request, or the next bytes of one streamed download, which
//! the optional `plan` function prepares); the built-in configs a single file needs come from
//! its `spec` function. This is the file
//! side of `weights-tools/src/convert`, in the browser: read what the converter asks for,
//! store what it hands back (through `crate/js/storage.js`, as `load` stores), and on any
//! error or abort delete what was stored, so no half model stays behind. `import/source.rs`
//! reads the files and plans the conversion with the crate.

mod source;

use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::*;

use super::options::{function, report, text, unknown_key};
use super::storage::{cache_drop_unlisted, cache_put, cache_put_model, stored_manifest};
use super::{aborted, get};
use crate::convert::{Converter, Input};
use crate::format::{DEFAULT_CHUNK_BYTES, Dtype, MAX_CHUNK_BYTES};
use crate::pipeline::now_ms;
use crate::{Error, hub};
use source::Source;

/// The options `importModel` takes.
const OPTIONS: [&str; 7] = [
    "quantization",
    "predictionType",
    "name",
    "chunkMb",
    "onProgress",
    "onNote",
    "signal",
];

/// The most bytes read from a file at once: the wasm heap holds one piece besides a tensor.
const PIECE_BYTES: u64 = 8 << 20;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Sent to `onProgress` while a model is imported: bytes of the input's tensors read so far and
 *  in all, the speed so far, and the seconds left at that speed (`null` until known). */
export interface ImportProgress { bytesRead: number; totalBytes: number; bytesPerSecond: number; secondsLeft: number | null; }

/** Options of an import (`importFile`). `quantization`: the stored precision (default "f16", as
 *  `sd-weights convert`); `predictionType`: a single file's (default: v_prediction for SD 2.x
 *  768 checkpoints, else epsilon); `name`: the model's name (its key is "local:" + name, made
 *  unique); `chunkMb`: chunk size, 1 to 256 MiB (32); `onNote`: what `sd-weights convert`
 *  prints beside its progress (assumptions made, tensors skipped or kept wider than asked);
 *  `signal`: aborts, and nothing stays stored. */
export interface ImportOptions {
  quantization?: "f32" | "f16" | "q8" | "q4";
  predictionType?: "epsilon" | "v_prediction";
  name?: string;
  chunkMb?: number;
  onProgress?: (e: ImportProgress) => void;
  onNote?: (note: string) => void;
  signal?: AbortSignal;
}

/** What `importModel` reads: the files (paths inside the folder; a single file's name),
 *  optionally the files of a diffusers folder whose configs a single file converts with,
 *  `read(list, index, start, length)` (bytes of one of them) and `spec(family)` (the built-in
 *  configs of "sd15", "sd15-inpaint" or "sd21", by path). crate/js/import.js makes it. */
export interface ImportSource {
  files: { path: string; size: number }[];
  config: { path: string; size: number }[] | null;
  read(list: "files" | "config", index: number, start: number, length: number): Promise<Uint8Array>;
  spec(family: string): Promise<Record<string, Uint8Array>>;
  /** Told the ranges of `files` that `read` will be asked for, in that order, before the
   *  first: `[index, start, length]`. Optional (a stream read in file order needs it). */
  plan?(ranges: [number, number, number][]): void;
}
"#;

/// Converts and stores a model from the user's files (see the module docs and
/// `ImportSource`, `ImportOptions`); resolves to its key, `local:NAME`, for `load`.
///
/// Rejects with the converter's errors (codes `bad-input`, `bad-weights`, `bad-config`,
/// `tokenizer`, `io`: the messages `sd-weights convert` gives), `quota` when the storage is
/// full, an `AbortError` when `signal` aborts. Whatever it stored by then is deleted.
#[wasm_bindgen(js_name = importModel)]
pub async fn import_model(
    #[wasm_bindgen(unchecked_param_type = "ImportSource")] source: JsValue,
    #[wasm_bindgen(unchecked_param_type = "ImportOptions")] options: JsValue,
) -> Result<String, JsValue> {
    check_options(&options)?;
    let source = Source::new(&source)?;
    let want = match text(&options, "quantization")? {
        Some(q) => Dtype::parse(&q)?,
        None => Dtype::F16,
    };
    let v_prediction = match text(&options, "predictionType")?.as_deref() {
        None => None,
        Some("epsilon") => Some(false),
        Some("v_prediction") => Some(true),
        Some(other) => {
            return Err(Error::BadInput(format!(
                "predictionType {other:?}: use \"epsilon\" or \"v_prediction\""
            ))
            .into());
        }
    };
    let chunk_size = chunk_size(&options)?;
    let on_note = function(&options, "onNote")?;

    let signal = get(&options, "signal");
    // A read that failed because the import was cancelled (a fetch aborted) is a cancel.
    let cancelled = |e: JsValue| {
        if aborted(&signal) {
            super::abort_error()
        } else {
            e
        }
    };
    let (input, file_index) = source.input(v_prediction).await.map_err(cancelled)?;
    if aborted(&signal) {
        return Err(super::abort_error());
    }
    for note in &input.notes {
        if let Some(f) = &on_note {
            f.call1(&JsValue::NULL, &note.as_str().into())?;
        }
    }
    let name = match text(&options, "name")? {
        Some(n) if !n.trim().is_empty() => n.trim().to_string(),
        _ => source.default_name(),
    };
    let key = unused_key(&name).await?;
    let mut stored = Vec::new();
    let result = convert(
        &source,
        input,
        &file_index,
        want,
        chunk_size,
        &key,
        &options,
        &mut stored,
    )
    .await
    .map_err(cancelled);
    if result.is_err() && !stored.is_empty() {
        // Nothing half-written stays: the chunks no stored model lists are deleted.
        let shas: Array = stored.iter().map(|s| JsValue::from(s.as_str())).collect();
        let _ = cache_drop_unlisted(shas).await;
    }
    result?;
    Ok(key)
}

fn check_options(options: &JsValue) -> Result<(), Error> {
    if options.is_undefined() || options.is_null() {
        return Ok(());
    }
    if !options.is_object() {
        return Err(Error::BadInput("import: pass an options object".into()));
    }
    match unknown_key(options, &OPTIONS) {
        Some(key) => Err(Error::BadInput(format!(
            "unknown import option \"{key}\"; the options are: {}, config",
            OPTIONS.join(", ")
        ))),
        None => Ok(()),
    }
}

fn chunk_size(options: &JsValue) -> Result<u64, Error> {
    let v = get(options, "chunkMb");
    if v.is_undefined() || v.is_null() {
        return Ok(DEFAULT_CHUNK_BYTES);
    }
    let max = MAX_CHUNK_BYTES >> 20;
    match v.as_f64() {
        Some(mb) if mb.fract() == 0.0 && (1.0..=max as f64).contains(&mb) => Ok((mb as u64) << 20),
        _ => Err(Error::BadInput(format!(
            "chunkMb: must be a whole number from 1 to {max} (default {})",
            DEFAULT_CHUNK_BYTES >> 20
        ))),
    }
}

/// `local:NAME`, or `local:NAME-2`, `-3`, ... when that is stored already.
async fn unused_key(name: &str) -> Result<String, JsValue> {
    let mut key = format!("{}{name}", hub::LOCAL);
    let mut n = 1;
    while stored_manifest(&key).await?.is_string() {
        n += 1;
        key = format!("{}{name}-{n}", hub::LOCAL);
    }
    Ok(key)
}

/// Converts `input` and stores it under `key`; every blob stored goes into `stored` (for the
/// caller to delete on failure).
#[allow(clippy::too_many_arguments)]
async fn convert(
    source: &Source,
    input: Input,
    file_index: &[usize],
    want: Dtype,
    chunk_size: u64,
    key: &str,
    options: &JsValue,
    stored: &mut Vec<String>,
) -> Result<(), JsValue> {
    let on_progress = function(options, "onProgress")?;
    let signal = get(options, "signal");
    let mut converter = Converter::new(input, want, chunk_size)?;
    let total = converter.total_bytes();
    let ranges: Vec<_> = converter
        .ranges()
        .iter()
        .map(|r| (file_index[r.file], r.start, r.len))
        .collect();
    source.plan(&ranges)?;
    let (started, mut read) = (now_ms(), 0u64);
    while let Some(range) = converter.next_range() {
        if aborted(&signal) {
            return Err(super::abort_error());
        }
        let len = range.len.min(PIECE_BYTES);
        let bytes = source
            .read("files", file_index[range.file], range.start, len)
            .await?;
        let chunks = converter.push(&bytes)?;
        drop(bytes);
        for chunk in chunks {
            store(&chunk.sha256, &chunk.bytes, stored).await?;
        }
        read += len;
        report(&on_progress, &progress(read, total, now_ms() - started))?;
    }
    if aborted(&signal) {
        return Err(super::abort_error());
    }
    let done = converter.finish()?;
    // What `sd-weights convert` prints after converting: tensors kept wider than asked.
    if let Some(f) = function(options, "onNote")? {
        for kept in &done.kept {
            f.call1(&JsValue::NULL, &kept.to_string().into())?;
        }
    }
    for chunk in &done.chunks {
        store(&chunk.sha256, &chunk.bytes, stored).await?;
    }
    // The tokenizer files, in the manifest's order.
    for ((_, bytes), entry) in done.files.iter().zip(&done.manifest.files) {
        store(&entry.sha256, bytes, stored).await?;
    }
    let entries = done.manifest.files.iter().chain(&done.manifest.chunks);
    let shas: Array = entries
        .clone()
        .map(|e| JsValue::from(e.sha256.as_str()))
        .collect();
    let bytes: u64 = entries.map(|e| e.size).sum();
    // Listed last: until now nothing names the stored chunks.
    cache_put_model(key, &done.manifest.to_json(), shas, bytes as f64).await?;
    Ok(())
}

async fn store(sha256: &str, bytes: &[u8], stored: &mut Vec<String>) -> Result<(), JsValue> {
    stored.push(sha256.to_string());
    cache_put(sha256, &Uint8Array::from(bytes)).await?;
    Ok(())
}

/// `onProgress`'s fields: bytes read of `total`, the speed so far and the seconds left.
fn progress(read: u64, total: u64, ms: f64) -> [(&'static str, JsValue); 4] {
    let per_second = if ms > 0.0 {
        read as f64 / ms * 1000.0
    } else {
        0.0
    };
    let left = if per_second > 0.0 {
        JsValue::from((total - read) as f64 / per_second)
    } else {
        JsValue::NULL
    };
    [
        ("bytesRead", (read as f64).into()),
        ("totalBytes", (total as f64).into()),
        ("bytesPerSecond", per_second.into()),
        ("secondsLeft", left),
    ]
}
