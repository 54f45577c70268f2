//! What a model is ([`ModelInfo`]) and the list of schedulers, as JavaScript objects: the
//! page asks these instead of working them out from a manifest itself.

use js_sys::{Array, Object, Reflect};
use wasm_bindgen::prelude::*;

use crate::model_info::ModelInfo;
use crate::scheduler::SchedulerKind;

fn set(o: &Object, key: &str, value: impl Into<JsValue>) -> Result<(), JsValue> {
    Reflect::set(o, &key.into(), &value.into()).map(|_| ())
}

/// `ModelInfo` (see the TypeScript types in `generator.rs`): sizes in pixels.
pub fn model_info_object(info: &ModelInfo) -> Result<JsValue, JsValue> {
    let defaults = Object::new();
    let d = &info.defaults;
    set(&defaults, "steps", d.steps as u32)?;
    set(&defaults, "guidanceScale", d.guidance_scale)?;
    set(&defaults, "width", d.width as u32)?;
    set(&defaults, "height", d.height as u32)?;
    let prompt = d.prompt.as_deref().map_or(JsValue::NULL, JsValue::from);
    set(&defaults, "prompt", prompt)?;

    let o = Object::new();
    set(&o, "family", info.family.as_str())?;
    set(&o, "width", info.width as u32)?;
    set(&o, "height", info.height as u32)?;
    set(&o, "sizeStep", info.size_step as u32)?;
    set(&o, "latentChannels", info.latent_channels as u32)?;
    let scheduler = info.scheduler.map_or(JsValue::NULL, |k| k.name().into());
    set(&o, "scheduler", scheduler)?;
    set(&o, "inpainting", info.inpainting)?;
    set(&o, "lcm", info.lcm)?;
    set(&o, "defaults", defaults)?;
    Ok(o.into())
}

/// `SchedulerInfo[]`: every scheduler, in [`SchedulerKind::ALL`]'s order.
pub fn schedulers_array() -> Result<JsValue, JsValue> {
    let list = Array::new();
    for kind in SchedulerKind::ALL {
        let o = Object::new();
        set(&o, "name", kind.name())?;
        set(&o, "a1111Name", kind.a1111_name())?;
        set(&o, "className", kind.class_name())?;
        list.push(&o);
    }
    Ok(list.into())
}

/// What the converted model whose `manifest.json` text this is will be once loaded
/// (`ModelInfo`), from its configs alone: for a page to set its controls before downloading
/// the weights. Throws with `code` `"bad-weights"` or `"bad-config"` for a manifest or config
/// the loader would refuse.
#[wasm_bindgen(js_name = modelInfoFromManifest, unchecked_return_type = "ModelInfo")]
pub fn model_info_from_manifest(manifest_json: &str) -> Result<JsValue, JsValue> {
    model_info_object(&ModelInfo::from_manifest(manifest_json)?)
}
