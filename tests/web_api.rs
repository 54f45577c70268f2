//! The JavaScript API (`Generator`) in the browser, driven from Rust through the same JS
//! values a page passes: options objects, RGBA images, `onStep`, `AbortSignal`. Images are
//! compared with the diffusers goldens of `tests/pipeline.rs` (within 1/255 after 8-bit
//! rounding). Browser tier only: the API is wasm-bindgen's.
//!
//! The generation checks run on the CPU engine (what `backend: "auto"` picks on a software
//! adapter); what only a GPU has (a lost device, running out of memory, q4 weights kept at
//! 4 bits in the kernels) on WebGPU, SwiftShader here.

#![cfg(target_arch = "wasm32")]

mod common;

use common::npy;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array, Uint8ClampedArray};
use sd_webgpu::web::{Generator, model_info_from_manifest};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

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

/// A string property of a JS object; "" when it is missing or not a string.
fn text(o: &JsValue, key: &str) -> String {
    Reflect::get(o, &key.into())
        .ok()
        .and_then(|v| v.as_string())
        .unwrap_or_default()
}

fn options(prompt: &str) -> Object {
    let o = Object::new();
    set(&o, "prompt", prompt);
    set(&o, "width", 32);
    set(&o, "height", 32);
    o
}

/// A generator on `backend` ("auto", "webgpu" or "cpu"). Every GPUDevice it requests is kept
/// (see [`keep_gpu_devices`]).
async fn create(backend: &str) -> Generator {
    keep_gpu_devices();
    let o = Object::new();
    set(&o, "backend", backend);
    Generator::create(o.into()).await.unwrap()
}

/// Keeps every GPUDevice requested from now on in `globalThis.gpuDevices`, by wrapping
/// `GPUAdapter.prototype.requestDevice`, so a test can raise errors on the engine's real device
/// or destroy it as a driver reset would: the crate itself has no test hooks.
fn keep_gpu_devices() {
    Function::new_no_args(
        "if (typeof GPUAdapter === 'undefined' || globalThis.gpuDevices) return; \
         const request = GPUAdapter.prototype.requestDevice; globalThis.gpuDevices = []; \
         GPUAdapter.prototype.requestDevice = async function (...args) { \
           const device = await request.apply(this, args); globalThis.gpuDevices.push(device); return device; };",
    )
    .call0(&JsValue::NULL)
    .unwrap();
}

/// The engine's current GPUDevice (the last one requested).
fn gpu_device() -> JsValue {
    let device = Function::new_no_args("return globalThis.gpuDevices?.at(-1);")
        .call0(&JsValue::NULL)
        .unwrap();
    assert!(device.is_object(), "no GPUDevice was requested");
    device
}

/// Destroys the engine's GPUDevice, as a driver reset would.
fn lose_gpu_device() {
    let destroy: Function = Reflect::get(&gpu_device(), &"destroy".into())
        .unwrap()
        .dyn_into()
        .unwrap();
    destroy.call0(&gpu_device()).unwrap();
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
    let (w, h) = (
        get("width").as_f64().unwrap() as usize,
        get("height").as_f64().unwrap() as usize,
    );
    let data = get("data")
        .dyn_into::<Uint8ClampedArray>()
        .map_err(|_| format!("{what}: data is not RGBA bytes"))?
        .to_vec();
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
    if worst <= 1 {
        Ok(())
    } else {
        Err(format!("{what}: a channel differs by {worst}/255"))
    }
}

