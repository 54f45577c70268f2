//! A whole Stable Diffusion checkpoint in diffusers' folder layout: tokenizer, text encoder,
//! UNet, VAE and the scheduler config, loaded onto one device.
//!
//! A model folder must contain (diffusers' `save_pretrained` layout):
//!
//! ```text
//! model_index.json
//! tokenizer/      vocab.json + merges.txt (or tokenizer.json), special_tokens_map.json / tokenizer_config.json
//! text_encoder/   config.json + model.safetensors
//! unet/           config.json + diffusion_pytorch_model.safetensors
//! vae/            config.json + diffusion_pytorch_model.safetensors
//! scheduler/      scheduler_config.json
//! ```
//!
//! `*.fp16.safetensors` weights are accepted where the plain file is absent. One entry,
//! [`StableDiffusion::load`], reads a folder natively ([`ModelSource::Dir`]: a diffusers
//! folder, or a converted model streamed chunk by chunk as the browser does) or any other
//! [`ModelFiles`] ([`ModelSource::Files`]: files in memory, a converted model the browser
//! streamed, see [`crate::format::stream`]).
//!
//! What a model is (native size, size step, own scheduler, inpainting, defaults, ...) is
//! worked out from its configs in [`crate::model_info`] ([`StableDiffusion::info`]).
//!
//! Generating with it ([`StableDiffusion::generate`]) is in `pipeline/denoise.rs`, as
//! diffusers' phases, each a method: `encode_prompt`, `prepare_latents`, `denoise_step`,
//! `decode_latents`.

use std::sync::Arc;

use burn::module::Module;

use crate::clip::{ClipTextConfig, ClipTextModel};
#[cfg(not(target_arch = "wasm32"))]
use crate::files::DirFiles;
use crate::files::ModelFiles;
use crate::safetensors::SafeTensors;
use crate::scheduler::SchedulerConfig;
use crate::tokenizer::ClipTokenizer;
use crate::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::weights::VarBuilder;
use crate::{Device, Error};

/// What a model folder must hold, for error messages.
pub const FOLDER_LAYOUT: &str = "a diffusers Stable Diffusion folder must contain model_index.json, \
tokenizer/ (vocab.json + merges.txt, or tokenizer.json), text_encoder/ (config.json + model.safetensors), \
unet/ and vae/ (config.json + diffusion_pytorch_model.safetensors each) and scheduler/scheduler_config.json";

/// Where a model comes from, for [`StableDiffusion::load`].
pub enum ModelSource<'a> {
    /// A folder on disk: a diffusers folder, or a converted model directory (one with a
    /// `manifest.json`, see [`crate::format`]), which loads chunk by chunk as the browser
    /// loads it, each chunk checked against its sha256.
    #[cfg(not(target_arch = "wasm32"))]
    Dir(&'a std::path::Path),
    /// Files from any other source, by their path in the model folder: files in memory, a
    /// converted model's [`crate::format::stream::StreamedFiles`] (weights already on the
    /// device) or [`crate::format::source::ConvertedModel`] (read on the CPU).
    Files(&'a dyn ModelFiles),
}

#[cfg(not(target_arch = "wasm32"))]
impl<'a> From<&'a std::path::Path> for ModelSource<'a> {
    fn from(dir: &'a std::path::Path) -> Self {
        ModelSource::Dir(dir)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl<'a> From<&'a std::path::PathBuf> for ModelSource<'a> {
    fn from(dir: &'a std::path::PathBuf) -> Self {
        ModelSource::Dir(dir)
    }
}

impl<'a, F: ModelFiles> From<&'a F> for ModelSource<'a> {
    fn from(files: &'a F) -> Self {
        ModelSource::Files(files)
    }
}

/// How [`StableDiffusion::load`] loads.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// A converted folder's q8 / q4 weights expanded to f32 on upload even where the device
    /// could keep them quantized: faster layers, 4–8× the memory. Off by default (the
    /// streaming loader's choice, [`crate::format::stream::StreamingLoader::keep_quantized`]);
    /// other sources have made their choice already and ignore it.
    pub expand_quantized: bool,
}

