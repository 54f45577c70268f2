//! The browser entry points, exported to JavaScript with wasm-bindgen: adapter information,
//! a GPU self-check, and the `Generator` that loads a model and generates images (the
//! engine); `importModel`, the converter of `importFile` (the importer).

// Two wasm modules are built from this crate (wasm-pack.toml): the engine (feature "engine",
// the default) and the importer (feature "importer", `importFile`'s converter), which the
// page loads only when a model is imported, so the engine it loads stays small.
#[cfg(feature = "engine")]
mod engine;
#[cfg(feature = "engine")]
mod generator;
#[cfg(feature = "importer")]
mod import;
#[cfg(feature = "engine")]
mod info;
#[cfg(feature = "engine")]
mod load;
#[cfg_attr(not(feature = "engine"), allow(dead_code))]
mod options;
#[cfg_attr(not(feature = "engine"), allow(dead_code))]
mod storage;

#[cfg(feature = "engine")]
pub use engine::{adapter_info, fetch_manifest, gpu_self_check, resolve_model};
#[cfg(feature = "engine")]
pub(crate) use engine::{adapter_name, describe, request_adapter};
#[cfg(feature = "engine")]
pub use generator::Generator;
#[cfg(feature = "importer")]
pub use import::import_model;
#[cfg(feature = "engine")]
pub use info::model_info_from_manifest;

use js_sys::Reflect;
use wasm_bindgen::prelude::*;

use crate::Error;

#[wasm_bindgen(start)]
fn start() {
    // A Rust panic shows its message in the console instead of "unreachable executed".
    console_error_panic_hook::set_once();
}

impl From<Error> for JsValue {
    fn from(e: Error) -> JsValue {
        let err = js_sys::Error::new(&e.to_string());
        let code = match e {
            Error::NoGpu(_) => "no-webgpu",
            Error::Gpu(_) => "gpu",
            Error::DeviceLost(_) => "device-lost",
            Error::OutOfMemory(_) => "out-of-memory",
            Error::Tokenizer(_) => "tokenizer",
            Error::BadWeights(_) => "bad-weights",
            Error::BadConfig(_) => "bad-config",
            Error::BadInput(_) => "bad-input",
            Error::Io(_) => "io",
            Error::Cancelled => "cancelled",
        };
        let _ = Reflect::set(&err, &"code".into(), &code.into());
        err.into()
    }
}

/// The rejection of a cancelled call (a generation, a load): an `Error` named `AbortError`, as
/// `fetch` and other signal-taking APIs reject, with our `code` "cancelled".
pub(crate) fn abort_error() -> JsValue {
    let e: JsValue = Error::Cancelled.into();
    let _ = Reflect::set(&e, &"name".into(), &"AbortError".into());
    e
}

/// Whether `signal` (an `AbortSignal`, or undefined) has aborted.
pub(crate) fn aborted(signal: &JsValue) -> bool {
    get(signal, "aborted").as_bool().unwrap_or(false)
}

pub(crate) fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &key.into()).unwrap_or(JsValue::UNDEFINED)
}