/// `backend: "auto"` takes the CPU engine on a software adapter and WebGPU on a GPU, and
/// says which and why; an explicit choice is kept; bad options are refused.
#[wasm_bindgen_test]
async fn backend_is_chosen_and_reported() {
    let adapter = sd_webgpu::web::adapter_info().await.unwrap();
    let adapter_name = text(&adapter, "name");
    let software = Reflect::get(&adapter, &"isFallbackAdapter".into())
        .unwrap()
        .as_bool()
        == Some(true)
        || adapter_name.to_lowercase().contains("swiftshader");
    let field = |g: &Generator, k: &str| text(&g.backend().unwrap(), k);

    let auto = Generator::create(JsValue::UNDEFINED).await.unwrap();
    console_log!(
        "auto on \"{adapter_name}\": {:?}",
        js_sys::JSON::stringify(&auto.backend().unwrap()).unwrap()
    );
    assert_eq!(
        field(&auto, "kind"),
        if software { "cpu" } else { "webgpu" }
    );
    assert_eq!(field(&auto, "adapter"), adapter_name);
    let reason = field(&auto, "reason");
    assert!(
        reason.contains(if software { "software" } else { "hardware" }),
        "{reason}"
    );

    let gpu = create("webgpu").await;
    assert_eq!(
        (field(&gpu, "kind"), field(&gpu, "reason")),
        ("webgpu".into(), "asked for".into())
    );
    let cpu = create("cpu").await;
    assert_eq!(field(&cpu, "kind"), "cpu");
    let no_adapter = Reflect::get(&cpu.backend().unwrap(), &"adapter".into()).unwrap();
    assert!(no_adapter.is_null(), "not asked for: {no_adapter:?}");

    for (options, says) in [
        (
            r#"{"backend":"gpu"}"#,
            r#"backend = "gpu": must be one of "auto", "webgpu", "cpu""#,
        ),
        (r#"{"backend":1}"#, "backend: must be a string"),
        (
            r#"{"backends":"cpu"}"#,
            r#"unknown option "backends" of Generator.create"#,
        ),
    ] {
        let err = Generator::create(js_sys::JSON::parse(options).unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(text(&err, "code"), "bad-input", "{options}");
        assert!(
            text(&err, "message").contains(says),
            "{options}: {}",
            text(&err, "message")
        );
    }
}

#[wasm_bindgen_test]
async fn generate_matches_diffusers_with_progress() {
    let generator = create("cpu").await;
    assert!(!generator.loaded());
    generator.load_files(model_object!("sd15-tiny")).unwrap();
    let o = options("a red cube on a table");
    set(&o, "scheduler", "euler-a");
    set(&o, "steps", 4);
    set(&o, "seed", 11);
    set(&o, "previewEvery", 2);
    let calls = Array::new();
    let record = Function::new_with_args("calls, p", "calls.push(p); return true;")
        .bind1(&JsValue::NULL, &calls);
    set(&o, "onStep", record);
    let result = settle(generator.generate(o.into())).await.unwrap();
    check_image(
        "generate",
        &result,
        fixture!("pipeline/sd15_euler_a_seeded_image.npy"),
    )
    .unwrap();
    assert_eq!(text(&result, "seed"), "11");
    // The A1111 parameters text; a model from loadFiles has no name, so no `Model:` field.
    assert_eq!(
        text(&result, "parameters"),
        "a red cube on a table\n\
             Steps: 4, Sampler: Euler a, CFG scale: 7.5, Seed: 11, Size: 32x32"
    );
    assert_eq!(calls.length(), 4);
    let preview = |i: u32| Reflect::get(&calls.get(i), &"preview".into()).unwrap();
    assert!(preview(0).is_null() && !preview(1).is_null() && !preview(3).is_null());
    assert_eq!(
        Reflect::get(&preview(1), &"width".into()).unwrap().as_f64(),
        Some(4.0)
    );

    // `timestepSpacing` reaches the scheduler (the CLI's --timestep-spacing): one Euler step
    // from diffusers' latents is timestep 999 with "trailing", 1 with the config's "leading".
    let o = options("a bowl of fruit");
    set(&o, "scheduler", "euler");
    set(&o, "timestepSpacing", "trailing");
    set(&o, "steps", 1);
    set(&o, "guidanceScale", 0.0);
    let (_, latents) = npy(fixture!("pipeline/sd15_turbo_euler_trailing_latents.npy"));
    set(
        &o,
        "latents",
        js_sys::Float32Array::from(latents.as_slice()),
    );
    let result = settle(generator.generate(o.into())).await.unwrap();
    check_image(
        "timestepSpacing",
        &result,
        fixture!("pipeline/sd15_turbo_euler_trailing_image.npy"),
    )
    .unwrap();
}

/// 9-channel inpainting with CFG at 40×24 (a size the UNet's up blocks must upsample to
/// their skips' sizes), the size taken from the image.
#[wasm_bindgen_test]
async fn inpaint_matches_diffusers() {
    let generator = create("cpu").await;
    generator
        .load_files(model_object!("sd15-inpaint-tiny"))
        .unwrap();
    let o = Object::new();
    set(&o, "prompt", "a photo of a cat");
    set(&o, "steps", 3);
    set(&o, "seed", 23);
    set(
        &o,
        "image",
        rgba_object(fixture!("pipeline/inpaint9_ddim_cfg_40x24_init.npy")),
    );
    set(
        &o,
        "mask",
        rgba_object(fixture!("pipeline/inpaint9_ddim_cfg_40x24_mask.npy")),
    );
    let result = settle(generator.inpaint(o.into())).await.unwrap();
    check_image(
        "inpaint",
        &result,
        fixture!("pipeline/inpaint9_ddim_cfg_40x24_image.npy"),
    )
    .unwrap();
}

#[wasm_bindgen_test]
async fn abort_bad_options_and_busy() {
    let generator = create("cpu").await;
    // No model yet.
    let err = settle(generator.generate(options("x").into()))
        .await
        .unwrap_err();
    assert_eq!(text(&err, "code"), "bad-input");
    generator.load_files(model_object!("sd15-tiny")).unwrap();

    // AbortSignal: aborted in onStep after step 1; the promise rejects with AbortError.
    let controller = Reflect::construct(
        &Reflect::get(&js_sys::global(), &"AbortController".into())
            .unwrap()
            .dyn_into::<Function>()
            .unwrap(),
        &Array::new(),
    )
    .unwrap();
    let o = options("x");
    set(&o, "steps", 3);
    set(
        &o,
        "signal",
        Reflect::get(&controller, &"signal".into()).unwrap(),
    );
    let abort = Function::new_with_args("c, p", "if (p.step === 1) c.abort(); return true;")
        .bind1(&JsValue::NULL, &controller);
    set(&o, "onStep", abort);
    let err = settle(generator.generate(o.into())).await.unwrap_err();
    assert_eq!(text(&err, "name"), "AbortError");

    // The next call works; a seed gives the same image twice.
    let run = |seed: u32| {
        let o = options("x");
        set(&o, "steps", 1);
        set(&o, "seed", seed);
        generator.generate(o.into())
    };
    let a = settle(run(5)).await.unwrap();
    let b = settle(run(5)).await.unwrap();
    let bytes = |r: &JsValue| {
        Reflect::get(r, &"data".into())
            .unwrap()
            .dyn_into::<Uint8ClampedArray>()
            .unwrap()
            .to_vec()
    };
    assert_eq!(bytes(&a), bytes(&b));

    // Seeds are u64: above 2^53 − 1 as a bigint or a decimal string, given back exactly.
    let top = "18446744073709551615";
    let mut images = Vec::new();
    for seed in [
        JsValue::from(js_sys::BigInt::new(&JsValue::from(top)).unwrap()),
        JsValue::from(top),
    ] {
        let o = options("x");
        set(&o, "steps", 1);
        set(&o, "seed", seed);
        let result = settle(generator.generate(o.into())).await.unwrap();
        assert_eq!(text(&result, "seed"), top);
        images.push(bytes(&result));
    }
    assert_eq!(
        images[0], images[1],
        "the same seed as a bigint and as a string"
    );
    assert_ne!(images[0], bytes(&a), "seed 2^64 − 1 is not seed 5");

    // Bad options are refused, naming the option.
    for (key, value, says) in [
        ("stepz", JsValue::from(3), "unknown option \"stepz\""),
        ("steps", JsValue::from("many"), "steps: must be a number"),
        ("scheduler", JsValue::from("warp"), "unknown scheduler"),
        (
            "timestepSpacing",
            JsValue::from("sometimes"),
            "timestepSpacing = \"sometimes\"",
        ),
        ("width", JsValue::from(33), "width = 33"),
        (
            "seed",
            JsValue::from("18446744073709551616"),
            "seed = 18446744073709551616: must be a whole number",
        ),
        (
            "seed",
            JsValue::from(9007199254740993.0),
            "pass it as a bigint or a string",
        ),
        (
            "seed",
            JsValue::from(-1),
            "seed = -1: must be a whole number",
        ),
        (
            "seed",
            JsValue::from("+7"),
            "seed = +7: must be a whole number",
        ),
        ("onStep", JsValue::from(1), "onStep: must be a function"),
    ] {
        let o = options("x");
        set(&o, key, value);
        let err = settle(generator.generate(o.into())).await.unwrap_err();
        let message = text(&err, "message");
        assert!(message.contains(says), "{key}: {message}");
        assert_eq!(text(&err, "code"), "bad-input");
    }
    // img2img without an image, inpaint without a mask.
    let err = settle(generator.img2img(options("x").into()))
        .await
        .unwrap_err();
    assert!(text(&err, "message").contains("image is missing"));

    // One generation at a time: a second call while one runs is refused.
    let first = run(1);
    let second = settle(run(2)).await.unwrap_err();
    assert!(text(&second, "message").contains("one at a time"));
    settle(first).await.unwrap();
}

/// A model given as files cannot be loaded again by the generator after a lost device: the
/// next generation rejects with code "device-lost" saying to give it again, which works.
#[wasm_bindgen_test]
async fn load_files_model_is_given_again_after_a_lost_device() {
    let generator = create("webgpu").await;
    generator.load_files(model_object!("sd15-tiny")).unwrap();
    lose_gpu_device();
    let tick = Function::new_no_args("return new Promise((resolve) => setTimeout(resolve, 100));");
    JsFuture::from(Promise::from(tick.call0(&JsValue::NULL).unwrap()))
        .await
        .unwrap();
    let code = |e: &JsValue| text(e, "code");
    let message = |e: &JsValue| text(e, "message");

    // loadFiles is synchronous and cannot make a device: on the lost one it refuses.
    let err = generator
        .load_files(model_object!("sd15-tiny"))
        .unwrap_err();
    assert_eq!(code(&err), "device-lost", "{}", message(&err));
    assert!(
        message(&err).contains("Generator.create() again"),
        "{}",
        message(&err)
    );

    // The next generation makes a new device but has no model for it.
    let o = options("a red cube on a table");
    set(&o, "scheduler", "euler-a");
    set(&o, "steps", 4);
    set(&o, "seed", 11);
    let err = settle(generator.generate(o.clone().into()))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "device-lost", "{}", message(&err));
    assert!(
        message(&err).contains("call loadFiles again"),
        "{}",
        message(&err)
    );
    assert!(
        !generator.loaded(),
        "the model on the lost device is dropped"
    );

    // Given again, it loads on the new device and generates diffusers' image.
    generator.load_files(model_object!("sd15-tiny")).unwrap();
    let result = settle(generator.generate(o.into())).await.unwrap();
    check_image(
        "loadFiles after a lost device",
        &result,
        fixture!("pipeline/sd15_euler_a_seeded_image.npy"),
    )
    .unwrap();
}

/// The options of the CLI's images of the converted fixtures
/// (tests/fixtures/make_converted_fixtures.sh).
fn cli_image_options() -> Object {
    let o = options("a red cube on a table");
    set(&o, "steps", 3);
    set(&o, "scheduler", "euler-a");
    set(&o, "seed", 5);
    o
}

/// The files of a converted fixture by path.
macro_rules! converted {
    ($q:literal; $($chunk:literal),+) => {
        vec![
            ("manifest.json", fixture_at!("converted/sd15-tiny-", $q, "/manifest.json")),
            ("tokenizer/merges.txt", fixture_at!("converted/sd15-tiny-", $q, "/tokenizer/merges.txt")),
            ("tokenizer/special_tokens_map.json", fixture_at!("converted/sd15-tiny-", $q, "/tokenizer/special_tokens_map.json")),
            ("tokenizer/tokenizer_config.json", fixture_at!("converted/sd15-tiny-", $q, "/tokenizer/tokenizer_config.json")),
            ("tokenizer/vocab.json", fixture_at!("converted/sd15-tiny-", $q, "/tokenizer/vocab.json")),
            $((concat!("chunk-00", $chunk, ".bin"), fixture_at!("converted/sd15-tiny-", $q, "/chunk-00", $chunk, ".bin")),)+
        ]
    };
}

/// The q8 converted fixture's files by path, as a JS `Map`, with `corrupt` (if any) altered.
fn converted_files(corrupt: Option<&str>) -> js_sys::Map {
    js_map(converted!("q8"; "0", "1", "2", "3", "4"), corrupt)
}

fn js_map(entries: Vec<(&str, &[u8])>, corrupt: Option<&str>) -> js_sys::Map {
    let files = js_sys::Map::new();
    for (path, bytes) in entries {
        let mut bytes = bytes.to_vec();
        if corrupt == Some(path) {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
        }
        files.set(&path.into(), &Uint8Array::from(bytes.as_slice()));
    }
    files
}

/// Replaces the global `fetch` with one serving `files` under https://models.test/sd15/
/// (404 elsewhere) and recording each URL in `log`; returns the original `fetch`.
fn fake_fetch(files: &js_sys::Map, log: &Array) -> JsValue {
    fake_fetch_at("https://models.test/sd15/", files, log)
}

/// [`fake_fetch`] serving under `prefix`.
fn fake_fetch_at(prefix: &str, files: &js_sys::Map, log: &Array) -> JsValue {
    let make = Function::new_with_args(
        "prefix, files, log",
        "return async (url, init) => {
            log.push(url);
            if (init && init.signal && init.signal.aborted) throw new DOMException('aborted', 'AbortError');
            const path = url.startsWith(prefix) ? url.slice(prefix.length) : null;
            if (path === null || !files.has(path)) return new Response('not found', { status: 404 });
            return new Response(files.get(path));
        };",
    );
    let fake = make
        .call3(&JsValue::NULL, &prefix.into(), files, log)
        .unwrap();
    let global = js_sys::global();
    let original = Reflect::get(&global, &"fetch".into()).unwrap();
    Reflect::set(&global, &"fetch".into(), &fake).unwrap();
    original
}