/// A loaded checkpoint. The networks live on `device`; generation is in [`crate::pipeline`].
pub struct StableDiffusion {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub text_encoder_config: ClipTextConfig,
    pub unet: UNet2DConditionModel,
    pub unet_config: UNet2DConditionConfig,
    pub vae: AutoencoderKL,
    pub vae_config: AutoencoderKLConfig,
    pub scheduler_config: SchedulerConfig,
    /// model_index.json's `_class_name` (e.g. `StableDiffusionPipeline`), when given.
    pub pipeline_class: Option<String>,
    pub device: Device,
}

fn missing(files: &dyn ModelFiles, path: &str) -> Error {
    Error::Io(format!(
        "model file {} is missing: {FOLDER_LAYOUT}",
        files.describe(path)
    ))
}

fn required(files: &dyn ModelFiles, path: &str) -> Result<Vec<u8>, Error> {
    files.read(path)?.ok_or_else(|| missing(files, path))
}

fn text(files: &dyn ModelFiles, path: &str) -> Result<String, Error> {
    String::from_utf8(required(files, path)?)
        .map_err(|_| Error::BadConfig(format!("{} is not UTF-8 text", files.describe(path))))
}

fn optional_text(files: &dyn ModelFiles, path: &str) -> Result<Option<String>, Error> {
    match files.read(path)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::BadConfig(format!("{} is not UTF-8 text", files.describe(path)))),
    }
}

/// `{config}` errors prefixed with the file they came from.
fn in_file(files: &dyn ModelFiles, path: &str) -> impl Fn(Error) -> Error {
    let place = files.describe(path);
    move |e| match e {
        Error::BadConfig(why) => Error::BadConfig(format!("{place}: {why}")),
        Error::BadWeights(why) => Error::BadWeights(format!("{place}: {why}")),
        other => other,
    }
}

/// The weights `dir/name.safetensors`, or `dir/name.fp16.safetensors` when only that exists.
fn weights(
    files: &dyn ModelFiles,
    dir: &str,
    name: &str,
    device: &Device,
) -> Result<(VarBuilder, String), Error> {
    if let Some(source) = files.weights(dir)? {
        return Ok((VarBuilder::new(source, device), dir.to_string()));
    }
    let plain = format!("{dir}/{name}.safetensors");
    let fp16 = format!("{dir}/{name}.fp16.safetensors");
    let (path, bytes) = match files.read(&plain)? {
        Some(bytes) => (plain, bytes),
        None => match files.read(&fp16)? {
            Some(bytes) => (fp16, bytes),
            None => return Err(missing(files, &plain)),
        },
    };
    let st = SafeTensors::from_bytes(bytes, &files.describe(&path))?;
    Ok((VarBuilder::new(Arc::new(st), device), path))
}

/// The tokenizer as [`ClipTokenizer::from_dir`] reads a folder.
fn tokenizer(files: &dyn ModelFiles) -> Result<ClipTokenizer, Error> {
    let mut pad_token = None;
    for config in [
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
    ] {
        if let Some(text) = optional_text(files, config)? {
            pad_token = ClipTokenizer::pad_token_from_config(&text)
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", files.describe(config))))?;
            if pad_token.is_some() {
                break;
            }
        }
    }
    match (
        optional_text(files, "tokenizer/vocab.json")?,
        optional_text(files, "tokenizer/merges.txt")?,
    ) {
        (Some(vocab), Some(merges)) => {
            ClipTokenizer::from_files(&vocab, &merges, pad_token.as_deref())
        }
        _ => match optional_text(files, "tokenizer/tokenizer.json")? {
            Some(json) => ClipTokenizer::from_tokenizer_json(&json, pad_token.as_deref()),
            None => Err(missing(files, "tokenizer/vocab.json")),
        },
    }
}

impl StableDiffusion {
    /// Bytes the weights occupy on the device, quantized ones at their stored size.
    pub fn weight_bytes(&self) -> u64 {
        let mut count = WeightBytes(0);
        self.text_encoder.visit(&mut count);
        self.unet.visit(&mut count);
        self.vae.visit(&mut count);
        count.0
    }

