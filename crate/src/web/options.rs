//! JavaScript options objects → [`GenerateParams`], with the option names of the JS API.
//! Unknown names and wrong types are errors naming the option, so a typo never silently
//! falls back to a default.

use js_sys::{Object, Reflect, Uint8Array, Uint8ClampedArray};
use wasm_bindgen::{JsCast, JsValue};

use super::get;
use crate::Error;
use crate::device::BackendChoice;
use crate::model_info::ModelDefaults;
use crate::pipeline::{GenerateParams, Image, Mask};
use crate::scheduler::{SchedulerKind, TimestepSpacing};

/// Every option `generate`, `img2img` and `inpaint` accept.
pub const OPTIONS: [&str; 18] = [
    "prompt",
    "negativePrompt",
    "steps",
    "guidanceScale",
    "scheduler",
    "timestepSpacing",
    "seed",
    "latents",
    "width",
    "height",
    "clipSkip",
    "eta",
    "image",
    "mask",
    "strength",
    "previewEvery",
    "onStep",
    "signal",
];

fn bad(msg: String) -> Error {
    Error::BadInput(msg)
}

/// The first key of the options object `options` that is not in `allowed`, for the caller's
/// "unknown option" error.
pub(crate) fn unknown_key(options: &JsValue, allowed: &[&str]) -> Option<String> {
    Object::keys(options.unchecked_ref::<Object>())
        .iter()
        .map(|key| key.as_string().unwrap_or_default())
        .find(|key| !allowed.contains(&key.as_str()))
}

/// Calls `callback` (an `onProgress`), if given, with an object of `fields`.
pub(crate) fn report(
    callback: &Option<js_sys::Function>,
    fields: &[(&str, JsValue)],
) -> Result<(), JsValue> {
    if let Some(f) = callback {
        let o = Object::new();
        for (k, v) in fields {
            Reflect::set(&o, &(*k).into(), v)?;
        }
        f.call1(&JsValue::NULL, &o)?;
    }
    Ok(())
}

