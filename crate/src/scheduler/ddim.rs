//! DDIMScheduler (`diffusers/schedulers/scheduling_ddim.py`): deterministic DDIM with
//! η = 0, stochastic with η > 0.

use burn::tensor::Tensor;

use super::config::{Fields, SchedulerConfig};
use super::schedule::{DDPM_DEFAULTS, PredictionType, Schedule};
use super::{add_noise_alpha, lin};
use crate::Error;

#[derive(Clone, Debug)]
pub struct Ddim {
    schedule: Schedule,
    /// `clip_sample_range` when `clip_sample` (x₀ is clamped to ±range), else `None`.
    clip: Option<f64>,
    /// ᾱ "before" timestep 0: 1 with `set_alpha_to_one`, else ᾱ₀.
    final_alpha_cumprod: f32,
    /// η: the fraction of the DDPM posterior's noise re-injected each step.
    pub(crate) eta: f64,
    timesteps: Vec<f64>,
    /// (ᾱ_t, ᾱ_prev) per step, checked once in set_timesteps.
    alphas: Vec<(f64, f64)>,
}

impl Ddim {
    pub fn from_config(config: &SchedulerConfig) -> Result<Self, Error> {
        let fields = Fields::new(config, "DDIMScheduler");
        let schedule = Schedule::read(&fields, &DDPM_DEFAULTS)?;
        fields.require_flag("thresholding", false, false)?;
        fields.require_flag("rescale_betas_zero_snr", false, false)?;
        // DDIM's default clips x₀, so a config without the field (SD 1.x's PNDM one) clips.
        let clip = if fields.flag("clip_sample", true)? { Some(fields.finite("clip_sample_range", 1.0)?) } else { None };
        let final_alpha_cumprod = if fields.flag("set_alpha_to_one", true)? { 1.0 } else { schedule.alphas_cumprod[0] };
        Ok(Ddim { schedule, clip, final_alpha_cumprod, eta: 0.0, timesteps: Vec::new(), alphas: Vec::new() })
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn set_timesteps(&mut self, steps: usize) -> Result<(), Error> {
        let timesteps = self.schedule.spaced_timesteps(steps, true);
        // DDIM steps back by N // steps whatever the spacing (so "trailing" may skip or repeat).
        let ratio = (self.schedule.num_train_timesteps / steps) as i64;
        let alphas = timesteps
            .iter()
            .map(|&t| {
                let (t, prev) = (t as i64, t as i64 - ratio);
                let alpha = self.schedule.alpha_cumprod(t)?;
                let alpha_prev = if prev >= 0 { self.schedule.alpha_cumprod(prev)? } else { self.final_alpha_cumprod };
                Ok((alpha as f64, alpha_prev as f64))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        (self.timesteps, self.alphas) = (timesteps, alphas);
        Ok(())
    }

    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    pub fn needs_noise(&self, _step_index: usize) -> bool {
        self.eta > 0.0
    }

    /// x₀ and ε from the model output, then
    /// `x_prev = √ᾱ_prev·x₀ + √(1 − ᾱ_prev − σ²)·ε + σ·noise` with σ = η·√(posterior variance).
    pub fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, Error> {
        let (alpha, alpha_prev) = self.alphas[step_index];
        let beta = 1.0 - alpha;
        let (sa, sb) = (alpha.sqrt(), beta.sqrt());
        // Each as (coefficient of sample, coefficient of model_output).
        let (x0, eps) = match self.schedule.prediction_type {
            PredictionType::Epsilon => ((1.0 / sa, -sb / sa), (0.0, 1.0)),
            PredictionType::Sample => ((0.0, 1.0), (1.0 / sb, -sa / sb)),
            PredictionType::VPrediction => ((sa, -sb), (sb, sa)),
        };
        let variance = ((1.0 - alpha_prev) / beta) * (1.0 - alpha / alpha_prev);
        let std_dev = self.eta * variance.sqrt();
        let direction = (1.0 - alpha_prev - std_dev * std_dev).sqrt();
        let prev = match self.clip {
            Some(range) => {
                let pred_x0 = lin(sample.clone(), x0.0, model_output.clone(), x0.1).clamp(-range, range); // [b, c, h, w]
                let pred_eps = lin(sample, eps.0, model_output, eps.1); // [b, c, h, w]
                lin(pred_x0, alpha_prev.sqrt(), pred_eps, direction) // [b, c, h, w]
            }
            None => {
                // Without clipping x₀ and ε are linear in (sample, model_output): fold them.
                let a = alpha_prev.sqrt();
                lin(sample, a * x0.0 + direction * eps.0, model_output, a * x0.1 + direction * eps.1) // [b, c, h, w]
            }
        };
        Ok(match noise {
            Some(noise) if self.eta > 0.0 => prev + noise.mul_scalar(std_dev as f32), // [b, c, h, w]
            _ => prev,
        })
    }

    pub fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step_index: usize) -> Result<Tensor<4>, Error> {
        add_noise_alpha(&self.schedule, original, noise, self.timesteps[step_index] as i64)
    }

    pub fn reset(&mut self) {}
}
