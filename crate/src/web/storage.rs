//! The bindings of `crate/js/storage.js`, the one owner of the IndexedDB store and of
//! fetching model files: what `load` (load.rs) and an import (import.rs) call.

use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/js/storage.js")]
extern "C" {
    #[wasm_bindgen(catch)]
    pub(crate) async fn download(
        url: &str,
        signal: &JsValue,
        on_bytes: &Closure<dyn FnMut(f64)>,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = manifestText, catch)]
    pub(crate) async fn manifest_text(
        model_url: &str,
        manifest_url: &str,
        signal: &JsValue,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = storedManifest, catch)]
    pub(crate) async fn stored_manifest(url: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cacheGet, catch)]
    pub(crate) async fn cache_get(sha256: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cacheHas, catch)]
    pub(crate) async fn cache_has(sha256: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cachePut, catch)]
    pub(crate) async fn cache_put(sha256: &str, bytes: &Uint8Array) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cachePutModel, catch)]
    pub(crate) async fn cache_put_model(
        url: &str,
        manifest: &str,
        shas: Array,
        bytes: f64,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cacheListModels, catch)]
    pub(crate) async fn cache_list_models() -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cacheDeleteModel, catch)]
    pub(crate) async fn cache_delete_model(url: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = cacheDropUnlisted, catch)]
    pub(crate) async fn cache_drop_unlisted(shas: Array) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = storageFree, catch)]
    pub(crate) async fn storage_free() -> Result<JsValue, JsValue>;
}