    /// Loads a model from `source` onto `device`: a folder (`&Path`, `&PathBuf`) or any
    /// [`ModelFiles`] (`&files`), see [`ModelSource`]. Every config and the tokenizer are
    /// read and checked before any weights. Errors name the file at fault: [`Error::Io`] for
    /// a missing or unreadable one (with what a model folder must hold), [`Error::BadConfig`]
    /// and [`Error::BadWeights`] for contents we cannot use.
    pub fn load<'a>(
        source: impl Into<ModelSource<'a>>,
        device: &Device,
        options: LoadOptions,
    ) -> Result<Self, Error> {
        match source.into() {
            #[cfg(not(target_arch = "wasm32"))]
            ModelSource::Dir(dir) => {
                if !dir.is_dir() {
                    return Err(Error::Io(format!(
                        "model folder {} does not exist or is not a folder: {FOLDER_LAYOUT}",
                        dir.display()
                    )));
                }
                if crate::format::source::ConvertedModel::is_converted(dir) {
                    let keep_quantized = !options.expand_quantized;
                    let files = crate::format::stream::load_dir(dir, device, keep_quantized)?;
                    return Self::from_files(&files, device);
                }
                Self::from_files(&DirFiles(dir.to_path_buf()), device)
            }
            ModelSource::Files(files) => {
                let _ = options; // for converted folders only: other sources have chosen
                Self::from_files(files, device)
            }
        }
    }

    /// Builds the model from its files (paths relative to the model folder).
    fn from_files(files: &dyn ModelFiles, device: &Device) -> Result<Self, Error> {
        // Configs first: cheap, and a missing one is reported before reading big weights.
        let index = text(files, "model_index.json")?;
        let index: serde_json::Value = serde_json::from_str(&index).map_err(|e| {
            Error::BadConfig(format!(
                "{}: not valid JSON: {e}",
                files.describe("model_index.json")
            ))
        })?;
        let pipeline_class = index
            .get("_class_name")
            .and_then(|v| v.as_str())
            .map(str::to_string);

        let te_path = "text_encoder/config.json";
        let text_encoder_config =
            ClipTextConfig::from_json(&text(files, te_path)?).map_err(in_file(files, te_path))?;
        let unet_path = "unet/config.json";
        let unet_config = UNet2DConditionConfig::from_json(&text(files, unet_path)?)
            .map_err(in_file(files, unet_path))?;
        let vae_path = "vae/config.json";
        let vae_config = AutoencoderKLConfig::from_json(&text(files, vae_path)?)
            .map_err(in_file(files, vae_path))?;
        let sched_path = "scheduler/scheduler_config.json";
        let scheduler_config = SchedulerConfig::from_json(&text(files, sched_path)?)
            .map_err(in_file(files, sched_path))?;
        let tokenizer = tokenizer(files)?;

        let (vb, path) = weights(files, "text_encoder", "model", device)?;
        let text_encoder =
            ClipTextModel::load(&vb, &text_encoder_config).map_err(in_file(files, &path))?;
        drop(vb);
        let (vb, path) = weights(files, "unet", "diffusion_pytorch_model", device)?;
        let unet = UNet2DConditionModel::load(&vb, &unet_config).map_err(in_file(files, &path))?;
        drop(vb);
        let (vb, path) = weights(files, "vae", "diffusion_pytorch_model", device)?;
        let vae = AutoencoderKL::load(&vb, &vae_config).map_err(in_file(files, &path))?;
        drop(vb);

        Ok(StableDiffusion {
            tokenizer,
            text_encoder,
            text_encoder_config,
            unet,
            unet_config,
            vae,
            vae_config,
            scheduler_config,
            pipeline_class,
            device: device.clone(),
        })
    }

    /// The latent channels the UNet denoises: the VAE's `latent_channels` (diffusers'
    /// `num_channels_latents`; an inpainting UNet takes 2·this + 1 channels).
    pub fn latent_channels(&self) -> usize {
        self.vae_config.latent_channels
    }

    /// Pixels per latent pixel (diffusers' `vae_scale_factor`, 8 for SD).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae_config.downscale_factor()
    }
}

/// Sums parameter sizes as stored on the device.
struct WeightBytes(u64);

impl burn::module::ModuleVisitor for WeightBytes {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<D>>,
    ) {
        let tensor = param.val();
        let bytes = match tensor.dtype() {
            burn::tensor::DType::QFloat(scheme) => {
                burn::tensor::quantization::quantized_data_len(&scheme, &tensor.shape())
            }
            dtype => tensor.shape().num_elements() * dtype.size(),
        };
        self.0 += bytes as u64;
    }
}
