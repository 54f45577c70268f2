//! DDIMScheduler (`diffusers/schedulers/scheduling_ddim.py`): deterministic DDIM with
//! η = 0, stochastic with η > 0.

use burn::tensor::Tensor;

use super::SchedulerKind;
use super::config::{Fields, SchedulerConfig};
use super::sampler::{Sampler, lin};
use super::schedule::{DDPM_DEFAULTS, PredictionType, Schedule};
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
        let fields = Fields::new(config, SchedulerKind::Ddim.class_name());
        let schedule = Schedule::read(&fields, &DDPM_DEFAULTS)?;
        fields.require_flag("thresholding", false, false)?;
        fields.require_flag("rescale_betas_zero_snr", false, false)?;
        // DDIM's default clips x₀, so a config without the field (SD 1.x's PNDM one) clips.
        let clip = fields.clip_sample(true)?;
        let final_alpha_cumprod = schedule.final_alpha_cumprod(&fields, true)?;
        Ok(Ddim {
            schedule,
            clip,
            final_alpha_cumprod,
            eta: 0.0,
            timesteps: Vec::new(),
            alphas: Vec::new(),
        })
    }
}

impl Sampler for Ddim {
    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The timesteps and, for each step, ᾱ at its timestep and at the next one of the
    /// schedule (the final ᾱ after the last): DDIM steps along its sub-sequence τ from τ_i to
    /// τ_(i−1) (Song et al. 2021, §4.2), as CompVis's DDIMSampler does. diffusers steps back
    /// by N // steps whatever the spacing, which is the next timestep only for "leading":
    /// with "linspace" 10 steps go 999 → 899 though the next step runs at 888, with
    /// "trailing" 6 steps 999 → 833 though the next runs at 832 (docs/schedulers.md).
    fn set_timesteps(&mut self, steps: usize) -> Result<(), Error> {
        let timesteps = self.schedule.spaced_timesteps(steps, true);
        self.schedule.check_in_range(&timesteps, steps)?;
        let alphas = timesteps
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let alpha = self.schedule.alpha_cumprod(t as i64)?;
                let alpha_prev = match timesteps.get(i + 1) {
                    Some(&next) => self.schedule.alpha_cumprod(next as i64)?,
                    None => self.final_alpha_cumprod,
                };
                Ok((alpha as f64, alpha_prev as f64))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        (self.timesteps, self.alphas) = (timesteps, alphas);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn needs_noise(&self, _step_index: usize) -> bool {
        self.eta > 0.0
    }

    /// x₀ and ε from the model output, then
    /// `x_prev = √ᾱ_prev·x₀ + √(1 − ᾱ_prev − σ²)·ε + σ·noise` with σ = η·√(posterior variance).
    fn step(
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
        let x0 = self.x0_at_alpha(alpha);
        let eps = match self.schedule.prediction_type {
            PredictionType::Epsilon => (0.0, 1.0),
            PredictionType::Sample => (1.0 / sb, -sa / sb),
            PredictionType::VPrediction => (sb, sa),
        };
        let variance = ((1.0 - alpha_prev) / beta) * (1.0 - alpha / alpha_prev);
        let std_dev = self.eta * variance.sqrt();
        let direction = (1.0 - alpha_prev - std_dev * std_dev).sqrt();
        let prev = match self.clip {
            Some(range) => {
                let pred_x0 =
                    lin(sample.clone(), x0.0, model_output.clone(), x0.1).clamp(-range, range); // [b, c, h, w]
                let pred_eps = lin(sample, eps.0, model_output, eps.1); // [b, c, h, w]
                lin(pred_x0, alpha_prev.sqrt(), pred_eps, direction) // [b, c, h, w]
            }
            None => {
                // Without clipping x₀ and ε are linear in (sample, model_output): fold them.
                let a = alpha_prev.sqrt();
                lin(
                    sample,
                    a * x0.0 + direction * eps.0,
                    model_output,
                    a * x0.1 + direction * eps.1,
                ) // [b, c, h, w]
            }
        };
        Ok(match noise {
            Some(noise) if self.eta > 0.0 => prev + noise.mul_scalar(std_dev as f32), // [b, c, h, w]
            _ => prev,
        })
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
impl Ddim {
    /// (ᾱ_t, ᾱ_prev) per step, for the property test in `scheduler::tests`.
    pub(super) fn step_alphas(&self) -> &[(f64, f64)] {
        &self.alphas
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn ddim(spacing: &str) -> Ddim {
        let json = format!(
            r#"{{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": false,
                "set_alpha_to_one": false, "steps_offset": 1, "timestep_spacing": "{spacing}"}}"#
        );
        Ddim::from_config(&SchedulerConfig::from_json(&json).unwrap()).unwrap()
    }

    /// The issue's examples: each step goes to the timestep the next step runs at. diffusers
    /// 0.42 goes to t − N // steps instead (899 and 833 here); with "leading" that is the same.
    #[test]
    fn previous_timestep_is_the_next_in_the_schedule() {
        let a: Vec<f64> = ddim("leading")
            .schedule
            .alphas_cumprod
            .iter()
            .map(|&x| x as f64)
            .collect();
        let mut linspace = ddim("linspace");
        linspace.set_timesteps(10).unwrap();
        assert_eq!(linspace.timesteps[..2], [999.0, 888.0]);
        assert_eq!(linspace.alphas[0], (a[999], a[888]));
        let mut trailing = ddim("trailing");
        trailing.set_timesteps(6).unwrap();
        assert_eq!(trailing.timesteps[..2], [999.0, 832.0]);
        assert_eq!(trailing.alphas[0], (a[999], a[832]));
        let mut leading = ddim("leading");
        leading.set_timesteps(10).unwrap();
        assert_eq!(leading.timesteps[..2], [901.0, 801.0]);
        assert_eq!(leading.alphas[0], (a[901], a[801]));
        // The last step goes to the final ᾱ: ᾱ₀ without set_alpha_to_one.
        assert_eq!(leading.alphas[9], (a[1], a[0]));
        assert_eq!(trailing.alphas[5].1, a[0]);
    }
}
