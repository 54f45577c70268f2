//! `Generator`: the JavaScript API around [`StableDiffusion`].
//!
//! ```js
//! const gen = await Generator.create({ backend }); // "auto" (default), "webgpu" or "cpu"
//! gen.backend;                                   // { kind: "webgpu" | "cpu", adapter, reason }
//! await gen.load(modelUrl, { onProgress, signal }); // a converted model folder (manifest.json)
//! gen.loadFiles(files);                          // or files in memory: { "unet/config.json": Uint8Array, ... }
//! const img = await gen.generate({ prompt, steps, seed, onStep, signal });
//! // img: { width, height, data /* Uint8ClampedArray RGBA */, seed /* a decimal string */,
//! //        parameters /* A1111 text */, timings }
//! gen.modelInfo;                                 // what the loaded model is (ModelInfo)
//! Generator.schedulers();                        // [{ name, a1111Name, className }, ...]
//! modelInfoFromManifest(manifestJson);           // a ModelInfo before loading
//! ```
//!
//! Every call returns at once with a promise; one generation runs at a time. Errors are JS
//! `Error`s with a `code` (see `web/mod.rs`); a cancelled run rejects with `name`
//! `"AbortError"` and code `"cancelled"`, and the next call works.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use js_sys::{Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use super::info::{model_info_object, schedulers_array};
use super::options::{function, image_object, params};
use super::{abort_error, aborted, get};
use crate::device::{BackendChoice, BackendKind};
use crate::model::StableDiffusion;
use crate::pipeline::{Progress, now_ms};
use crate::{Device, Error, device, hub};

/// Which engine runs the models, the adapter's name (`None` where the browser offered
/// none, or it was not asked: `backend: "cpu"`), and why that engine.
struct BackendInfo {
    kind: BackendKind,
    adapter: Option<String>,
    reason: String,
}

struct State {
    device: Device,
    /// The engine `create` chose: `gen.backend`.
    backend: BackendInfo,
    model: Option<Rc<StableDiffusion>>,
    /// How long loading the current model took.
    load_ms: f64,
    /// Where the current model came from (`load`), to load it again after a lost device.
    model_url: Option<String>,
    /// The current model's name for the A1111 parameters (`Model: ...`), from its id
    /// ([`hub::ModelSource::name`]: `models/shapes` → `shapes`); `None` for a model from
    /// `loadFiles`.
    model_name: Option<String>,
    busy: bool,
}

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** An RGBA image: `data` holds width × height × 4 bytes. */
export interface RgbaImage { width: number; height: number; data: Uint8ClampedArray | Uint8Array; }

/** A scheduler's name, as the `scheduler` option takes it (`Generator.schedulers()` lists them). */
export type SchedulerName = "ddim" | "pndm" | "euler" | "euler-a" | "dpmpp-2m" | "dpmpp-2m-karras" | "lcm";

/** One scheduler: our name, the one AUTOMATIC1111 writes ("Euler a"), the diffusers class. */
export interface SchedulerInfo { name: SchedulerName; a1111Name: string; className: string; }

/** What a model uses where a call leaves a setting out: what it records, else 20 steps at
 *  guidance 7.5 (an LCM: 4 at 1) and its native size (pixels). `prompt`: one it records. */
export interface ModelDefaults { steps: number; guidanceScale: number; width: number; height: number; prompt: string | null; }

/** What a model is (`gen.modelInfo`, `modelInfoFromManifest`). Sizes in pixels: the native
 *  size (UNet sample_size × 8), and the step every width and height must be a multiple of
 *  (the VAE's factor, 8). `scheduler`: the model's own, `null` when it is not one we
 *  implement. `inpainting`: a 9-channel UNet (only `inpaint` works). `family`: "sd1" or
 *  "sd2", with "-inpaint" for inpainting models. */
export interface ModelInfo {
  family: string; width: number; height: number; sizeStep: number; latentChannels: number;
  scheduler: SchedulerName | null; inpainting: boolean; lcm: boolean; defaults: ModelDefaults;
}

/** Options of `Generator.create`. `backend`: "webgpu" (fails without an adapter), "cpu"
 *  (WebAssembly, one thread), or "auto": WebGPU on a hardware adapter, the CPU engine where
 *  WebGPU is missing or the adapter is a software renderer (SwiftShader). */
export interface CreateOptions { backend?: "auto" | "webgpu" | "cpu"; }

