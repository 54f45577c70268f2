//! Text to image: diffusers' `StableDiffusionPipeline.__call__` (0.42) on a loaded
//! [`StableDiffusion`].
//!
//! Semantics matched, step by step:
//!
//! - Classifier-free guidance runs when `guidance_scale > 1` and the UNet has no
//!   `time_cond_proj_dim`: the negative prompt (`""` when empty) and the prompt are encoded
//!   and batched `[uncond, cond]`, and the prediction is `uncond + g·(cond − uncond)`.
//!   Otherwise only the prompt is encoded and the negative prompt is ignored.
//! - `clip_skip` has A1111's meaning (1 = the last layer; diffusers' `clip_skip=k` is our
//!   `k + 1`). Like diffusers, it applies to the prompt only; the negative prompt always
//!   uses the last layer.
//! - LCM-style UNets (`time_cond_proj_dim`) get the guidance embedding of `w = g − 1`
//!   ([`guidance_scale_embedding`]), as both `StableDiffusionPipeline` and
//!   `LatentConsistencyModelPipeline` compute it.
//! - Initial latents: the given ones (diffusers' `latents=`: unit Gaussian noise) or seeded
//!   noise from [`Noise`], times the scheduler's `init_noise_sigma`.
//! - The loop stays on the device; the image is read back once at the end:
//!   `decode(latents / scaling_factor)`, then `(x/2 + 0.5).clamp(0, 1)` as H×W×3.

use burn::tensor::{Int, Tensor, TensorData};

use crate::model::StableDiffusion;
use crate::scheduler::{Scheduler, SchedulerKind};
use crate::{Error, read_f32};

/// What to generate. [`Default`] gives SD's usual settings at 512×512.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    pub prompt: String,
    /// Used only with classifier-free guidance; empty means `""` as in diffusers.
    pub negative_prompt: String,
    /// Inference steps, at least 1.
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 turns guidance off (one UNet batch).
    pub guidance_scale: f64,
    /// The sampler; `None` uses the model's own (scheduler_config.json's `_class_name`).
    pub scheduler: Option<SchedulerKind>,
    /// Scheduler config fields to override, as keywords to diffusers'
    /// `XScheduler.from_config(config, **overrides)`; e.g. `("timestep_spacing", "trailing")`
    /// for SD-Turbo-style one-step sampling.
    pub scheduler_overrides: Vec<(String, serde_json::Value)>,
    /// Seed of the initial latents and of the step noise (see [`Noise`]).
    pub seed: u64,
    /// Initial latents instead of seeded noise: unit Gaussian values, C-order
    /// `[1, latent_channels, height/8, width/8]` (diffusers' `latents=`). Step noise, where a
    /// sampler needs it, still comes from `seed`.
    pub latents: Option<Vec<f32>>,
    pub width: usize,
    pub height: usize,
    /// A1111's CLIP skip: 1 = the text encoder's last layer, 2 = the one before, ...
    pub clip_skip: usize,
    /// DDIM's η in [0, 1]; ignored by the other samplers.
    pub eta: f64,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 20,
            guidance_scale: 7.5,
            scheduler: None,
            scheduler_overrides: Vec::new(),
            seed: 0,
            latents: None,
            width: 512,
            height: 512,
            clip_skip: 1,
            eta: 0.0,
        }
    }
}

/// An RGB image, values in `[0, 1]`, row-major H×W×3.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<f32>,
}

impl Image {
    /// 8-bit RGB, rounding as `(x * 255).round()` (diffusers' `numpy_to_pil`).
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.rgb.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }
}

