//! What a model is — its family, native size, size step, latent channels, own scheduler,
//! whether it inpaints or is a latent consistency model, and the settings it records for
//! itself — worked out in one place, from its configs alone.
//!
//! The configs are all it takes, so the same answer comes from a model folder, from a
//! converted model's `manifest.json` before any weights are downloaded
//! ([`ModelInfo::from_manifest`], which the page asks through the JS API), and from a loaded
//! [`StableDiffusion`] ([`StableDiffusion::info`]). The CLI, the JS API's defaults, the page
//! and the tests all ask here.

use std::collections::BTreeMap;

use crate::Error;
use crate::files::ModelFiles;
use crate::format::Manifest;
use crate::model::StableDiffusion;
use crate::pipeline::GenerateParams;
use crate::scheduler::{SchedulerConfig, SchedulerKind};
use crate::unet::UNet2DConditionConfig;
use crate::unet::config::OneOrPerBlock;
use crate::vae::AutoencoderKLConfig;

/// The config files [`ModelInfo`] reads, by their path in a diffusers folder.
const UNET_CONFIG: &str = "unet/config.json";
const VAE_CONFIG: &str = "vae/config.json";
const SCHEDULER_CONFIG: &str = "scheduler/scheduler_config.json";

/// The key of a scheduler config under which a model records its own settings (diffusers
/// ignores keys starting with `_`).
pub const RECORDED_DEFAULTS_KEY: &str = "_sd_webgpu_defaults";

/// What a model is, from its configs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// `sd1` or `sd2`, with `-inpaint` for an inpainting UNet (see [`family`]).
    pub family: String,
    /// The native width in pixels: the UNet's `sample_size` × the VAE's scale factor, as
    /// diffusers' pipeline (`width = width or unet.config.sample_size * vae_scale_factor`,
    /// `pipeline_stable_diffusion.py`): 512 for SD 1.5, 768 for SD 2.1-v, 64 for the built-in
    /// model; 512 when the UNet config has no `sample_size` (our [`GenerateParams`] default).
    pub width: usize,
    /// The native height in pixels (as `width`; `sample_size` may be `[height, width]`).
    pub height: usize,
    /// Image sizes must be whole multiples of this, in pixels: the VAE's scale factor
    /// (diffusers' `vae_scale_factor`, 2^(VAE blocks − 1), 8 for SD). Any multiple of it
    /// works, not only of the UNet's own unit (64 pixels for SD): as in diffusers, the UNet's
    /// up blocks upsample to the size of each skip connection.
    pub size_step: usize,
    /// The channels of the latents the UNet denoises: the VAE's `latent_channels` (diffusers'
    /// `num_channels_latents`, 4 for SD).
    pub latent_channels: usize,
    /// The model's own scheduler, from its scheduler config's `_class_name`
    /// ([`SchedulerKind::of_model`]); `None` when that is not one we implement (generation
    /// then needs a scheduler picked by name).
    pub scheduler: Option<SchedulerKind>,
    /// An inpainting model: a UNet taking 2 × `latent_channels` + 1 inputs (9 for SD: the
    /// noisy latents, the masked image's latents and the mask), as diffusers'
    /// `StableDiffusionInpaintPipeline` feeds it.
    pub inpainting: bool,
    /// A latent consistency model (LCM, or an LCM-LoRA merged in): its own scheduler is
    /// `LCMScheduler`. Such a model samples in a few steps (see [`ModelDefaults`]). A UNet's
    /// guidance embedding (`time_cond_proj_dim`) is another matter, read by the pipeline.
    pub lcm: bool,
    /// The settings a generation uses where the caller leaves them out.
    pub defaults: ModelDefaults,
}

/// The settings a model is made for, used where a call leaves them out.
///
/// - What the model records in `_sd_webgpu_defaults` of its scheduler config
///   (`{ "steps", "guidance_scale", "width", "height", "prompt" }`, as the built-in model
///   does). Fields that are missing or not values of the right kind are ignored.
/// - Else, for a latent consistency model ([`ModelInfo::lcm`]), 4 steps at guidance 1:
///   diffusers' `LatentConsistencyModelPipeline` defaults to 4 steps, and its LCM guide
///   advises guidance 1 to 2 for LCM-LoRA (more burns the image).
/// - Else 20 steps at guidance 7.5 ([`GenerateParams`]' defaults) and the native size.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDefaults {
    pub steps: usize,
    pub guidance_scale: f64,
    /// Pixels.
    pub width: usize,
    /// Pixels.
    pub height: usize,
    /// A prompt to start from (the built-in model records one it draws well); `None` when the
    /// model records none.
    pub prompt: Option<String>,
}