/** The engine a Generator runs on (`gen.backend`): `adapter` is the WebGPU adapter's name,
 *  `null` where there is none or it was not asked for; `reason` says why this engine. */
export interface BackendInfo { kind: "webgpu" | "cpu"; adapter: string | null; reason: string; }

/** Sent to `onStep` after each denoising step; `preview` is a small RGBA image when asked for. */
export interface StepEvent { step: number; total: number; preview: RgbaImage | null; }

/** Options of `generate`. Unknown names and wrong types are refused. */
export interface GenerateOptions {
  prompt: string;
  negativePrompt?: string;          // ""
  steps?: number;                   // the model's (20 unless it records its own)
  guidanceScale?: number;           // the model's (7.5 unless it records its own)
  scheduler?: SchedulerName;        // the model's own
  timestepSpacing?: "leading" | "trailing" | "linspace"; // the model's scheduler config's
  seed?: number | bigint | string;  // 0 to 2^64 − 1 (a number only up to 2^53 − 1); random: the one used comes back
  latents?: Float32Array;           // [1, 4, height/8, width/8], diffusers' `latents=`
  width?: number;                   // the model's: UNet sample_size × 8 (with an image: its width)
  height?: number;                  // the model's (with an image: its height)
  clipSkip?: number;                // 1
  eta?: number;                     // 0 (DDIM's η)
  previewEvery?: number;            // 0: no previews
  onStep?: (e: StepEvent) => unknown; // return false to stop (any other value goes on)
  signal?: AbortSignal;             // aborted: rejects with an AbortError
}

/** Options of `img2img`: `generate`'s plus the starting image. */
export interface Img2ImgOptions extends GenerateOptions { image: RgbaImage; strength?: number; /* 0.8 */ }

/** Options of `inpaint`: white in `mask` is repainted. */
export interface InpaintOptions extends GenerateOptions { image: RgbaImage; mask: RgbaImage; strength?: number; /* 1 */ }

/** Milliseconds per phase; the GPU is waited for at each phase's end. */
export interface Timings { loadMs: number; textMs: number; steps: number; stepMs: number; stepsMs: number; vaeMs: number; totalMs: number; }

/** What `generate`, `img2img` and `inpaint` resolve to. */
/** `seed`: the seed used, in decimal (a string: a JS number cannot hold every u64 seed).
 *  `parameters`: the AUTOMATIC1111 `parameters` text for a PNG ("prompt\nNegative prompt: …\nSteps: 20, Sampler: Euler a, …"). */
export interface GeneratedImage { width: number; height: number; data: Uint8ClampedArray; seed: string; parameters: string; timings: Timings; }

/** Sent to `onProgress` while loading. */
export interface LoadProgress { phase: "download" | "build"; loaded?: number; total?: number; chunk?: string; cached?: boolean; }

/** Options of `load`. */
export interface LoadOptions { onProgress?: (e: LoadProgress) => void; signal?: AbortSignal; }

/** A model stored in this browser (`stored`: ms since the epoch). */
export interface CachedModel { url: string; bytes: number; stored: number; }
"#;

/// Loads a Stable Diffusion model onto its engine (WebGPU or the CPU) and generates images
/// with it.
#[wasm_bindgen]
pub struct Generator {
    state: Rc<RefCell<State>>,
}

#[wasm_bindgen]
impl Generator {
    /// Chooses the engine (see `CreateOptions`) and creates its device. Rejects with code
    /// `"no-webgpu"` for `backend: "webgpu"` where WebGPU is missing, `"bad-input"` for an
    /// unknown option or backend.
    pub async fn create(
        #[wasm_bindgen(unchecked_param_type = "CreateOptions")] options: JsValue,
    ) -> Result<Generator, JsValue> {
        let choice = super::options::backend_choice(&options)?;
        let adapter = match choice {
            BackendChoice::Cpu => Err("not asked for".to_string()),
            _ => super::request_adapter().await,
        };
        let description = adapter.as_ref().map(super::describe);
        let (kind, reason) =
            device::choose_backend(choice, description.as_ref().map_err(|why| why.as_str()))?;
        let device = match kind {
            BackendKind::WebGpu => device::gpu().await?,
            BackendKind::Cpu => device::cpu(),
        };
        Ok(Generator {
            state: Rc::new(RefCell::new(State {
                device,
                backend: BackendInfo {
                    kind,
                    adapter: adapter.ok().map(|a| super::adapter_name(&a)),
                    reason,
                },
                model: None,
                load_ms: 0.0,
                model_url: None,
                model_name: None,
                busy: false,
            })),
        })
    }

