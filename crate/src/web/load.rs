//! `Generator.load(model, { onProgress, signal })`: a converted model (see
//! [`crate::format`]; its id resolved to a folder URL by [`crate::hub`]) fetched file by file and streamed onto the GPU chunk by chunk
//! ([`StreamingLoader`]), so the wasm heap holds one chunk at a time.
//!
//! Fetching and storage are `crate/js/storage.js`'s (the one owner of the IndexedDB schema);
//! this module decides what to fetch and checks every file's sha256 before it is stored.
//! Every file is kept by its sha256: a model loads a second time with only its manifest
//! fetched, and with no network at all from the stored manifest. Before downloading, the
//! space needed is checked against `navigator.storage.estimate()` (and persistent storage is
//! requested). Progress events: `{ phase: "download", loaded, total, chunk, cached }` while
//! each file arrives and after it (bytes, all files together), then `{ phase: "build" }`.

use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use super::options::report;
use super::storage::{
    cache_get, cache_has, cache_put, cache_put_model, download, manifest_text, storage_free,
    stored_manifest,
};
use super::{abort_error, get};
use crate::format::stream::StreamingLoader;
use crate::format::{MANIFEST, Manifest};
use crate::model::{LoadOptions, StableDiffusion};
use crate::{Device, Error};

/// `base/path`, with exactly one slash between.
fn join(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path)
}

/// A failed fetch: an abort is the engine's `AbortError` (code "cancelled"); an HTTP error
/// or anything else becomes an `io` error.
fn network_error(url: &str, e: JsValue) -> JsValue {
    if get(&e, "name").as_string().as_deref() == Some("AbortError") {
        return abort_error();
    }
    if let Some(status) = get(&e, "status").as_f64() {
        return Error::Io(format!("{url}: the server answered HTTP {status}; check the model URL (a folder with {MANIFEST})")).into();
    }
    let why = get(&e, "message")
        .as_string()
        .unwrap_or_else(|| format!("{e:?}"));
    Error::Io(format!("downloading {url} failed ({why}); check the connection and that the server allows this origin (CORS)")).into()
}

/// A JS `Error` with `code` "quota".
fn quota_error(message: String) -> JsValue {
    let e = js_sys::Error::new(&message);
    let _ = Reflect::set(&e, &"code".into(), &"quota".into());
    e.into()
}

/// The bytes of one file of the model: from IndexedDB when stored, else downloaded (and
/// stored once the loader has checked them, see `load`), with `on_bytes(received)` as they
/// arrive. Returns whether it came cached.
async fn file_bytes(
    url: &str,
    path: &str,
    sha256: &str,
    signal: &JsValue,
    on_bytes: &Closure<dyn FnMut(f64)>,
) -> Result<(Vec<u8>, bool), JsValue> {
    let cached = cache_get(sha256).await.unwrap_or(JsValue::UNDEFINED);
    if let Some(bytes) = cached.dyn_ref::<Uint8Array>() {
        return Ok((bytes.to_vec(), true));
    }
    if crate::hub::is_local(url) {
        return Err(Error::Io(format!(
            "{url}: {path} is missing from this browser's storage: import the model again"
        ))
        .into());
    }
    let url = join(url, path);
    let bytes = download(&url, signal, on_bytes)
        .await
        .map_err(|e| network_error(&url, e))?;
    Ok((bytes.unchecked_into::<Uint8Array>().to_vec(), false))
}

/// The text of the manifest of the model at `url` (a folder URL without a trailing slash):
/// from the network, else the copy stored with the model; an imported model's (`local:`)
/// only from storage. Errors: `io` naming the URL when
/// neither has it; an abort stays an `AbortError`.
pub async fn fetch_manifest(url: &str, signal: &JsValue) -> Result<String, JsValue> {
    if crate::hub::is_local(url) {
        // Imported from the user's files: only ever in this browser's storage.
        let text = stored_manifest(url).await?;
        return text.as_string().ok_or_else(|| {
            Error::Io(format!(
                "{url} is not stored in this browser: imported models live only in the browser that imported them"
            ))
            .into()
        });
    }
    let manifest_url = join(url, MANIFEST);
    let text = manifest_text(url, &manifest_url, signal)
        .await
        .map_err(|e| network_error(&manifest_url, e))?;
    text.as_string()
        .ok_or_else(|| Error::BadWeights(format!("{MANIFEST} is not text")).into())
}

/// Downloads and builds the model at `url`.
pub async fn load(
    url: &str,
    options: &JsValue,
    device: &Device,
) -> Result<StableDiffusion, JsValue> {
    let on_progress = super::options::function(options, "onProgress")?;
    let signal = get(options, "signal");
    let url = url.trim_end_matches('/');
    let text = fetch_manifest(url, &signal).await?;
    let manifest = Manifest::from_json(&text)?;
    let entries: Vec<_> = manifest
        .files
        .iter()
        .chain(&manifest.chunks)
        .cloned()
        .collect();
    let total: u64 = entries.iter().map(|f| f.size).sum();

    // Room for what is not stored yet?
    let mut missing = 0u64;
    for e in &entries {
        if !cache_has(&e.sha256)
            .await
            .map(|v| v.is_truthy())
            .unwrap_or(false)
        {
            missing += e.size;
        }
    }
    if missing > 0 {
        if let Some(free) = storage_free().await.ok().and_then(|v| v.as_f64()) {
            if free < missing as f64 {
                return Err(quota_error(format!(
                    "this model needs {:.0} MB more of browser storage, {:.0} MB are free: free space or delete a cached model",
                    missing as f64 / 1e6,
                    free / 1e6
                )));
            }
        }
    }

    let mut loaded = 0u64;
    let mut loader = StreamingLoader::new(manifest.clone(), device)?;
    let file_count = manifest.files.len();
    for (i, entry) in entries.iter().enumerate() {
        // Progress inside the file while it downloads.
        let (progress_fn, before, path) = (on_progress.clone(), loaded, entry.path.clone());
        let on_bytes = Closure::<dyn FnMut(f64)>::new(move |received: f64| {
            let _ = report(
                &progress_fn,
                &[
                    ("phase", "download".into()),
                    ("loaded", (before as f64 + received).into()),
                    ("total", (total as f64).into()),
                    ("chunk", path.as_str().into()),
                    ("cached", false.into()),
                ],
            );
        });
        let (bytes, cached) =
            file_bytes(url, &entry.path, &entry.sha256, &signal, &on_bytes).await?;
        loaded += bytes.len() as u64;
        let stored = if cached {
            None
        } else {
            Some(Uint8Array::from(bytes.as_slice()))
        };
        if i < file_count {
            loader.add_file(&entry.path, bytes)?;
        } else {
            loader.add_chunk(i - file_count, &bytes)?;
            drop(bytes);
        }
        // Checked by the loader: safe to keep.
        if let Some(bytes) = stored {
            cache_put(&entry.sha256, &bytes).await?;
        }
        report(
            &on_progress,
            &[
                ("phase", "download".into()),
                ("loaded", (loaded as f64).into()),
                ("total", (total as f64).into()),
                ("chunk", entry.path.clone().into()),
                ("cached", cached.into()),
            ],
        )?;
    }
    let shas: Array = entries
        .iter()
        .map(|e| JsValue::from(e.sha256.as_str()))
        .collect();
    cache_put_model(url, &text, shas, total as f64).await?;
    report(&on_progress, &[("phase", "build".into())])?;
    let files = loader.finish()?;
    Ok(StableDiffusion::load(
        &files,
        device,
        LoadOptions::default(),
    )?)
}
