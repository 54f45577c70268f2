//! `Generator.load(modelUrl, { onProgress, signal })`: a converted model (see
//! [`crate::format`]) fetched file by file and streamed onto the GPU chunk by chunk
//! ([`StreamingLoader`]), so the wasm heap holds one chunk at a time.
//!
//! Uses the global `fetch` (window or worker). Progress events:
//! `{ phase: "download", loaded, total, chunk }` after each file (bytes, all files together),
//! then `{ phase: "build" }` while the modules are assembled.

use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::get;
use crate::format::stream::StreamingLoader;
use crate::format::{MANIFEST, Manifest};
use crate::model::StableDiffusion;
use crate::{Device, Error};

/// `base/path`, with exactly one slash between.
fn join(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path)
}

/// Fetches `url` (with `signal`) and returns its bytes; HTTP errors and network failures are
/// [`Error::Io`] naming the URL.
async fn fetch_bytes(url: &str, signal: &JsValue) -> Result<Vec<u8>, JsValue> {
    let global = js_sys::global();
    let fetch: Function = get(&global, "fetch")
        .dyn_into()
        .map_err(|_| Error::Io("this browser has no fetch()".into()))?;
    let init = Object::new();
    if !signal.is_undefined() && !signal.is_null() {
        Reflect::set(&init, &"signal".into(), signal)?;
    }
    let response = JsFuture::from(Promise::from(fetch.call2(&global, &url.into(), &init)?))
        .await
        .map_err(|e| network_error(url, e))?;
    let ok = get(&response, "ok").as_bool().unwrap_or(false);
    if !ok {
        let status = get(&response, "status").as_f64().unwrap_or(0.0);
        return Err(Error::Io(format!("{url}: the server answered HTTP {status}; check the model URL (a folder with {MANIFEST})")).into());
    }
    let array_buffer: Function = get(&response, "arrayBuffer").dyn_into()?;
    let buffer = JsFuture::from(Promise::from(array_buffer.call0(&response)?)).await.map_err(|e| network_error(url, e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// A failed fetch: an abort stays an `AbortError`; anything else becomes an `io` error.
fn network_error(url: &str, e: JsValue) -> JsValue {
    if get(&e, "name").as_string().as_deref() == Some("AbortError") {
        return e;
    }
    let why = get(&e, "message").as_string().unwrap_or_else(|| format!("{e:?}"));
    Error::Io(format!("downloading {url} failed ({why}); check the connection and that the server allows this origin (CORS)")).into()
}

fn progress(on_progress: &Option<Function>, fields: &[(&str, JsValue)]) -> Result<(), JsValue> {
    if let Some(f) = on_progress {
        let o = Object::new();
        for (k, v) in fields {
            Reflect::set(&o, &(*k).into(), v)?;
        }
        f.call1(&JsValue::NULL, &o)?;
    }
    Ok(())
}

/// Downloads and builds the model at `url`.
pub async fn load(url: &str, options: &JsValue, device: &Device) -> Result<StableDiffusion, JsValue> {
    let on_progress = get(options, "onProgress");
    let on_progress = if on_progress.is_undefined() || on_progress.is_null() {
        None
    } else {
        Some(on_progress.dyn_into::<Function>().map_err(|_| Error::BadInput("onProgress: must be a function".into()))?)
    };
    let signal = get(options, "signal");

    let text = fetch_bytes(&join(url, MANIFEST), &signal).await?;
    let text = String::from_utf8(text).map_err(|_| Error::BadWeights(format!("{MANIFEST} is not UTF-8 text")))?;
    let manifest = Manifest::from_json(&text)?;
    let total: u64 = manifest.files.iter().chain(&manifest.chunks).map(|f| f.size).sum();
    let mut loaded = 0u64;
    let mut loader = StreamingLoader::new(manifest.clone(), device);
    for file in &manifest.files {
        let bytes = fetch_bytes(&join(url, &file.path), &signal).await?;
        loaded += bytes.len() as u64;
        loader.add_file(&file.path, bytes)?;
        progress(&on_progress, &[("phase", "download".into()), ("loaded", (loaded as f64).into()), ("total", (total as f64).into()), ("chunk", file.path.clone().into())])?;
    }
    for (i, chunk) in manifest.chunks.iter().enumerate() {
        let bytes = fetch_bytes(&join(url, &chunk.path), &signal).await?;
        loaded += bytes.len() as u64;
        loader.add_chunk(i, &bytes)?;
        drop(bytes);
        progress(&on_progress, &[("phase", "download".into()), ("loaded", (loaded as f64).into()), ("total", (total as f64).into()), ("chunk", chunk.path.clone().into())])?;
    }
    progress(&on_progress, &[("phase", "build".into())])?;
    Ok(loader.finish()?)
}