impl ModelDefaults {
    /// From the recorded `_sd_webgpu_defaults` (if any), whether the model is an LCM, and the
    /// native `(height, width)` in pixels.
    pub fn new(recorded: Option<&serde_json::Value>, lcm: bool, native: (usize, usize)) -> Self {
        let fallback = GenerateParams::default();
        let (steps, guidance_scale) = match lcm {
            true => (4, 1.0),
            false => (fallback.steps, fallback.guidance_scale),
        };
        let field = |k: &str| recorded.and_then(|v| v.get(k));
        let size = |k: &str| {
            field(k)
                .and_then(|x| x.as_u64())
                .and_then(|x| usize::try_from(x).ok())
                .filter(|&x| x > 0)
        };
        let (native_h, native_w) = native;
        ModelDefaults {
            steps: size("steps").unwrap_or(steps),
            guidance_scale: field("guidance_scale")
                .and_then(|x| x.as_f64())
                .unwrap_or(guidance_scale),
            width: size("width").unwrap_or(native_w),
            height: size("height").unwrap_or(native_h),
            prompt: field("prompt")
                .and_then(|x| x.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }
    }
}

/// The family name from the UNet config, as `sd-weights convert` records it in a manifest:
/// `sd1` for 768-wide text conditioning (CLIP ViT-L, SD 1.x), `sd2` for 1024-wide (OpenCLIP
/// ViT-H, SD 2.x); other widths by the attention projection style (SD 2.x's
/// `use_linear_projection`); `-inpaint` appended for an inpainting UNet.
pub fn family(unet: &UNet2DConditionConfig, inpainting: bool) -> String {
    let base = match unet.cross_attention_dim {
        OneOrPerBlock::One(768) => "sd1",
        OneOrPerBlock::One(1024) => "sd2",
        _ if unet.use_linear_projection => "sd2",
        _ => "sd1",
    };
    match inpainting {
        true => format!("{base}-inpaint"),
        false => base.to_string(),
    }
}

impl ModelInfo {
    /// From the parsed UNet, VAE and scheduler configs.
    pub fn new(
        unet: &UNet2DConditionConfig,
        vae: &AutoencoderKLConfig,
        scheduler: &SchedulerConfig,
    ) -> ModelInfo {
        let size_step = vae.downscale_factor();
        let latent_channels = vae.latent_channels;
        let fallback = GenerateParams::default();
        let (height, width) = unet
            .sample_size
            .as_ref()
            .and_then(|s| s.height_width())
            .map(|(h, w)| (h * size_step, w * size_step))
            .unwrap_or((fallback.height, fallback.width));
        let own = SchedulerKind::of_model(scheduler).ok();
        let inpainting = unet.in_channels == 2 * latent_channels + 1;
        let lcm = own == Some(SchedulerKind::Lcm);
        ModelInfo {
            family: family(unet, inpainting),
            width,
            height,
            size_step,
            latent_channels,
            scheduler: own,
            inpainting,
            lcm,
            defaults: ModelDefaults::new(
                scheduler.get(RECORDED_DEFAULTS_KEY),
                lcm,
                (height, width),
            ),
        }
    }

    /// From a model's files (a diffusers folder's `unet/config.json`, `vae/config.json` and
    /// `scheduler/scheduler_config.json`; no weights are read).
    pub fn from_files(files: &dyn ModelFiles) -> Result<ModelInfo, Error> {
        let read = |path: &str| -> Result<String, Error> {
            let bytes = files.read(path)?.ok_or_else(|| {
                Error::Io(format!(
                    "model file {} is missing: {}",
                    files.describe(path),
                    crate::model::FOLDER_LAYOUT
                ))
            })?;
            String::from_utf8(bytes).map_err(|_| {
                Error::BadConfig(format!("{} is not UTF-8 text", files.describe(path)))
            })
        };
        let place = |path: &str| {
            let place = files.describe(path);
            move |e: Error| match e {
                Error::BadConfig(why) => Error::BadConfig(format!("{place}: {why}")),
                other => other,
            }
        };
        let unet =
            UNet2DConditionConfig::from_json(&read(UNET_CONFIG)?).map_err(place(UNET_CONFIG))?;
        let vae = AutoencoderKLConfig::from_json(&read(VAE_CONFIG)?).map_err(place(VAE_CONFIG))?;
        let scheduler = SchedulerConfig::from_json(&read(SCHEDULER_CONFIG)?)
            .map_err(place(SCHEDULER_CONFIG))?;
        Ok(ModelInfo::new(&unet, &vae, &scheduler))
    }