impl GenerateParams {
    /// Checks every parameter against `model`; errors are [`Error::BadInput`] naming the
    /// parameter and what it may be.
    pub fn validate(&self, model: &StableDiffusion) -> Result<(), Error> {
        let bad = |s: String| Err(Error::BadInput(s));
        if self.steps == 0 {
            return bad("steps = 0: must be at least 1".into());
        }
        if !self.guidance_scale.is_finite() {
            return bad(format!("guidance_scale = {}: must be a finite number", self.guidance_scale));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return bad(format!("eta = {}: must be between 0 and 1", self.eta));
        }
        let f = model.vae_scale_factor();
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || v % f != 0 {
                return bad(format!("{name} = {v}: must be a positive multiple of {f}"));
            }
        }
        let (lh, lw) = (self.height / f, self.width / f);
        let unit = f << model.unet.downsamplings();
        if lh % (1 << model.unet.downsamplings()) != 0 || lw % (1 << model.unet.downsamplings()) != 0 {
            return bad(format!(
                "{}×{} (width×height): this model needs both to be multiples of {unit}",
                self.width, self.height
            ));
        }
        let layers = model.text_encoder.num_layers();
        if self.clip_skip == 0 || self.clip_skip > layers {
            return bad(format!("clip_skip = {}: must be between 1 and {layers} (1 = the last layer)", self.clip_skip));
        }
        if let Some(latents) = &self.latents {
            let c = model.latent_channels();
            if latents.len() != c * lh * lw {
                return bad(format!(
                    "latents: {} values given, a {}×{} image needs [1, {c}, {lh}, {lw}] = {}",
                    latents.len(),
                    self.width,
                    self.height,
                    c * lh * lw
                ));
            }
            if latents.iter().any(|v| !v.is_finite()) {
                return bad("latents: contain NaN or infinite values".into());
            }
        }
        if model.latent_channels() != model.vae_config.latent_channels {
            return Err(Error::BadConfig(format!(
                "unet: in_channels = {} differs from the VAE's latent_channels = {} (an inpainting model?); \
                 text-to-image needs a plain text-to-image UNet",
                model.latent_channels(),
                model.vae_config.latent_channels
            )));
        }
        Ok(())
    }

    /// The scheduler these parameters ask for, built from the model's config.
    pub fn build_scheduler(&self, model: &StableDiffusion) -> Result<Scheduler, Error> {
        let mut config = model.scheduler_config.clone();
        for (field, value) in &self.scheduler_overrides {
            config = config.with(field, value.clone());
        }
        let mut scheduler = match self.scheduler {
            Some(kind) => Scheduler::new(kind, &config)?,
            None => Scheduler::of_model(&config)?,
        };
        scheduler.set_eta(self.eta)?;
        scheduler.set_timesteps(self.steps)?;
        Ok(scheduler)
    }
}

impl StableDiffusion {
    /// The `[b, 77, hidden]` text embeddings of `prompt` on the model's device.
    fn encode_prompt(&self, prompt: &str, clip_skip: usize) -> Result<Tensor<3>, Error> {
        let ids: Vec<i64> = self.tokenizer.encode(prompt)?.into_iter().map(i64::from).collect();
        let n = ids.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &self.device);
        self.text_encoder.forward(ids, clip_skip)
    }

    /// Generates one image. `on_step(done, total)` is called after each denoising step;
    /// returning `false` stops with [`Error::Cancelled`].
    pub async fn txt2img(
        &self,
        params: &GenerateParams,
        mut on_step: impl FnMut(usize, usize) -> bool,
    ) -> Result<Image, Error> {
        params.validate(self)?;
        let mut scheduler = params.build_scheduler(self)?;
        let device = &self.device;
        let g = params.guidance_scale;
        let cfg = g > 1.0 && self.unet_config.time_cond_proj_dim.is_none();

        // Text: [uncond, cond] with guidance, else [cond].
        let cond = self.encode_prompt(&params.prompt, params.clip_skip)?; // [1, 77, d]
        let context = if cfg {
            let uncond = self.encode_prompt(&params.negative_prompt, 1)?; // [1, 77, d]
            Tensor::cat(vec![uncond, cond], 0) // [2, 77, d]
        } else {
            cond
        };

        let f = self.vae_scale_factor();
        let shape = [1, self.latent_channels(), params.height / f, params.width / f];
        let count: usize = shape.iter().product();
        let noise = Noise::new(params.seed);
        let initial = match &params.latents {
            Some(latents) => latents.clone(),
            None => noise.normal(0, count),
        };
        let mut latents = Tensor::<4>::from_data(TensorData::new(initial, shape), device)
            .mul_scalar(scheduler.init_noise_sigma() as f32); // [1, c, h, w]

        let timestep_cond = self.unet_config.time_cond_proj_dim.map(|dim| {
            let emb = guidance_scale_embedding(g - 1.0, dim);
            Tensor::<2>::from_data(TensorData::new(emb, [1, dim]), device) // [1, dim]
        });

        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len();
        for (i, &t) in timesteps.iter().enumerate() {
            let input = if cfg { Tensor::cat(vec![latents.clone(), latents.clone()], 0) } else { latents.clone() };
            let input = scheduler.scale_model_input(input, i)?; // [b, c, h, w]
            let b = input.dims()[0];
            let t = Tensor::<1>::from_data(TensorData::new(vec![t as f32; b], [b]), device);
            let cond = timestep_cond.clone().map(|c| { let d = c.dims()[1]; if b > 1 { c.expand([b, d]) } else { c } });
            let out = self.unet.forward(input, t, context.clone(), cond); // [b, c, h, w]
            let pred = if cfg {
                let uncond = out.clone().narrow(0, 0, 1);
                let text = out.narrow(0, 1, 1);
                uncond.clone() + (text - uncond).mul_scalar(g as f32) // [1, c, h, w]
            } else {
                out
            };
            let step_noise = if scheduler.needs_noise(i) {
                Some(Tensor::<4>::from_data(TensorData::new(noise.normal(1 + i as u64, count), shape), device))
            } else {
                None
            };
            latents = scheduler.step(pred, i, latents, step_noise)?;
            if !on_step(i + 1, total) {
                return Err(Error::Cancelled);
            }
        }

        let z = latents.div_scalar(self.vae.scaling_factor() as f32);
        let image = self.vae.decode(z); // [1, 3, H, W]
        let image = image.div_scalar(2.0).add_scalar(0.5).clamp(0.0, 1.0).permute([0, 2, 3, 1]); // [1, H, W, 3]
        let rgb = read_f32(image).await?;
        Ok(Image { width: params.width, height: params.height, rgb })
    }
}

