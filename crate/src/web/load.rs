//! `Generator.load(modelUrl, { onProgress, signal })`: a converted model (see
//! [`crate::format`]) fetched file by file and streamed onto the GPU chunk by chunk
//! ([`StreamingLoader`]), so the wasm heap holds one chunk at a time.
//!
//! Uses the global `fetch` (window or worker). Every file is kept in IndexedDB by its sha256
//! (`crate/js/chunk_cache.js`): a model loads a second time with only its manifest fetched,
//! and with no network at all from the stored manifest. Before downloading, the space
//! needed is checked against `navigator.storage.estimate()` (and persistent storage is
//! requested). Progress events: `{ phase: "download", loaded, total, chunk, cached }` after
//! each file (bytes, all files together), then `{ phase: "build" }`.

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::get;
use crate::format::stream::StreamingLoader;
use crate::format::{MANIFEST, Manifest};
use crate::model::StableDiffusion;
use crate::{Device, Error};

#[wasm_bindgen(module = "/js/chunk_cache.js")]
extern "C" {
    #[wasm_bindgen(js_name = cacheGet, catch)]
    async fn cache_get(sha256: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cacheHas, catch)]
    async fn cache_has(sha256: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cachePut, catch)]
    async fn cache_put(sha256: &str, bytes: &Uint8Array) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cacheGetModel, catch)]
    async fn cache_get_model(url: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cachePutModel, catch)]
    async fn cache_put_model(
        url: &str,
        manifest: &str,
        shas: Array,
        bytes: f64,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cacheListModels, catch)]
    pub(crate) async fn cache_list_models() -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cacheDeleteModel, catch)]
    pub(crate) async fn cache_delete_model(url: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = storageFree, catch)]
    async fn storage_free() -> Result<JsValue, JsValue>;
}

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
    let buffer = JsFuture::from(Promise::from(array_buffer.call0(&response)?))
        .await
        .map_err(|e| network_error(url, e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// A failed fetch: an abort stays an `AbortError`; anything else becomes an `io` error.
fn network_error(url: &str, e: JsValue) -> JsValue {
    if get(&e, "name").as_string().as_deref() == Some("AbortError") {
        return e;
    }
    let why = get(&e, "message")
        .as_string()
        .unwrap_or_else(|| format!("{e:?}"));
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

/// A JS `Error` with `code` "quota".
fn quota_error(message: String) -> JsValue {
    let e = js_sys::Error::new(&message);
    let _ = Reflect::set(&e, &"code".into(), &"quota".into());
    e.into()
}

/// The bytes of one file of the model: from IndexedDB when stored, else downloaded (and
/// stored once the loader has checked them, see `load`). Returns whether it came cached.
async fn file_bytes(
    url: &str,
    path: &str,
    sha256: &str,
    signal: &JsValue,
) -> Result<(Vec<u8>, bool), JsValue> {
    let cached = cache_get(sha256).await.unwrap_or(JsValue::UNDEFINED);
    if let Some(bytes) = cached.dyn_ref::<Uint8Array>() {
        return Ok((bytes.to_vec(), true));
    }
    Ok((fetch_bytes(&join(url, path), signal).await?, false))
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

    // The manifest from the network, or the stored one when offline.
    let text = match fetch_bytes(&join(url, MANIFEST), &signal).await {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| Error::BadWeights(format!("{MANIFEST} is not UTF-8 text")))?,
        Err(e) if get(&e, "name").as_string().as_deref() == Some("AbortError") => return Err(e),
        Err(e) => match get(
            &cache_get_model(url).await.unwrap_or(JsValue::UNDEFINED),
            "manifest",
        )
        .as_string()
        {
            Some(text) => text,
            None => return Err(e),
        },
    };
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
        let (bytes, cached) = file_bytes(url, &entry.path, &entry.sha256, &signal).await?;
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
        progress(
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
    progress(&on_progress, &[("phase", "build".into())])?;
    Ok(loader.finish()?)
}