    /// From the configs as JSON values, by their path in a diffusers folder (a manifest's
    /// `configs`).
    pub fn from_configs(configs: &BTreeMap<String, serde_json::Value>) -> Result<ModelInfo, Error> {
        let files: BTreeMap<String, Vec<u8>> = configs
            .iter()
            .map(|(path, value)| (path.clone(), value.to_string().into_bytes()))
            .collect();
        ModelInfo::from_files(&files)
    }

    /// From a converted model's `manifest.json` text (checked as the loader checks it), before
    /// downloading its weights.
    pub fn from_manifest(manifest_json: &str) -> Result<ModelInfo, Error> {
        ModelInfo::from_configs(&Manifest::from_json(manifest_json)?.configs)
    }
}

impl StableDiffusion {
    /// What this model is, from its configs (see [`ModelInfo`]). The CLI and the JS API take
    /// their defaults from here.
    pub fn info(&self) -> ModelInfo {
        ModelInfo::new(&self.unet_config, &self.vae_config, &self.scheduler_config)
    }
}

// Native only: the tests read fixture folders from disk.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn defaults_take_what_the_model_records_then_its_native_size() {
        let v = serde_json::json!({"steps": 25, "guidance_scale": 3.0, "width": 64, "height": 48, "prompt": "x"});
        let want = ModelDefaults {
            steps: 25,
            guidance_scale: 3.0,
            width: 64,
            height: 48,
            prompt: Some("x".into()),
        };
        assert_eq!(ModelDefaults::new(Some(&v), false, (768, 768)), want);
        // Nothing recorded: the native size ([h, w] order), then 20 steps at 7.5.
        let native = ModelDefaults {
            steps: 20,
            guidance_scale: 7.5,
            width: 1024,
            height: 768,
            prompt: None,
        };
        assert_eq!(ModelDefaults::new(None, false, (768, 1024)), native);
        // Wrong kinds and zero sizes are ignored.
        let v = serde_json::json!({"steps": "20", "guidance_scale": null, "width": 0, "height": -8, "prompt": 3});
        assert_eq!(ModelDefaults::new(Some(&v), false, (768, 1024)), native);
        assert_eq!(
            ModelDefaults::new(Some(&serde_json::json!([1, 2])), false, (768, 1024)),
            native
        );
        // A latent consistency model: 4 steps at guidance 1, unless it records its own.
        let lcm = ModelDefaults::new(None, true, (512, 512));
        assert_eq!((lcm.steps, lcm.guidance_scale), (4, 1.0));
        let v = serde_json::json!({"steps": 6});
        assert_eq!(ModelDefaults::new(Some(&v), true, (512, 512)).steps, 6);
    }

    /// The repository's root (the crate is `crate/`).
    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn folder(path: &str) -> ModelInfo {
        let files = crate::files::DirFiles(root().join(path));
        ModelInfo::from_files(&files).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn manifest(path: &str) -> ModelInfo {
        let text = std::fs::read_to_string(root().join(path)).unwrap();
        ModelInfo::from_manifest(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn model_info_of_the_fixture_models_from_their_configs() {
        // The tiny fixtures: UNet sample_size 8, 4 VAE blocks (factor 8), 4 latent channels.
        let plain = ModelDefaults {
            steps: 20,
            guidance_scale: 7.5,
            width: 64,
            height: 64,
            prompt: None,
        };
        let sd15 = folder("tests/fixtures/sd15-tiny");
        assert_eq!(
            sd15,
            ModelInfo {
                family: "sd1".into(),
                width: 64,
                height: 64,
                size_step: 8,
                latent_channels: 4,
                scheduler: Some(SchedulerKind::Pndm),
                inpainting: false,
                lcm: false,
                defaults: plain.clone(),
            }
        );
        // SD 2.x by its linear projections (the tiny model's text is 32 wide).
        let sd2 = folder("tests/fixtures/sd2-tiny");
        assert_eq!(
            (sd2.family.as_str(), sd2.scheduler),
            ("sd2", Some(SchedulerKind::Ddim))
        );
        assert!(!sd2.inpainting);
        // 9 UNet input channels = 2 × 4 latent channels + the mask.
        let inpaint = folder("tests/fixtures/sd15-inpaint-tiny");
        assert_eq!(inpaint.family, "sd1-inpaint");
        assert!(inpaint.inpainting);
        // The built-in model records its own settings; its diffusers checkpoint (the quality
        // fixture) and the page's converted copy say the same.
        let shapes = folder("tests/fixtures/shapes/model");
        assert_eq!(shapes.scheduler, Some(SchedulerKind::Euler));
        let page = manifest("www/models/shapes/manifest.json");
        assert_eq!(shapes, page);
        assert_eq!(page.family, "sd1");
        assert_eq!((page.width, page.height, page.size_step), (64, 64, 8));
        assert_eq!(
            page.defaults,
            ModelDefaults {
                guidance_scale: 3.0,
                prompt: Some("a red circle on a blue background".into()),
                ..plain.clone()
            }
        );
        // A converted model's manifest gives what its diffusers folder gives, and the family
        // it records.
        let converted = manifest("tests/fixtures/converted/sd15-tiny-q8/manifest.json");
        assert_eq!(converted, sd15);
    }

    #[test]
    fn model_info_follows_the_configs() {
        let unet = |json: &str| UNet2DConditionConfig::from_json(json).unwrap();
        // SD's VAE shape: 4 blocks (factor 8), 4 latent channels.
        let vae = std::fs::read_to_string(root().join("tests/fixtures/sd15-tiny/vae/config.json"));
        let vae = AutoencoderKLConfig::from_json(&vae.unwrap()).unwrap();
        let scheduler = |json: &str| SchedulerConfig::from_json(json).unwrap();
        // SD 2.1-v: 96 × 8 = 768 pixels, 1024-wide text; a [h, w] sample size.
        let info = ModelInfo::new(
            &unet(r#"{"sample_size": [96, 64], "cross_attention_dim": 1024}"#),
            &vae,
            &scheduler(
                r#"{"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true}"#,
            ),
        );
        assert_eq!((info.width, info.height), (512, 768));
        assert_eq!(info.family, "sd2");
        assert_eq!(info.scheduler, Some(SchedulerKind::DpmPp2mKarras));
        // No sample_size: 512 × 512. A scheduler we do not implement: none of its own (the
        // page used to fall back to PNDM here; generation asks for one by name).
        let info = ModelInfo::new(
            &unet("{}"),
            &vae,
            &scheduler(r#"{"_class_name": "UniPCMultistepScheduler"}"#),
        );
        assert_eq!((info.width, info.height, info.scheduler), (512, 512, None));
        // An LCM: 4 steps at guidance 1.
        let info = ModelInfo::new(
            &unet("{}"),
            &vae,
            &scheduler(r#"{"_class_name": "LCMScheduler"}"#),
        );
        assert!(info.lcm);
        assert_eq!(
            (info.defaults.steps, info.defaults.guidance_scale),
            (4, 1.0)
        );
    }

    #[test]
    fn one_list_of_schedulers() {
        let mut a1111 = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for kind in SchedulerKind::ALL {
            assert_eq!(SchedulerKind::parse(kind.name()).unwrap(), kind);
            assert!(names.insert(kind.name()), "{kind}: name twice");
            assert!(a1111.insert(kind.a1111_name()), "{kind}: A1111 name twice");
            // The model's own scheduler, by its class (DPM-Solver by its Karras flag).
            let karras = kind == SchedulerKind::DpmPp2mKarras;
            let config = SchedulerConfig::from_json(&format!(
                r#"{{"_class_name": "{}", "use_karras_sigmas": {karras}}}"#,
                kind.class_name()
            ))
            .unwrap();
            assert_eq!(SchedulerKind::of_model(&config).unwrap(), kind);
        }
        // The JS API's TypeScript type lists the same names, in the same order.
        let union: Vec<String> = SchedulerKind::ALL
            .iter()
            .map(|k| format!("\"{}\"", k.name()))
            .collect();
        let declared = format!("export type SchedulerName = {};", union.join(" | "));
        let source = include_str!("web/generator.rs");
        assert!(
            source.contains(&declared),
            "web/generator.rs should declare {declared}"
        );
    }
}
