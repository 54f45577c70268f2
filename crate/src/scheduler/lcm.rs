//! LCMScheduler (`diffusers/schedulers/scheduling_lcm.py`), for latent consistency models:
//! each step maps the sample to a denoised estimate through the consistency boundary
//! condition, then re-noises it to the next timestep with fresh noise (not after the last).
//!
//! Its timesteps are a subset of the `original_inference_steps` grid the model was
//! distilled on, so `timestep_spacing` and `steps_offset` play no part, and at most
//! `original_inference_steps` (50) steps are possible.

use burn::tensor::Tensor;

use super::SchedulerKind;
use super::config::{Fields, SchedulerConfig};
use super::sampler::{Sampler, lin};
use super::schedule::{
    DDPM_DEFAULTS, Defaults, Schedule, check_first_timestep_unique, np_linspace,
};
use crate::Error;

/// LCM's defaults are SD's schedule, not DDPM's.
const DEFAULTS: Defaults = Defaults {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "scaled_linear",
    ..DDPM_DEFAULTS
};

/// The boundary condition's σ_data.
const SIGMA_DATA: f64 = 0.5;

#[derive(Clone, Debug)]
pub struct Lcm {
    schedule: Schedule,
    original_inference_steps: usize,
    timestep_scaling: f64,
    clip: Option<f64>,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
}

impl Lcm {
    pub fn from_config(config: &SchedulerConfig) -> Result<Self, Error> {
        let fields = Fields::new(config, SchedulerKind::Lcm.class_name());
        let schedule = Schedule::read(&fields, &DEFAULTS)?;
        fields.require_flag("thresholding", false, false)?;
        fields.require_flag("rescale_betas_zero_snr", false, false)?;
        let original_inference_steps = fields.count("original_inference_steps", 50)?;
        if original_inference_steps == 0 || original_inference_steps > schedule.num_train_timesteps
        {
            return Err(Error::BadConfig(format!(
                "scheduler: original_inference_steps = {original_inference_steps} is not supported by LCMScheduler (1 to num_train_timesteps)"
            )));
        }
        let clip = fields.clip_sample(false)?;
        let final_alpha_cumprod = schedule.final_alpha_cumprod(&fields, true)?;
        Ok(Lcm {
            original_inference_steps,
            timestep_scaling: fields.finite("timestep_scaling", 10.0)?,
            clip,
            final_alpha_cumprod,
            schedule,
            timesteps: Vec::new(),
        })
    }
}

impl Sampler for Lcm {
    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<(), Error> {
        let original = self.original_inference_steps;
        if steps > original {
            return Err(Error::BadInput(format!(
                "steps = {steps}: LCM can take at most original_inference_steps ({original}) steps"
            )));
        }
        // The distillation grid k·c − 1 (c = N // original), noisiest first, sampled at
        // floor(linspace(0, original, steps, endpoint=False)).
        let c = (self.schedule.num_train_timesteps / original) as i64;
        let grid: Vec<i64> = (1..=original as i64).rev().map(|k| k * c - 1).collect();
        let timesteps: Vec<f64> = np_linspace(0.0, original as f64, steps, false)
            .into_iter()
            .map(|i| grid[i.floor() as usize] as f64)
            .collect();
        check_first_timestep_unique(&timesteps, SchedulerKind::Lcm.class_name())?;
        self.timesteps = timesteps;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn needs_noise(&self, step_index: usize) -> bool {
        step_index + 1 < self.timesteps.len()
    }

    /// denoised = c_out·x₀ + c_skip·x; then √ᾱ_prev·denoised + √(1 − ᾱ_prev)·noise, except
    /// on the last step, which returns denoised.
    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, Error> {
        let timestep = self.timesteps[step_index] as i64;
        let prev_timestep = self
            .timesteps
            .get(step_index + 1)
            .map_or(timestep, |&t| t as i64);
        let alpha = self.schedule.alpha_cumprod(timestep)? as f64;
        let alpha_prev = self
            .schedule
            .alpha_cumprod_or_final(prev_timestep, self.final_alpha_cumprod)?
            as f64;
        // Boundary-condition scalings at the scaled timestep.
        let scaled = timestep as f64 * self.timestep_scaling;
        let c_skip = SIGMA_DATA * SIGMA_DATA / (scaled * scaled + SIGMA_DATA * SIGMA_DATA);
        let c_out = scaled / (scaled * scaled + SIGMA_DATA * SIGMA_DATA).sqrt();
        let (cs, cm) = self.x0_at_alpha(alpha);
        let denoised = match self.clip {
            Some(range) => {
                let x0 = lin(sample.clone(), cs, model_output, cm).clamp(-range, range); // [b, c, h, w]
                lin(x0, c_out, sample, c_skip) // [b, c, h, w]
            }
            None => lin(sample, c_out * cs + c_skip, model_output, c_out * cm), // [b, c, h, w]
        };
        Ok(match noise {
            Some(noise) if self.needs_noise(step_index) => lin(
                denoised,
                alpha_prev.sqrt(),
                noise,
                (1.0 - alpha_prev).sqrt(),
            ), // [b, c, h, w]
            _ => denoised,
        })
    }
}