    /// The engine this generator runs on: `{ kind: "webgpu" | "cpu", adapter, reason }`.
    #[wasm_bindgen(getter, unchecked_return_type = "BackendInfo")]
    pub fn backend(&self) -> Result<JsValue, JsValue> {
        let state = self.state.borrow();
        let b = &state.backend;
        let o = Object::new();
        Reflect::set(&o, &"kind".into(), &b.kind.name().into())?;
        let adapter = b.adapter.as_deref().map_or(JsValue::NULL, JsValue::from);
        Reflect::set(&o, &"adapter".into(), &adapter)?;
        Reflect::set(&o, &"reason".into(), &b.reason.as_str().into())?;
        Ok(o.into())
    }

    /// Loads a model from its files: an object (or `Map`) from paths in a diffusers folder
    /// (`"unet/config.json"`, `"unet/diffusion_pytorch_model.safetensors"`, ...) to
    /// `Uint8Array`s. Replaces any model loaded before.
    #[wasm_bindgen(js_name = loadFiles)]
    pub fn load_files(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "Record<string, Uint8Array> | Map<string, Uint8Array>"
        )]
        files: JsValue,
    ) -> Result<(), JsValue> {
        let mut map = BTreeMap::new();
        let entries: js_sys::Array = if files.is_instance_of::<js_sys::Map>() {
            js_sys::Array::from(&files.unchecked_ref::<js_sys::Map>().entries())
        } else if files.is_object() {
            Object::entries(files.unchecked_ref::<Object>())
        } else {
            return Err(
                Error::BadInput("loadFiles: pass an object of path → Uint8Array".into()).into(),
            );
        };
        for entry in entries.iter() {
            let path = Reflect::get(&entry, &0.into())?
                .as_string()
                .unwrap_or_default();
            let bytes = Reflect::get(&entry, &1.into())?;
            let bytes = bytes.dyn_ref::<Uint8Array>().ok_or_else(|| {
                Error::BadInput(format!("loadFiles: \"{path}\" is not a Uint8Array"))
            })?;
            map.insert(path, bytes.to_vec());
        }
        let mut state = self.state.borrow_mut();
        if state.busy {
            return Err(Error::BadInput(
                "a generation is running: wait for it (or abort it) before loading".into(),
            )
            .into());
        }
        if let Some(failure) = device::failure(&state.device) {
            return Err(failure.with_advice("call Generator.create() again").into());
        }
        let started = now_ms();
        let model = StableDiffusion::load(&map, &state.device, Default::default())?;
        state.model = Some(Rc::new(model));
        state.load_ms = now_ms() - started;
        state.model_url = None;
        state.model_name = None;
        Ok(())
    }

    /// Downloads the converted model `model` (the URL of a folder with `manifest.json`, made
    /// by `sd-weights convert`, or `hf:user/repo[@revision][/folder]` on the Hugging Face
    /// Hub: see `crate::hub`) and streams it onto the GPU. Options: `onProgress({ phase,
    /// loaded, total, chunk })`, `signal` (an `AbortSignal`). Replaces any model loaded
    /// before once the new one is complete.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn load(
        &self,
        model: String,
        #[wasm_bindgen(unchecked_param_type = "LoadOptions")] options: JsValue,
    ) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let source = hub::resolve(&model)?;
            {
                let mut s = state.borrow_mut();
                if s.busy {
                    return Err(Error::BadInput(
                        "busy: wait for the running generation or load to finish".into(),
                    )
                    .into());
                }
                s.busy = true;
            }
            let started = now_ms();
            let result = async {
                let device = current_device(&state).await?;
                super::load::load(&source.url, &options, &device).await
            }
            .await;
            let mut s = state.borrow_mut();
            s.busy = false;
            s.model = Some(Rc::new(result?));
            s.load_ms = now_ms() - started;
            s.model_name = source.name;
            s.model_url = Some(source.url);
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Drops the loaded model and gives its GPU memory back (burn's memory pool is cleaned
    /// up); `load` or `loadFiles` works afterwards. Errors: `bad-input` while a generation
    /// or load runs.
    pub fn unload(&self) -> Result<(), JsValue> {
        let mut state = self.state.borrow_mut();
        if state.busy {
            return Err(Error::BadInput(
                "busy: wait for the running generation or load to finish (or abort it)".into(),
            )
            .into());
        }
        state.model = None;
        state.model_url = None;
        state.model_name = None;
        state.device.memory_cleanup();
        Ok(())
    }

    /// The models stored in this browser: `[{ url, bytes, stored }]` (`stored`: ms since
    /// the epoch).
    #[wasm_bindgen(js_name = cachedModels, unchecked_return_type = "CachedModel[]")]
    pub async fn cached_models() -> Result<JsValue, JsValue> {
        super::storage::cache_list_models().await
    }

    /// Deletes a stored model (and the chunks no other stored model uses): `url` is an id as
    /// `load` takes it. Resolves to whether it was stored.
    #[wasm_bindgen(js_name = deleteCachedModel, unchecked_return_type = "boolean")]
    pub async fn delete_cached_model(url: String) -> Result<JsValue, JsValue> {
        let source = hub::resolve(&url)?;
        super::storage::cache_delete_model(&source.url).await
    }

    /// Whether a model is loaded.
    #[wasm_bindgen(getter)]
    pub fn loaded(&self) -> bool {
        self.state.borrow().model.is_some()
    }

    /// What the loaded model is (`ModelInfo`: native size, size step, own scheduler,
    /// inpainting, defaults, ...; see `crate::model_info`), or `null` before a load.
    #[wasm_bindgen(getter = modelInfo, unchecked_return_type = "ModelInfo | null")]
    pub fn model_info(&self) -> Result<JsValue, JsValue> {
        match &self.state.borrow().model {
            Some(model) => model_info_object(&model.info()),
            None => Ok(JsValue::NULL),
        }
    }

    /// Every scheduler the `scheduler` option takes: `[{ name, a1111Name, className }]`
    /// (our name, the one AUTOMATIC1111 writes in its parameters, the diffusers class).
    #[wasm_bindgen(unchecked_return_type = "SchedulerInfo[]")]
    pub fn schedulers() -> Result<JsValue, JsValue> {
        schedulers_array()
    }

    /// How many CLIP tokens `text` takes with the loaded model's tokenizer (without the start
    /// and end tokens), for a "used / 75" counter: tokens past 75 are cut off.
    #[wasm_bindgen(js_name = countTokens)]
    pub fn count_tokens(&self, text: &str) -> Result<u32, JsValue> {
        let state = self.state.borrow();
        let model = state
            .model
            .as_ref()
            .ok_or_else(|| Error::BadInput("no model loaded".into()))?;
        Ok(model.tokenizer.count_tokens(text)? as u32)
    }

    /// Text to image. Options: `prompt`, `negativePrompt`, `steps`, `guidanceScale`,
    /// `width`/`height` (the model's, see `ModelInfo`: e.g. 512 for SD 1.5, 768 for SD
    /// 2.1-v), `scheduler` (the model's), `seed` (random), `latents`,
    /// `clipSkip` (1), `eta`, `previewEvery` (0), `onStep({ step, total, preview })`
    /// (return `false` to stop), `signal` (an `AbortSignal`).
    #[wasm_bindgen(unchecked_return_type = "Promise<GeneratedImage>")]
    pub fn generate(
        &self,
        #[wasm_bindgen(unchecked_param_type = "GenerateOptions")] options: JsValue,
    ) -> Promise {
        self.run(options, "generate")
    }

    /// Image to image: the options of `generate` plus `image` (`{ width, height, data }`,
    /// RGBA; its size is the output's) and `strength` (0.8).
    #[wasm_bindgen(unchecked_return_type = "Promise<GeneratedImage>")]
    pub fn img2img(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Img2ImgOptions")] options: JsValue,
    ) -> Promise {
        self.run(options, "img2img")
    }

    /// Inpainting: the options of `img2img` plus `mask` (same size; white is repainted);
    /// `strength` defaults to 1.
    #[wasm_bindgen(unchecked_return_type = "Promise<GeneratedImage>")]
    pub fn inpaint(
        &self,
        #[wasm_bindgen(unchecked_param_type = "InpaintOptions")] options: JsValue,
    ) -> Promise {
        self.run(options, "inpaint")
    }
}

