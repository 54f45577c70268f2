//! EulerAncestralDiscreteScheduler
//! (`diffusers/schedulers/scheduling_euler_ancestral_discrete.py`): an Euler step down to
//! σ_down followed by fresh noise of σ_up, so that σ_down² + σ_up² = σ_next².

use burn::tensor::Tensor;

use super::SchedulerKind;
use super::config::{Fields, SchedulerConfig};
use super::euler::{EULER_DEFAULTS, scale_by_sigma};
use super::sampler::{Sampler, lin};
use super::schedule::{Defaults, PredictionType, Schedule, check_first_timestep_unique};
use crate::Error;

/// diffusers raises NotImplementedError for `prediction_type` "sample" here.
const DEFAULTS: Defaults = Defaults {
    predictions: &[PredictionType::Epsilon, PredictionType::VPrediction],
    ..EULER_DEFAULTS
};

#[derive(Clone, Debug)]
pub struct EulerAncestral {
    schedule: Schedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
}

impl EulerAncestral {
    pub fn from_config(config: &SchedulerConfig) -> Result<Self, Error> {
        let fields = Fields::new(config, SchedulerKind::EulerAncestral.class_name());
        let schedule = Schedule::read(&fields, &DEFAULTS)?;
        fields.require_flag("rescale_betas_zero_snr", false, false)?;
        let init_noise_sigma = schedule.euler_init_noise_sigma(&schedule.sigmas());
        Ok(EulerAncestral {
            schedule,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            init_noise_sigma,
        })
    }
}

impl Sampler for EulerAncestral {
    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<(), Error> {
        let timesteps = self.schedule.float_timesteps(steps);
        let sigmas: Vec<f32> = self
            .schedule
            .interp_sigmas(&timesteps)
            .into_iter()
            .map(|s| s as f32)
            .chain([0.0])
            .collect();
        let timesteps: Vec<f64> = timesteps.into_iter().map(f64::from).collect();
        self.schedule.check_in_range(&timesteps, steps)?;
        check_first_timestep_unique(&timesteps, SchedulerKind::EulerAncestral.class_name())?;
        self.init_noise_sigma = self.schedule.euler_init_noise_sigma(&sigmas);
        (self.timesteps, self.sigmas) = (timesteps, sigmas);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: Tensor<4>, step_index: usize) -> Tensor<4> {
        scale_by_sigma(sample, self.sigmas[step_index])
    }

    /// Noise is added with weight σ_up, which is 0 where σ_next is 0 (the last step).
    fn needs_noise(&self, step_index: usize) -> bool {
        self.sigmas.get(step_index + 1).is_some_and(|&s| s > 0.0)
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, Error> {
        // σ_up and σ_down in float32 as diffusers: σ_down² = σ_to² − σ_up² cancels, and
        // float64 would differ from it by ~1e-6 relative near the end.
        let (sigma_from, sigma_to) = (self.sigmas[step_index], self.sigmas[step_index + 1]);
        let (s2, t2) = (sigma_from * sigma_from, sigma_to * sigma_to);
        let sigma_up = (t2 * (s2 - t2) / s2).sqrt();
        let sigma_down = (t2 - sigma_up * sigma_up).sqrt();
        let (cs, cm) = self.x0_at_sigma(sigma_from as f64);
        let r = (sigma_down - sigma_from) as f64 / sigma_from as f64;
        let prev = lin(sample, 1.0 + r - r * cs, model_output, -r * cm); // [b, c, h, w]
        Ok(match noise {
            Some(noise) if sigma_up > 0.0 => prev + noise.mul_scalar(sigma_up), // [b, c, h, w]
            _ => prev,
        })
    }

    /// x + σ·noise, as Euler.
    fn add_noise(
        &self,
        original: Tensor<4>,
        noise: Tensor<4>,
        step_index: usize,
    ) -> Result<Tensor<4>, Error> {
        Ok(original + noise.mul_scalar(self.sigmas[step_index])) // [b, c, h, w]
    }
}