/// diffusers' `get_guidance_scale_embedding` for one `w`, in float32 as torch computes it:
/// `w·1000` times `exp(-k·ln(10000)/(half − 1))`, then `[sin, cos]`, zero-padded to `dim`.
pub fn guidance_scale_embedding(w: f64, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let w = w as f32 * 1000.0;
    let step = 10000f32.ln() / (half as f32 - 1.0);
    let args: Vec<f32> = (0..half).map(|k| w * (k as f32 * -step).exp()).collect();
    let mut emb: Vec<f32> = args.iter().map(|a| a.sin()).collect();
    emb.extend(args.iter().map(|a| a.cos()));
    emb.resize(dim, 0.0);
    emb
}

/// Deterministic, platform-independent Gaussian noise: the same seed gives the same values
/// natively and in the browser.
///
/// Counter-based: value `i` of stream `s` depends only on `(seed, s, i)`. Stream 0 is the
/// initial latents; stream `1 + k` the noise of denoising step `k`. Each value is drawn by
/// Marsaglia's polar method from two uniforms in (−1, 1) made by SplitMix64 mixing of
/// `(seed, stream, index, attempt)`; rejected pairs retry with the next attempt. The
/// logarithm is computed here with f64 `+ − × ÷` only ([`ln`]) and `sqrt` is exactly
/// rounded by IEEE 754, so no platform libm is involved.
#[derive(Clone, Copy, Debug)]
pub struct Noise {
    seed: u64,
}

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise { seed }
    }

    /// `count` unit Gaussian values of `stream`.
    pub fn normal(&self, stream: u64, count: usize) -> Vec<f32> {
        (0..count as u64).map(|i| self.value(stream, i)).collect()
    }

    fn value(&self, stream: u64, index: u64) -> f32 {
        let base = mix(mix(self.seed ^ 0x5D58_8B65_6C07_8965).wrapping_add(stream)).wrapping_add(index);
        let mut attempt = 0u64;
        loop {
            let r = mix(base ^ mix(attempt.wrapping_add(0x2545_F491_4F6C_DD1D)));
            let u = ((r >> 32) as f64 + 0.5) / 4294967296.0 * 2.0 - 1.0; // (−1, 1)
            let v = ((r & 0xFFFF_FFFF) as f64 + 0.5) / 4294967296.0 * 2.0 - 1.0;
            let s = u * u + v * v;
            if s < 1.0 && s > 0.0 {
                return (u * (-2.0 * ln(s) / s).sqrt()) as f32;
            }
            attempt += 1;
        }
    }
}

/// SplitMix64's finaliser.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Natural logarithm of a positive, normal f64 using only exactly specified arithmetic:
/// `x = m·2^e` with `m` in [√½, √2), then `ln m = 2·atanh((m−1)/(m+1))` by its series.
fn ln(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000); // [1, 2)
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0); // |s| ≤ 0.172
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 40.0 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * LN2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_matches_std() {
        for x in [1e-300, 1e-10, 0.001, 0.3, 0.5, 0.7071, 1.0, 1.4142, 2.0, 3.7, 1e10] {
            let (a, b) = (ln(x), x.ln());
            assert!((a - b).abs() <= 1e-15 * b.abs().max(1.0), "ln({x}) = {a}, std {b}");
        }
    }

    #[test]
    fn noise_is_standard_normal_and_repeatable() {
        let noise = Noise::new(42);
        let a = noise.normal(0, 20000);
        assert_eq!(a, Noise::new(42).normal(0, 20000));
        assert_ne!(a[..16], Noise::new(43).normal(0, 16)[..]);
        assert_ne!(a[..16], noise.normal(1, 16)[..]);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean}, var {var}");
        // Pinned values: any change to the generator changes every seeded image.
        let first: Vec<f32> = noise.normal(0, 3);
        let bits: Vec<u32> = first.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, [1072194509, 1054304713, 1058453571], "{first:?}");
    }

    #[test]
    fn guidance_embedding_shape() {
        let e = guidance_scale_embedding(0.0, 16);
        assert_eq!(e.len(), 16);
        assert!(e[..8].iter().all(|v| *v == 0.0) && e[8..].iter().all(|v| *v == 1.0));
        assert_eq!(guidance_scale_embedding(1.0, 5).len(), 5);
    }
}