impl Generator {
    fn run(&self, options: JsValue, mode: &'static str) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            {
                let mut s = state.borrow_mut();
                if s.model.is_none() {
                    return Err(Error::BadInput(
                        "no model loaded: call load or loadFiles first".into(),
                    )
                    .into());
                }
                if s.busy {
                    return Err(Error::BadInput(
                        "another generation is running: one at a time".into(),
                    )
                    .into());
                }
                s.busy = true;
            }
            let result = async {
                let (model, load_ms) = recover(&state).await?;
                let name = state.borrow().model_name.clone();
                generate(&model, name.as_deref(), &options, mode, load_ms).await
            }
            .await;
            state.borrow_mut().busy = false;
            result
        })
    }
}

/// The generator's device, a new one if it was lost (the model on it is dropped).
async fn current_device(state: &Rc<RefCell<State>>) -> Result<Device, JsValue> {
    let old = state.borrow().device.clone();
    if device::failure(&old).is_none() {
        return Ok(old);
    }
    let device = device::gpu().await?;
    let mut s = state.borrow_mut();
    s.model = None;
    s.device = device.clone();
    Ok(device)
}

/// The loaded model and its load time; after a lost device, on a new device with the model
/// loaded again from where it came from (the browser's storage, so no download).
async fn recover(state: &Rc<RefCell<State>>) -> Result<(Rc<StableDiffusion>, f64), JsValue> {
    let failure = device::failure(&state.borrow().device);
    if let Some(failure) = failure {
        let device = current_device(state).await?;
        let url = state.borrow().model_url.clone();
        let Some(url) = url else {
            return Err(failure.with_advice("call loadFiles again").into());
        };
        let started = now_ms();
        let model = super::load::load(&url, &JsValue::UNDEFINED, &device).await?;
        let mut s = state.borrow_mut();
        s.model = Some(Rc::new(model));
        s.load_ms = now_ms() - started;
    }
    let s = state.borrow();
    let model = s
        .model
        .clone()
        .ok_or_else(|| Error::BadInput("no model loaded: call load or loadFiles first".into()))?;
    Ok((model, s.load_ms))
}

