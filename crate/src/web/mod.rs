//! The browser entry points, exported to JavaScript with wasm-bindgen: adapter information,
//! a GPU self-check, and the [`Generator`] that loads a model and generates images.

mod generator;
mod info;
mod load;
mod options;

pub use generator::Generator;
pub use info::model_info_from_manifest;

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::{Error, device};

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

pub(crate) fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

/// What the browser's WebGPU adapter is and can do: `{ name, vendor, architecture,
/// description, isFallbackAdapter, shaderF16, limits: {...} }`.
///
/// Rejects with `code = "no-webgpu"` when the browser has no WebGPU or no adapter.
#[wasm_bindgen(js_name = adapterInfo)]
pub async fn adapter_info() -> Result<JsValue, JsValue> {
    let navigator = get(&js_sys::global(), "navigator");
    let gpu = get(&navigator, "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return Err(Error::NoGpu("this browser has no navigator.gpu (WebGPU)".into()).into());
    }
    let request: js_sys::Function = get(&gpu, "requestAdapter").dyn_into()?;
    let options = Object::new();
    Reflect::set(
        &options,
        &"powerPreference".into(),
        &"high-performance".into(),
    )?;
    let adapter = JsFuture::from(Promise::from(request.call1(&gpu, &options)?)).await?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err(Error::NoGpu(
            "the browser offered no WebGPU adapter (GPU blocklisted?)".into(),
        )
        .into());
    }

    let info = get(&adapter, "info");
    let features = get(&adapter, "features");
    let has: js_sys::Function = get(&features, "has").dyn_into()?;
    let shader_f16 = has.call1(&features, &"shader-f16".into())?;
    let limits = get(&adapter, "limits");

    let out = Object::new();
    let vendor = get(&info, "vendor");
    let architecture = get(&info, "architecture");
    let description = get(&info, "description");
    // Browsers often leave `description` empty: fall back to "vendor architecture".
    let text = |v: &JsValue| v.as_string().filter(|s| !s.is_empty());
    let name = text(&description).unwrap_or_else(|| {
        let parts: Vec<String> = [&vendor, &architecture]
            .into_iter()
            .filter_map(text)
            .collect();
        if parts.is_empty() {
            "unknown adapter".into()
        } else {
            parts.join(" ")
        }
    });
    Reflect::set(&out, &"name".into(), &name.into())?;
    Reflect::set(&out, &"vendor".into(), &vendor)?;
    Reflect::set(&out, &"architecture".into(), &architecture)?;
    Reflect::set(&out, &"description".into(), &description)?;
    let fallback = get(&info, "isFallbackAdapter");
    let fallback = if fallback.is_undefined() {
        get(&adapter, "isFallbackAdapter")
    } else {
        fallback
    };
    Reflect::set(&out, &"isFallbackAdapter".into(), &fallback)?;
    Reflect::set(&out, &"shaderF16".into(), &shader_f16)?;

    // The limits that decide whether Stable Diffusion fits: buffer sizes and workgroup shape.
    let picked = Object::new();
    for key in [
        "maxBufferSize",
        "maxStorageBufferBindingSize",
        "maxStorageBuffersPerShaderStage",
        "maxComputeWorkgroupStorageSize",
        "maxComputeInvocationsPerWorkgroup",
        "maxComputeWorkgroupSizeX",
        "maxComputeWorkgroupsPerDimension",
    ] {
        Reflect::set(&picked, &key.into(), &get(&limits, key))?;
    }
    Reflect::set(&out, &"limits".into(), &picked)?;
    Ok(out.into())
}

/// Runs one small matmul through burn on WebGPU and compares it with the CPU; resolves to
/// the largest absolute difference (see [`device::self_check`]).
#[wasm_bindgen(js_name = gpuSelfCheck)]
pub async fn gpu_self_check() -> Result<f64, JsValue> {
    let device = device::gpu().await?;
    Ok(device::self_check(&device).await?)
}
