//! The engine's functions that need no model: adapter information, a GPU self-check, model
//! ids and manifests.

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::{get, load};
use crate::device::AdapterDescription;
use crate::{Error, device};

/// The browser's WebGPU adapter (a `GPUAdapter`), or why there is none.
pub(crate) async fn request_adapter() -> Result<JsValue, String> {
    let navigator = get(&js_sys::global(), "navigator");
    let gpu = get(&navigator, "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return Err("this browser has no navigator.gpu (WebGPU)".into());
    }
    let options = Object::new();
    let _ = Reflect::set(
        &options,
        &"powerPreference".into(),
        &"high-performance".into(),
    );
    let adapter = async {
        let request: js_sys::Function = get(&gpu, "requestAdapter").dyn_into()?;
        JsFuture::from(Promise::from(request.call1(&gpu, &options)?)).await
    }
    .await
    .map_err(|e| format!("requestAdapter failed: {e:?}"))?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err("the browser offered no WebGPU adapter (GPU blocklisted?)".into());
    }
    Ok(adapter)
}

/// `isFallbackAdapter`: on `adapter.info` in current browsers, on the adapter in older ones.
fn is_fallback(adapter: &JsValue) -> JsValue {
    let flag = get(&get(adapter, "info"), "isFallbackAdapter");
    if flag.is_undefined() {
        get(adapter, "isFallbackAdapter")
    } else {
        flag
    }
}

/// The adapter's name for people: its `description`, which browsers often leave empty, else
/// "vendor architecture".
pub(crate) fn adapter_name(adapter: &JsValue) -> String {
    let info = get(adapter, "info");
    let text = |key: &str| get(&info, key).as_string().filter(|s| !s.is_empty());
    text("description").unwrap_or_else(|| {
        let parts: Vec<String> = ["vendor", "architecture"]
            .into_iter()
            .filter_map(text)
            .collect();
        if parts.is_empty() {
            "unknown adapter".into()
        } else {
            parts.join(" ")
        }
    })
}

/// What [`device::choose_backend`] needs to know of `adapter`.
pub(crate) fn describe(adapter: &JsValue) -> AdapterDescription {
    let info = get(adapter, "info");
    let text = ["vendor", "architecture", "device", "description"]
        .iter()
        .filter_map(|key| get(&info, key).as_string())
        .collect::<Vec<_>>()
        .join(" ");
    AdapterDescription {
        text,
        is_fallback: is_fallback(adapter).as_bool(),
    }
}

/// Where model id `model` is fetched from and stored under, as `load` resolves it (see
/// `crate::hub`): `{ url, name }` (`name`: the A1111 `Model:` name, or `null`). Throws
/// `bad-input` for a malformed id.
#[wasm_bindgen(js_name = resolveModel, unchecked_return_type = "{ url: string; name: string | null }")]
pub fn resolve_model(model: &str) -> Result<JsValue, JsValue> {
    let source = crate::hub::resolve(model)?;
    let out = Object::new();
    Reflect::set(&out, &"url".into(), &source.url.into())?;
    let name = source.name.map_or(JsValue::NULL, JsValue::from);
    Reflect::set(&out, &"name".into(), &name)?;
    Ok(out.into())
}

/// The text of a converted model's `manifest.json` (its files, sizes, quantization and
/// configs), for a page to show a model before loading it: from the network, else the copy
/// stored in this browser with the model. `model`: a folder URL or `hf:user/repo[@revision]
/// [/folder]` (see `crate::hub`). Rejects with code `"io"` when neither has it,
/// `"bad-input"` for a malformed id.
#[wasm_bindgen(js_name = fetchManifest)]
pub async fn fetch_manifest(model: String) -> Result<String, JsValue> {
    let source = crate::hub::resolve(&model)?;
    load::fetch_manifest(&source.url, &JsValue::UNDEFINED).await
}

/// What the browser's WebGPU adapter is and can do: `{ name, vendor, architecture,
/// description, isFallbackAdapter, shaderF16, limits: {...} }`.
///
/// Rejects with `code = "no-webgpu"` when the browser has no WebGPU or no adapter.
#[wasm_bindgen(js_name = adapterInfo)]
pub async fn adapter_info() -> Result<JsValue, JsValue> {
    let adapter = request_adapter().await.map_err(Error::NoGpu)?;
    let info = get(&adapter, "info");
    let features = get(&adapter, "features");
    let has: js_sys::Function = get(&features, "has").dyn_into()?;
    let shader_f16 = has.call1(&features, &"shader-f16".into())?;
    let limits = get(&adapter, "limits");

    let out = Object::new();
    let vendor = get(&info, "vendor");
    let architecture = get(&info, "architecture");
    let description = get(&info, "description");
    let name = adapter_name(&adapter);
    Reflect::set(&out, &"name".into(), &name.into())?;
    Reflect::set(&out, &"vendor".into(), &vendor)?;
    Reflect::set(&out, &"architecture".into(), &architecture)?;
    Reflect::set(&out, &"description".into(), &description)?;
    Reflect::set(&out, &"isFallbackAdapter".into(), &is_fallback(&adapter))?;
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