async fn generate(
    model: &StableDiffusion,
    model_name: Option<&str>,
    options: &JsValue,
    mode: &str,
    load_ms: f64,
) -> Result<JsValue, JsValue> {
    let params = params(options, mode, &model.info().defaults)?;
    let on_step = function(options, "onStep")?;
    let signal = get(options, "signal");
    if aborted(&signal) {
        return Err(abort_error());
    }
    let mut callback_error = None;
    let result = model
        .generate_timed(&params, |p: Progress| {
            if let Some(f) = &on_step {
                match progress_object(&p).and_then(|o| f.call1(&JsValue::NULL, &o)) {
                    Ok(v) if v == JsValue::FALSE => return false,
                    Ok(_) => {}
                    Err(e) => {
                        callback_error = Some(e);
                        return false;
                    }
                }
            }
            !aborted(&signal)
        })
        .await;
    if let Some(e) = callback_error {
        return Err(e);
    }
    let (image, t) = match result {
        Err(Error::Cancelled) => return Err(abort_error()),
        other => other?,
    };
    let out = image_object(&image)?;
    Reflect::set(&out, &"seed".into(), &params.seed.to_string().into())?;
    // The scheduler that ran (the generation above built the same one).
    let sampler = params.build_scheduler(model)?.kind();
    let parameters = params.a1111_parameters(sampler, model_name);
    Reflect::set(&out, &"parameters".into(), &parameters.into())?;
    let timings = Object::new();
    for (name, value) in [
        ("loadMs", load_ms),
        ("textMs", t.text_ms),
        ("steps", t.steps as f64),
        ("stepMs", t.step_ms()),
        ("stepsMs", t.steps_ms),
        ("vaeMs", t.vae_ms),
        ("totalMs", t.total_ms),
    ] {
        Reflect::set(&timings, &name.into(), &value.into())?;
    }
    Reflect::set(&out, &"timings".into(), &timings)?;
    Ok(out)
}

fn progress_object(p: &Progress) -> Result<JsValue, JsValue> {
    let o = Object::new();
    Reflect::set(&o, &"step".into(), &(p.step as u32).into())?;
    Reflect::set(&o, &"total".into(), &(p.total as u32).into())?;
    let preview = match &p.preview {
        Some(image) => image_object(image)?,
        None => JsValue::NULL,
    };
    Reflect::set(&o, &"preview".into(), &preview)?;
    Ok(o.into())
}
