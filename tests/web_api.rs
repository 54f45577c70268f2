//! The JavaScript API (`Generator`) in the browser, driven from Rust through the same JS
//! values a page passes: options objects, RGBA images, `onStep`, `AbortSignal`. Images are
//! compared with the diffusers goldens of `tests/pipeline.rs` (within 1/255 after 8-bit
//! rounding). Browser tier only: the API is wasm-bindgen's.

#![cfg(target_arch = "wasm32")]

mod common;

use common::npy;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array, Uint8ClampedArray};
use sd_webgpu::web::Generator;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! model_object {
    ($m:literal) => {{
        let files = Object::new();
        for (path, bytes) in fixture_model!($m) {
            Reflect::set(&files, &path.into(), &Uint8Array::from(bytes)).unwrap();
        }
        JsValue::from(files)
    }};
}

fn set(o: &Object, key: &str, value: impl Into<JsValue>) {
    Reflect::set(o, &key.into(), &value.into()).unwrap();
}

fn options(prompt: &str) -> Object {
    let o = Object::new();
    set(&o, "prompt", prompt);
    set(&o, "width", 32);
    set(&o, "height", 32);
    o
}

async fn settle(p: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

/// `{ width, height, data }` RGBA from a float image fixture ([H, W, 3] or a [H, W] mask).
fn rgba_object(fixture: &[u8]) -> JsValue {
    let (shape, values) = npy(fixture);
    let channels = shape.get(2).copied().unwrap_or(1);
    let mut data = Vec::with_capacity(shape[0] * shape[1] * 4);
    for px in values.chunks(channels) {
        let v = |c: usize| (px[c.min(channels - 1)] * 255.0).round() as u8;
        data.extend_from_slice(&[v(0), v(1), v(2), 255]);
    }
    let o = Object::new();
    set(&o, "width", shape[1] as u32);
    set(&o, "height", shape[0] as u32);
    set(&o, "data", Uint8ClampedArray::from(data.as_slice()));
    o.into()
}

/// The result's RGBA against a golden image: every channel within 1/255.
fn check_image(what: &str, result: &JsValue, golden: &[u8]) -> Result<(), String> {
    let (shape, want) = npy(golden);
    let get = |k: &str| Reflect::get(result, &k.into()).unwrap();
    let (w, h) = (get("width").as_f64().unwrap() as usize, get("height").as_f64().unwrap() as usize);
    let data = get("data").dyn_into::<Uint8ClampedArray>().map_err(|_| format!("{what}: data is not RGBA bytes"))?.to_vec();
    if (h, w) != (shape[0], shape[1]) || data.len() != w * h * 4 {
        return Err(format!("{what}: {w}×{h} with {} bytes", data.len()));
    }
    let mut worst = 0i32;
    for (i, px) in data.chunks(4).enumerate() {
        for c in 0..3 {
            let want = (want[i * 3 + c] * 255.0).round() as i32;
            worst = worst.max((px[c] as i32 - want).abs());
        }
        if px[3] != 255 {
            return Err(format!("{what}: alpha {} at pixel {i}", px[3]));
        }
    }
    console_log!("{what}: worst channel difference {worst}/255");
    if worst <= 1 { Ok(()) } else { Err(format!("{what}: a channel differs by {worst}/255")) }
}

#[wasm_bindgen_test]
async fn generate_matches_diffusers_with_progress() {
    let generator = Generator::create().await.unwrap();
    assert!(!generator.loaded());
    generator.load_files(model_object!("sd15-tiny")).unwrap();
    let o = options("a red cube on a table");
    set(&o, "scheduler", "euler-a");
    set(&o, "steps", 4);
    set(&o, "seed", 11);
    set(&o, "previewEvery", 2);
    let calls = Array::new();
    let record = Function::new_with_args("calls, p", "calls.push(p); return true;").bind1(&JsValue::NULL, &calls);
    set(&o, "onStep", record);
    let result = settle(generator.generate(o.into())).await.unwrap();
    check_image("generate", &result, fixture!("pipeline/sd15_euler_a_seeded_image.npy")).unwrap();
    assert_eq!(Reflect::get(&result, &"seed".into()).unwrap().as_f64(), Some(11.0));
    assert_eq!(calls.length(), 4);
    let preview = |i: u32| Reflect::get(&calls.get(i), &"preview".into()).unwrap();
    assert!(preview(0).is_null() && !preview(1).is_null() && !preview(3).is_null());
    assert_eq!(Reflect::get(&preview(1), &"width".into()).unwrap().as_f64(), Some(4.0));
}

#[wasm_bindgen_test]
async fn inpaint_matches_diffusers() {
    let generator = Generator::create().await.unwrap();
    generator.load_files(model_object!("sd15-inpaint-tiny")).unwrap();
    let o = Object::new();
    set(&o, "prompt", "a red cube on a table");
    set(&o, "negativePrompt", "blurry");
    set(&o, "steps", 4);
    set(&o, "seed", 18);
    set(&o, "image", rgba_object(fixture!("pipeline/inpaint9_ddim_cfg_init.npy")));
    set(&o, "mask", rgba_object(fixture!("pipeline/inpaint9_ddim_cfg_mask.npy")));
    let result = settle(generator.inpaint(o.into())).await.unwrap();
    check_image("inpaint", &result, fixture!("pipeline/inpaint9_ddim_cfg_image.npy")).unwrap();
}

#[wasm_bindgen_test]
async fn abort_bad_options_and_busy() {
    let generator = Generator::create().await.unwrap();
    // No model yet.
    let err = settle(generator.generate(options("x").into())).await.unwrap_err();
    assert_eq!(Reflect::get(&err, &"code".into()).unwrap().as_string().as_deref(), Some("bad-input"));
    generator.load_files(model_object!("sd15-tiny")).unwrap();

    // AbortSignal: aborted in onStep after step 1; the promise rejects with AbortError.
    let controller = Reflect::construct(
        &Reflect::get(&js_sys::global(), &"AbortController".into()).unwrap().dyn_into::<Function>().unwrap(),
        &Array::new(),
    )
    .unwrap();
    let o = options("x");
    set(&o, "steps", 3);
    set(&o, "signal", Reflect::get(&controller, &"signal".into()).unwrap());
    let abort = Function::new_with_args("c, p", "if (p.step === 1) c.abort(); return true;").bind1(&JsValue::NULL, &controller);
    set(&o, "onStep", abort);
    let err = settle(generator.generate(o.into())).await.unwrap_err();
    assert_eq!(Reflect::get(&err, &"name".into()).unwrap().as_string().as_deref(), Some("AbortError"));

    // The next call works; a seed gives the same image twice.
    let run = |seed: u32| {
        let o = options("x");
        set(&o, "steps", 1);
        set(&o, "seed", seed);
        generator.generate(o.into())
    };
    let a = settle(run(5)).await.unwrap();
    let b = settle(run(5)).await.unwrap();
    let bytes = |r: &JsValue| Reflect::get(r, &"data".into()).unwrap().dyn_into::<Uint8ClampedArray>().unwrap().to_vec();
    assert_eq!(bytes(&a), bytes(&b));

    // Bad options are refused, naming the option.
    for (key, value, says) in [
        ("stepz", JsValue::from(3), "unknown option \"stepz\""),
        ("steps", JsValue::from("many"), "steps: must be a number"),
        ("scheduler", JsValue::from("warp"), "unknown scheduler"),
        ("width", JsValue::from(33), "width = 33"),
        ("onStep", JsValue::from(1), "onStep: must be a function"),
    ] {
        let o = options("x");
        set(&o, key, value);
        let err = settle(generator.generate(o.into())).await.unwrap_err();
        let message = Reflect::get(&err, &"message".into()).unwrap().as_string().unwrap_or_default();
        assert!(message.contains(says), "{key}: {message}");
        assert_eq!(Reflect::get(&err, &"code".into()).unwrap().as_string().as_deref(), Some("bad-input"));
    }
    // img2img without an image, inpaint without a mask.
    let err = settle(generator.img2img(options("x").into())).await.unwrap_err();
    assert!(Reflect::get(&err, &"message".into()).unwrap().as_string().unwrap().contains("image is missing"));

    // One generation at a time: a second call while one runs is refused.
    let first = run(1);
    let second = settle(run(2)).await.unwrap_err();
    assert!(Reflect::get(&second, &"message".into()).unwrap().as_string().unwrap().contains("one at a time"));
    settle(first).await.unwrap();
}
