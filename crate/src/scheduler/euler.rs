//! EulerDiscreteScheduler (`diffusers/schedulers/scheduling_euler_discrete.py`): Euler's
//! method on the probability-flow ODE in σ, with optional Karras sigmas.
//!
//! Its default spacing is "linspace", so `from_config` of a config without
//! `timestep_spacing` (SD 1.5 as first published) gives linspace, while newer SD configs
//! say "leading" and Turbo's "trailing".

use burn::tensor::Tensor;

use super::SchedulerKind;
use super::config::{Fields, SchedulerConfig};
use super::sampler::{Sampler, lin};
use super::schedule::{
    DDPM_DEFAULTS, Defaults, Schedule, check_first_timestep_unique, karras_sigmas, sigma_to_t,
};
use crate::Error;

pub(crate) const EULER_DEFAULTS: Defaults = Defaults {
    timestep_spacing: "linspace",
    ..DDPM_DEFAULTS
};

#[derive(Clone, Debug)]
pub struct Euler {
    schedule: Schedule,
    use_karras_sigmas: bool,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    /// `final_sigmas_type` "sigma_min": end at the smallest training sigma instead of 0.
    final_sigma_min: bool,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
}

impl Euler {
    pub fn from_config(config: &SchedulerConfig) -> Result<Self, Error> {
        let fields = Fields::new(config, SchedulerKind::Euler.class_name());
        let schedule = Schedule::read(&fields, &EULER_DEFAULTS)?;
        fields.choice("interpolation_type", "linear", &["linear"])?;
        fields.choice("timestep_type", "discrete", &["discrete"])?;
        fields.require_flag("use_exponential_sigmas", false, false)?;
        fields.require_flag("use_beta_sigmas", false, false)?;
        fields.require_flag("rescale_betas_zero_snr", false, false)?;
        let final_sigma_min =
            fields.choice("final_sigmas_type", "zero", &["zero", "sigma_min"])? == "sigma_min";
        let init_noise_sigma = schedule.euler_init_noise_sigma(&schedule.sigmas());
        Ok(Euler {
            use_karras_sigmas: fields.flag("use_karras_sigmas", false)?,
            sigma_min: fields.opt_finite("sigma_min")?,
            sigma_max: fields.opt_finite("sigma_max")?,
            final_sigma_min,
            schedule,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            init_noise_sigma,
        })
    }
}

impl Sampler for Euler {
    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<(), Error> {
        let mut timesteps = self.schedule.float_timesteps(steps);
        let mut sigmas = self.schedule.interp_sigmas(&timesteps);
        if self.use_karras_sigmas {
            // The Karras range is that of the spaced sigmas unless the config fixes it.
            let sigma_min = self.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = self.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            let log_sigmas: Vec<f32> = self.schedule.sigmas().iter().map(|s| s.ln()).collect();
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &log_sigmas) as f32)
                .collect();
        }
        let last = if self.final_sigma_min {
            self.schedule.sigmas()[0]
        } else {
            0.0
        };
        let sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).chain([last]).collect();
        let timesteps: Vec<f64> = timesteps.into_iter().map(f64::from).collect();
        self.schedule.check_in_range(&timesteps, steps)?;
        check_first_timestep_unique(&timesteps, SchedulerKind::Euler.class_name())?;
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

    /// The UNet sees the sample at unit variance: x / √(σ² + 1).
    fn scale_model_input(&self, sample: Tensor<4>, step_index: usize) -> Tensor<4> {
        scale_by_sigma(sample, self.sigmas[step_index])
    }

    /// `x_next = x + (x − x₀)/σ · (σ_next − σ)`, with x₀ predicted from the model output.
    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        _noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, Error> {
        let sigma = self.sigmas[step_index] as f64;
        let (cs, cm) = self.x0_at_sigma(sigma);
        let r = (self.sigmas[step_index + 1] as f64 - sigma) / sigma;
        Ok(lin(sample, 1.0 + r - r * cs, model_output, -r * cm)) // [b, c, h, w]
    }

    /// x + σ·noise.
    fn add_noise(
        &self,
        original: Tensor<4>,
        noise: Tensor<4>,
        step_index: usize,
    ) -> Result<Tensor<4>, Error> {
        Ok(original + noise.mul_scalar(self.sigmas[step_index])) // [b, c, h, w]
    }
}

/// x / √(σ² + 1), the scalar in float32 as torch computes it.
pub(crate) fn scale_by_sigma(sample: Tensor<4>, sigma: f32) -> Tensor<4> {
    sample.div_scalar((sigma * sigma + 1.0).sqrt()) // [b, c, h, w]
}
