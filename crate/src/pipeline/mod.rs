//! Generation on a loaded [`StableDiffusion`]: text to image, image to image and
//! inpainting, equal to diffusers' (0.42) `StableDiffusionPipeline`,
//! `StableDiffusionImg2ImgPipeline` and `StableDiffusionInpaintPipeline`.
//!
//! Which one runs follows from the parameters: no `init_image` is text to image, an
//! `init_image` alone is image to image, `init_image` + `mask` is inpainting. The loop itself
//! is in `denoise.rs`; here are the parameters and their checks. Semantics matched:
//!
//! - Classifier-free guidance runs when `guidance_scale > 1` and the UNet has no
//!   `time_cond_proj_dim`: the negative prompt (`""` when empty) and the prompt are encoded
//!   and batched `[uncond, cond]`, and the prediction is `uncond + g·(cond − uncond)`.
//!   Otherwise only the prompt is encoded and the negative prompt is ignored.
//! - `clip_skip` has A1111's meaning (1 = the last layer; diffusers' `clip_skip=k` is our
//!   `k + 1`). Like diffusers, it applies to the prompt only.
//! - LCM-style UNets (`time_cond_proj_dim`) get the guidance embedding of `w = g − 1`
//!   ([`guidance_scale_embedding`]), as diffusers' pipelines compute it.
//! - Noise: the given `latents` or seeded noise from [`Noise`] (stream 0), and for samplers
//!   that draw noise per step, stream `1 + k` at the `k`-th step run.
//! - `strength` (image to image, inpainting) skips the first `steps − ⌊steps·strength⌋`
//!   timesteps, as diffusers' `get_timesteps`; the image's latents (the VAE's latent mean ×
//!   `scaling_factor`) are noised to the first remaining timestep. Inpainting at strength 1
//!   starts from pure noise, as diffusers does.
//! - Inpainting with a 9-channel UNet feeds `[latents, mask, masked image latents]`; with a
//!   4-channel UNet the known region is replaced after every step by the image's latents
//!   noised to the next timestep. The mask is binarized at 0.5 and taken at every 8th pixel
//!   (torch's nearest interpolation); the masked image is the image with the repainted
//!   region set to 0 in `[-1, 1]`.
//! - The loop stays on the device; the image (and previews, when asked for) is read back
//!   asynchronously: `decode(latents / scaling_factor)`, then `(x/2 + 0.5).clamp(0, 1)`.

mod denoise;
mod image;
mod noise;
mod parameters;
mod preview;

pub use denoise::now_ms;
pub use image::{Image, Mask};
pub use noise::Noise;

use crate::Error;
use crate::model::StableDiffusion;
use crate::scheduler::{Scheduler, SchedulerKind};

/// What to generate. [`Default`] gives SD's usual settings at 512×512.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    pub prompt: String,
    /// Used only with classifier-free guidance; empty means `""` as in diffusers.
    pub negative_prompt: String,
    /// Inference steps, at least 1. With `strength` < 1 only the last
    /// `⌊steps·strength⌋` of them run.
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 turns guidance off (one UNet batch).
    pub guidance_scale: f64,
    /// The sampler; `None` uses the model's own (scheduler_config.json's `_class_name`).
    pub scheduler: Option<SchedulerKind>,
    /// Scheduler config fields to override, as keywords to diffusers'
    /// `XScheduler.from_config(config, **overrides)`; e.g. `("timestep_spacing", "trailing")`
    /// for SD-Turbo-style one-step sampling.
    pub scheduler_overrides: Vec<(String, serde_json::Value)>,
    /// Seed of the initial noise and of the step noise (see [`Noise`]).
    pub seed: u64,
    /// The initial noise instead of seeded noise: unit Gaussian values, C-order
    /// `[1, latent_channels, height/8, width/8]` (diffusers' `latents=` for text to image;
    /// for image to image and inpainting, the noise added to the image's latents). Step
    /// noise, where a sampler needs it, still comes from `seed`.
    pub latents: Option<Vec<f32>>,
    /// Output size in pixels; with an `init_image`, its size.
    pub width: usize,
    pub height: usize,
    /// A1111's CLIP skip: 1 = the text encoder's last layer, 2 = the one before, ...
    pub clip_skip: usize,
    /// DDIM's η in [0, 1]; ignored by the other samplers.
    pub eta: f64,
    /// Image to image / inpainting: the starting image (`width × height`).
    pub init_image: Option<Image>,
    /// Inpainting: white (≥ 0.5) is repainted, black kept; the size of `init_image`.
    pub mask: Option<Mask>,
    /// How much of `init_image` is redone, in [0, 1]; `None` is diffusers' default (0.8 for
    /// image to image, 1 for inpainting). Only with an `init_image`.
    pub strength: Option<f64>,
    /// Hand a preview to the progress callback every this many steps (and at the last);
    /// 0 for none. Each preview is a small read-back.
    pub preview_every: usize,
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
            init_image: None,
            mask: None,
            strength: None,
            preview_every: 0,
        }
    }
}

/// Text to image, image to image or inpainting (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Txt2Img,
    Img2Img,
    Inpaint,
}

/// Sent to the progress callback after each denoising step.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Steps done, from 1 to `total`.
    pub step: usize,
    /// Steps that run (fewer than `steps` with `strength` < 1).
    pub total: usize,
    /// A `width/8 × height/8` preview of the image being made, when asked for.
    pub preview: Option<Image>,
}

/// How long the phases of one generation took, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// Tokenizing and the text encoder (both prompts with guidance).
    pub text_ms: f64,
    /// Denoising steps run.
    pub steps: usize,
    /// All steps together (the UNet, the scheduler, previews and the browser's turns).
    pub steps_ms: f64,
    /// The VAE decoder and reading the image back.
    pub vae_ms: f64,
    /// Everything, checks included.
    pub total_ms: f64,
}