fn number(options: &JsValue, key: &str) -> Result<Option<f64>, Error> {
    let v = get(options, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_f64()
        .map(Some)
        .ok_or_else(|| bad(format!("{key}: must be a number")))
}

fn count(options: &JsValue, key: &str) -> Result<Option<usize>, Error> {
    match number(options, key)? {
        None => Ok(None),
        Some(v) if v >= 0.0 && v.fract() == 0.0 && v <= 1e9 => Ok(Some(v as usize)),
        Some(v) => Err(bad(format!("{key} = {v}: must be a whole number ≥ 0"))),
    }
}

/// `seed`: any u64, as a number (up to 2⁵³ − 1, the whole numbers a JS number holds
/// exactly), a bigint or a decimal string (up to 2⁶⁴ − 1).
fn seed(options: &JsValue) -> Result<Option<u64>, Error> {
    let v = get(options, "seed");
    let range = "must be a whole number from 0 to 18446744073709551615 (2^64 − 1)";
    if v.is_undefined() || v.is_null() {
        Ok(None)
    } else if let Some(n) = v.as_f64() {
        if n >= 0.0 && n.fract() == 0.0 && n <= 9007199254740991.0 {
            Ok(Some(n as u64))
        } else if n.fract() == 0.0 && n > 9007199254740991.0 && n < 18446744073709551616.0 {
            Err(bad(format!(
                "seed = {n}: above 2^53 − 1 a number is not exact; pass it as a bigint or a string"
            )))
        } else {
            Err(bad(format!("seed = {n}: {range}")))
        }
    } else {
        let digits = match v.is_bigint() {
            true => v
                .unchecked_into::<js_sys::BigInt>()
                .to_string(10)
                .ok()
                .map(String::from),
            false => v.as_string(),
        };
        let digits =
            digits.ok_or_else(|| bad(format!("seed: {range}, as a number, bigint or string")))?;
        // u64's parse takes a leading "+"; a seed is digits only.
        match digits.parse::<u64>() {
            Ok(n) if digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
            _ => Err(bad(format!("seed = {digits}: {range}"))),
        }
    }
}

pub(crate) fn text(options: &JsValue, key: &str) -> Result<Option<String>, Error> {
    let v = get(options, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_string()
        .map(Some)
        .ok_or_else(|| bad(format!("{key}: must be a string")))
}

/// An optional callback option (`onStep`, `onProgress`).
pub fn function(options: &JsValue, key: &str) -> Result<Option<js_sys::Function>, Error> {
    let v = get(options, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.dyn_into::<js_sys::Function>()
        .map(Some)
        .map_err(|_| bad(format!("{key}: must be a function")))
}

/// The options of `Generator.create`: `{ backend }` ("auto" when left out).
pub fn backend_choice(options: &JsValue) -> Result<BackendChoice, Error> {
    if options.is_undefined() || options.is_null() {
        return Ok(BackendChoice::Auto);
    }
    if !options.is_object() {
        return Err(bad(
            "Generator.create: pass an options object, e.g. { backend: \"auto\" }".into(),
        ));
    }
    if let Some(key) = unknown_key(options, &["backend"]) {
        return Err(bad(format!(
            "unknown option \"{key}\" of Generator.create; the options are: backend"
        )));
    }
    match text(options, "backend")? {
        Some(name) => BackendChoice::parse(&name),
        None => Ok(BackendChoice::Auto),
    }
}

/// `{ width, height, data }` with RGBA bytes (an `ImageData` works as is).
fn rgba(options: &JsValue, key: &str) -> Result<Option<(usize, usize, Vec<u8>)>, Error> {
    let v = get(options, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    let w = count(&v, "width")?.ok_or_else(|| bad(format!("{key}.width: missing")))?;
    let h = count(&v, "height")?.ok_or_else(|| bad(format!("{key}.height: missing")))?;
    let data = get(&v, "data");
    let bytes = if let Some(a) = data.dyn_ref::<Uint8ClampedArray>() {
        a.to_vec()
    } else if let Some(a) = data.dyn_ref::<Uint8Array>() {
        a.to_vec()
    } else {
        return Err(bad(format!(
            "{key}.data: must be a Uint8ClampedArray or Uint8Array of RGBA pixels"
        )));
    };
    if bytes.len() != w * h * 4 {
        return Err(bad(format!(
            "{key}: {} bytes of data for {w}×{h} RGBA pixels (needs {})",
            bytes.len(),
            w * h * 4
        )));
    }
    Ok(Some((w, h, bytes)))
}

/// Parses `options` for `mode` (`generate`, `img2img`, `inpaint`); what they leave out comes
/// from the model's `defaults`. The seed, when not given, is drawn at random; the one used is
/// in the result.
pub fn params(
    options: &JsValue,
    mode: &str,
    defaults: &ModelDefaults,
) -> Result<GenerateParams, Error> {
    if !options.is_object() {
        return Err(bad(format!(
            "{mode}: pass an options object, e.g. {{ prompt: \"a lighthouse\" }}"
        )));
    }
    if let Some(key) = unknown_key(options, &OPTIONS) {
        return Err(bad(format!(
            "unknown option \"{key}\"; the options are: {}",
            OPTIONS.join(", ")
        )));
    }
    let mut p = GenerateParams::default();
    p.prompt = text(options, "prompt")?.ok_or_else(|| bad("prompt: missing (a string)".into()))?;
    p.negative_prompt = text(options, "negativePrompt")?.unwrap_or_default();
    p.steps = count(options, "steps")?.unwrap_or(defaults.steps);
    p.guidance_scale = number(options, "guidanceScale")?.unwrap_or(defaults.guidance_scale);
    p.scheduler = text(options, "scheduler")?
        .map(|s| SchedulerKind::parse(&s))
        .transpose()?;
    if let Some(spacing) = text(options, "timestepSpacing")? {
        if !TimestepSpacing::NAMES.contains(&spacing.as_str()) {
            let names = TimestepSpacing::NAMES
                .map(|n| format!("\"{n}\""))
                .join(", ");
            return Err(bad(format!(
                "timestepSpacing = \"{spacing}\": must be one of {names}"
            )));
        }
        p.scheduler_overrides
            .push(("timestep_spacing".to_string(), spacing.into()));
    }
    p.seed = seed(options)?.unwrap_or_else(|| (js_sys::Math::random() * 4294967296.0) as u64);
    let latents = get(options, "latents");
    if !latents.is_undefined() && !latents.is_null() {
        let array = latents.dyn_ref::<js_sys::Float32Array>().ok_or_else(|| {
            bad("latents: must be a Float32Array [1, 4, height/8, width/8]".into())
        })?;
        p.latents = Some(array.to_vec());
    }
    p.clip_skip = count(options, "clipSkip")?.unwrap_or(1);
    p.eta = number(options, "eta")?.unwrap_or(0.0);
    p.strength = number(options, "strength")?;
    p.preview_every = count(options, "previewEvery")?.unwrap_or(0);
    let image = rgba(options, "image")?;
    let mask = rgba(options, "mask")?;
    match (mode, &image, &mask) {
        ("generate", None, None) => {}
        ("generate", ..) => {
            return Err(bad(
                "generate: image and mask belong to img2img and inpaint".into(),
            ));
        }
        ("img2img", Some(_), None) => {}
        ("img2img", None, _) => {
            return Err(bad(
                "img2img: image is missing ({ width, height, data })".into()
            ));
        }
        ("img2img", Some(_), Some(_)) => {
            return Err(bad("img2img: takes no mask; use inpaint".into()));
        }
        ("inpaint", Some(_), Some(_)) => {}
        ("inpaint", ..) => {
            return Err(bad(
                "inpaint: needs both image and mask ({ width, height, data })".into(),
            ));
        }
        _ => return Err(bad(format!("unknown mode {mode}"))),
    }
    if let Some((w, h, bytes)) = image {
        p.init_image = Some(Image::from_rgb8(w, h, &bytes, 4)?);
        p.width = w;
        p.height = h;
    }
    if let Some((w, h, bytes)) = mask {
        p.mask = Some(Mask::from_pixels8(w, h, &bytes, 4)?);
    }
    if p.init_image.is_none() {
        p.width = count(options, "width")?.unwrap_or(defaults.width);
        p.height = count(options, "height")?.unwrap_or(defaults.height);
    } else if count(options, "width")?.is_some_and(|w| w != p.width)
        || count(options, "height")?.is_some_and(|h| h != p.height)
    {
        return Err(bad(
            "width/height: the output has the image's size; leave them out".into(),
        ));
    }
    Ok(p)
}

/// An [`Image`] as `{ width, height, data }` with RGBA bytes, ready for `ImageData`.
pub fn image_object(image: &Image) -> Result<JsValue, JsValue> {
    let rgb = image.to_rgb8();
    let mut rgba = Vec::with_capacity(image.width * image.height * 4);
    for p in rgb.chunks_exact(3) {
        rgba.extend_from_slice(&[p[0], p[1], p[2], 255]);
    }
    let out = Object::new();
    Reflect::set(&out, &"width".into(), &(image.width as u32).into())?;
    Reflect::set(&out, &"height".into(), &(image.height as u32).into())?;
    Reflect::set(
        &out,
        &"data".into(),
        &Uint8ClampedArray::from(rgba.as_slice()),
    )?;
    Ok(out.into())
}