#[wasm_bindgen_test]
async fn load_streams_a_converted_model() {
    let generator = create("webgpu").await;
    assert!(
        generator.model_info().unwrap().is_null(),
        "modelInfo before a load"
    );
    let log = Array::new();
    let original = fake_fetch(&converted_files(None), &log);

    // Download with progress, then generate: the native CLI's image of the same model.
    let events = Array::new();
    let load_options = Object::new();
    let record =
        Function::new_with_args("events, e", "events.push(e);").bind1(&JsValue::NULL, &events);
    set(&load_options, "onProgress", record);
    let loaded =
        settle(generator.load("https://models.test/sd15/".into(), load_options.into())).await;
    let result = async {
        loaded?;
        settle(generator.generate(cli_image_options().into())).await
    }
    .await;
    let result = result.unwrap();
    check_image(
        "load + generate",
        &result,
        fixture!("converted/sd15-tiny-q8_image.npy"),
    )
    .unwrap();
    // The parameters name the model by its URL's last part.
    assert_eq!(
        text(&result, "parameters"),
        "a red cube on a table\n\
             Steps: 3, Sampler: Euler a, CFG scale: 7.5, Seed: 5, Size: 32x32, Model: sd15"
    );
    // What the loaded model is (ModelInfo), the same as from its manifest before loading.
    let info = generator.model_info().unwrap();
    let json = |v: &JsValue| js_sys::JSON::stringify(v).unwrap().as_string().unwrap();
    assert_eq!(
        json(&info),
        r#"{"family":"sd1","width":64,"height":64,"sizeStep":8,"latentChannels":4,"scheduler":"pndm","inpainting":false,"lcm":false,"defaults":{"steps":20,"guidanceScale":7.5,"width":64,"height":64,"prompt":null}}"#
    );
    let manifest = std::str::from_utf8(fixture!("converted/sd15-tiny-q8/manifest.json")).unwrap();
    assert_eq!(
        json(&model_info_from_manifest(manifest).unwrap()),
        json(&info)
    );
    let err = model_info_from_manifest("{").unwrap_err();
    assert!(!text(&err, "code").is_empty());
    // The schedulers, with A1111's names and diffusers' classes.
    let schedulers = Array::from(&Generator::schedulers().unwrap());
    assert_eq!(schedulers.length(), 7);
    assert_eq!(
        json(&schedulers.get(3)),
        r#"{"name":"euler-a","a1111Name":"Euler a","className":"EulerAncestralDiscreteScheduler"}"#
    );
    // Timings: every phase, adding up to at most the total.
    let timings = Reflect::get(&result, &"timings".into()).unwrap();
    let ms = |k: &str| {
        Reflect::get(&timings, &k.into())
            .unwrap()
            .as_f64()
            .unwrap_or_else(|| panic!("timings.{k} missing"))
    };
    console_log!(
        "timings: load {} ms, text {} ms, {} steps at {} ms, VAE {} ms, total {} ms",
        ms("loadMs"),
        ms("textMs"),
        ms("steps"),
        ms("stepMs"),
        ms("vaeMs"),
        ms("totalMs")
    );
    assert!(ms("loadMs") > 0.0 && ms("textMs") > 0.0 && ms("stepMs") > 0.0 && ms("vaeMs") > 0.0);
    assert_eq!(ms("steps"), 3.0);
    assert!((ms("stepMs") * 3.0 - ms("stepsMs")).abs() < 1e-6);
    assert!(ms("textMs") + ms("stepsMs") + ms("vaeMs") <= ms("totalMs") + 1e-6);
    assert_eq!(log.length(), 10, "one request per file: {:?}", log.to_vec());
    let last_download = events.get(events.length() - 2);
    let field = |e: &JsValue, k: &str| Reflect::get(e, &k.into()).unwrap();
    assert_eq!(
        field(&last_download, "loaded").as_f64(),
        field(&last_download, "total").as_f64()
    );
    assert_eq!(text(&events.get(events.length() - 1), "phase"), "build");

    // Stored in IndexedDB: loading again fetches only the manifest.
    settle(generator.load("https://models.test/sd15".into(), Object::new().into()))
        .await
        .unwrap();
    assert_eq!(
        log.length(),
        11,
        "a cached load fetched chunks: {:?}",
        log.to_vec()
    );

    // The GPU device is lost (as in a driver reset): the next call makes a new device and
    // loads the model again from where it came from: the manifest from the network (to see
    // whether the model changed), every other file from IndexedDB.
    lose_gpu_device();
    let tick = Function::new_no_args("return new Promise((resolve) => setTimeout(resolve, 100));");
    JsFuture::from(Promise::from(tick.call0(&JsValue::NULL).unwrap()))
        .await
        .unwrap();
    let again = settle(generator.generate(cli_image_options().into()))
        .await
        .unwrap();
    let fetched: Vec<_> = log
        .slice(11, log.length())
        .iter()
        .filter_map(|u| u.as_string())
        .collect();
    assert_eq!(
        fetched,
        ["https://models.test/sd15/manifest.json"],
        "requests of the reload after a lost device"
    );
    check_image(
        "after a lost device",
        &again,
        fixture!("converted/sd15-tiny-q8_image.npy"),
    )
    .unwrap();

    // With the network gone, the stored model loads from IndexedDB alone.
    let offline =
        Function::new_no_args("return async () => { throw new TypeError('Failed to fetch'); };")
            .call0(&JsValue::NULL)
            .unwrap();
    Reflect::set(&js_sys::global(), &"fetch".into(), &offline).unwrap();
    settle(generator.load("https://models.test/sd15".into(), Object::new().into()))
        .await
        .unwrap();
    let listed = JsFuture::from(Promise::resolve(&Generator::cached_models().await.unwrap()))
        .await
        .unwrap();
    let listed = Array::from(&listed);
    assert!(
        listed
            .iter()
            .any(|m| text(&m, "url") == "https://models.test/sd15")
    );

    // Deleted, it needs the network again: offline that is an io error.
    assert_eq!(
        Generator::delete_cached_model("https://models.test/sd15/".into())
            .await
            .unwrap()
            .as_bool(),
        Some(true)
    );
    let err = settle(generator.load("https://models.test/sd15".into(), Object::new().into()))
        .await
        .unwrap_err();
    assert_eq!(text(&err, "code"), "io");

    // A corrupted chunk is refused naming it (and not stored); a wrong URL is an io error;
    // the model loaded before stays usable.
    fake_fetch(&converted_files(Some("chunk-001.bin")), &log);
    let err = settle(generator.load("https://models.test/sd15".into(), Object::new().into()))
        .await
        .unwrap_err();
    let message = text(&err, "message");
    assert_eq!(text(&err, "code"), "bad-weights", "{message}");
    assert!(message.contains("chunk-001.bin"), "{message}");
    let err = settle(generator.load("https://models.test/elsewhere".into(), Object::new().into()))
        .await
        .unwrap_err();
    let message = text(&err, "message");
    assert_eq!(text(&err, "code"), "io", "{message}");
    assert!(message.contains("HTTP 404"), "{message}");
    assert!(generator.loaded());

    // The GPU runs out of memory mid-generation (a GPUOutOfMemoryError event dispatched on
    // the device after step 1, as the browser raises it; no allocation really fails): the
    // call rejects with code "out-of-memory" instead of a panic, and the next one works on a
    // new device with the model loaded again.
    fake_fetch(&converted_files(None), &log);
    let o = cli_image_options();
    let raise = Function::new_with_args(
        "device, p",
        "if (p.step === 1) device.dispatchEvent(new GPUUncapturedErrorEvent('uncapturederror', \
         { error: new GPUOutOfMemoryError('test') })); return true;",
    )
    .bind1(&JsValue::NULL, &gpu_device());
    set(&o, "onStep", raise);
    let err = settle(generator.generate(o.clone().into()))
        .await
        .unwrap_err();
    let message = text(&err, "message");
    assert_eq!(text(&err, "code"), "out-of-memory", "{message}");
    assert!(message.contains("ran out of memory"), "{message}");
    Reflect::delete_property(&o, &"onStep".into()).unwrap();
    let again = settle(generator.generate(o.into())).await.unwrap();
    check_image(
        "after running out of memory",
        &again,
        fixture!("converted/sd15-tiny-q8_image.npy"),
    )
    .unwrap();
    Generator::delete_cached_model("https://models.test/sd15".into())
        .await
        .unwrap();

    Reflect::set(&js_sys::global(), &"fetch".into(), &original).unwrap();
}

/// A q4 model, kept at 4 bits on WebGPU, gives the native CLI's image on the CPU.
#[wasm_bindgen_test]
async fn q4_model_gives_the_cpu_image() {
    let generator = create("webgpu").await;
    let log = Array::new();
    let url = "https://models.test/sd15-q4/";
    let original = fake_fetch_at(
        url,
        &js_map(converted!("q4"; "0", "1", "2", "3"), None),
        &log,
    );
    let result = async {
        settle(generator.load(url.into(), Object::new().into())).await?;
        settle(generator.generate(cli_image_options().into())).await
    }
    .await;
    Reflect::set(&js_sys::global(), &"fetch".into(), &original).unwrap();
    Generator::delete_cached_model(url.into()).await.unwrap();
    check_image(
        "q4",
        &result.unwrap(),
        fixture!("converted/sd15-tiny-q4_image.npy"),
    )
    .unwrap();
}