impl Timings {
    /// Mean milliseconds per step.
    pub fn step_ms(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.steps_ms / self.steps as f64
        }
    }
}

impl GenerateParams {
    pub fn mode(&self) -> Mode {
        match (&self.init_image, &self.mask) {
            (None, _) => Mode::Txt2Img,
            (Some(_), None) => Mode::Img2Img,
            (Some(_), Some(_)) => Mode::Inpaint,
        }
    }

    /// The strength in effect: the given one, else diffusers' default for the mode.
    pub fn strength(&self) -> f64 {
        self.strength.unwrap_or(match self.mode() {
            Mode::Inpaint => 1.0,
            _ => 0.8,
        })
    }

    /// Checks every parameter against `model`; errors are [`Error::BadInput`] naming the
    /// parameter and what it may be.
    pub fn validate(&self, model: &StableDiffusion) -> Result<(), Error> {
        let bad = |s: String| Err(Error::BadInput(s));
        if self.steps == 0 {
            return bad("steps = 0: must be at least 1".into());
        }
        if !self.guidance_scale.is_finite() {
            return bad(format!(
                "guidance_scale = {}: must be a finite number",
                self.guidance_scale
            ));
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
        let layers = model.text_encoder.num_layers();
        if self.clip_skip == 0 || self.clip_skip > layers {
            return bad(format!(
                "clip_skip = {}: must be between 1 and {layers} (1 = the last layer)",
                self.clip_skip
            ));
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
        self.validate_images(model)
    }

    /// The mode-specific checks: image, mask and strength, and that the UNet fits the mode.
    fn validate_images(&self, model: &StableDiffusion) -> Result<(), Error> {
        let bad = |s: String| Err(Error::BadInput(s));
        let latent = model.latent_channels();
        let unet = model.unet.in_channels();
        let inpainting_unet = model.info().inpainting;
        if unet != latent && !inpainting_unet {
            return Err(Error::BadConfig(format!(
                "unet: in_channels = {unet} fits neither the VAE's latent_channels = {latent} nor an inpainting UNet ({})",
                2 * latent + 1
            )));
        }
        let Some(image) = &self.init_image else {
            if self.mask.is_some() {
                return bad("mask: inpainting needs an init image as well".into());
            }
            if self.strength.is_some() {
                return bad(
                    "strength: only applies with an init image (image to image or inpainting)"
                        .into(),
                );
            }
            if inpainting_unet {
                return bad(format!(
                    "this is an inpainting model (UNet in_channels = {unet}): give an init image and a mask"
                ));
            }
            return Ok(());
        };
        image.check("init image")?;
        if (image.width, image.height) != (self.width, self.height) {
            return bad(format!(
                "init image: {}×{} differs from width×height {}×{}; the output has the image's size",
                image.width, image.height, self.width, self.height
            ));
        }
        if let Some(mask) = &self.mask {
            mask.check()?;
            if (mask.width, mask.height) != (image.width, image.height) {
                return bad(format!(
                    "mask: {}×{} differs from the init image's {}×{}; they must be the same size",
                    mask.width, mask.height, image.width, image.height
                ));
            }
        } else if inpainting_unet {
            return bad(format!(
                "this is an inpainting model (UNet in_channels = {unet}): give a mask as well"
            ));
        }
        let strength = self.strength();
        if !(0.0..=1.0).contains(&strength) {
            return bad(format!("strength = {strength}: must be between 0 and 1"));
        }
        let run = (self.steps as f64 * strength) as usize;
        if run == 0 {
            return bad(format!(
                "strength = {strength} with steps = {}: no denoising step would run (⌊steps × strength⌋ = 0); \
                 raise strength or steps",
                self.steps
            ));
        }
        Ok(())
    }

    /// The scheduler these parameters ask for, built from the model's config, with its
    /// timesteps set.
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

    /// The index of the first timestep that runs: diffusers' `get_timesteps`
    /// (`t_start = steps − ⌊steps·strength⌋`; every scheduler here has order 1).
    pub fn first_step(&self) -> usize {
        match self.mode() {
            Mode::Txt2Img => 0,
            _ => {
                let init = ((self.steps as f64 * self.strength()) as usize).min(self.steps);
                self.steps - init
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guidance_embedding_shape() {
        let e = guidance_scale_embedding(0.0, 16);
        assert_eq!(e.len(), 16);
        assert!(e[..8].iter().all(|v| *v == 0.0) && e[8..].iter().all(|v| *v == 1.0));
        assert_eq!(guidance_scale_embedding(1.0, 5).len(), 5);
    }

    #[test]
    fn strength_skips_steps_like_diffusers() {
        let image = Image {
            width: 8,
            height: 8,
            rgb: vec![0.5; 192],
        };
        let p = |steps, strength| GenerateParams {
            steps,
            strength: Some(strength),
            init_image: Some(image.clone()),
            ..Default::default()
        };
        // diffusers: init_timestep = int(steps * strength); t_start = steps - init_timestep.
        assert_eq!(p(10, 0.75).first_step(), 3);
        assert_eq!(p(5, 0.6).first_step(), 2);
        assert_eq!(p(4, 1.0).first_step(), 0);
        assert_eq!(p(3, 0.3).first_step(), 3); // nothing would run: refused by validate
        assert_eq!(GenerateParams::default().first_step(), 0);
        assert_eq!(
            GenerateParams {
                init_image: Some(image.clone()),
                ..Default::default()
            }
            .strength(),
            0.8
        );
    }
}
