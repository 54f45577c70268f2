//! What each of the six schedulers implements ([`Sampler`]), and the pieces they share.
//!
//! A scheduler's own file holds what is particular to its diffusers class (config fields,
//! timesteps, the step); the trait's provided methods hold what several classes compute
//! alike, so each is written once: the ᾱ-based forward process and x₀ estimate (DDIM, PNDM,
//! LCM), the σ-based x₀ estimate (Euler, Euler ancestral) and the do-nothing defaults.

use burn::tensor::Tensor;

use super::schedule::{PredictionType, Schedule};
use crate::Error;

/// One diffusers scheduler class. [`super::Scheduler`] checks step indices, shapes and noise
/// before calling these, so `step_index` is always inside [`Self::timesteps`] here.
pub(crate) trait Sampler {
    /// The training schedule and the shared fields as this scheduler read them.
    fn schedule(&self) -> &Schedule;

    /// Computes the timesteps (and sigmas) for `steps` inference steps, already checked to
    /// be 1 to `num_train_timesteps`, and clears any multistep state.
    fn set_timesteps(&mut self, steps: usize) -> Result<(), Error>;

    /// The UNet's timestep per step index; empty before [`Self::set_timesteps`].
    fn timesteps(&self) -> &[f64];

    /// The noise levels σ (one more than the timesteps) of the sigma-based schedulers;
    /// `None`, the default, for the ᾱ-based ones.
    fn sigmas(&self) -> Option<&[f32]> {
        None
    }

    /// The standard deviation of the initial noise: 1 unless the scheduler works in σ.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The UNet input for step `step_index`: `sample` itself unless the scheduler scales it.
    fn scale_model_input(&self, sample: Tensor<4>, step_index: usize) -> Tensor<4> {
        let _ = step_index;
        sample
    }

    /// Whether [`Self::step`] at `step_index` adds noise; by default it never does.
    fn needs_noise(&self, step_index: usize) -> bool {
        let _ = step_index;
        false
    }

    /// One denoising step (`[b, c, h, w]` in and out); `noise` is given where
    /// [`Self::needs_noise`].
    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, Error>;

    /// `original` noised to the level of step `step_index`. The default is the forward
    /// process of the ᾱ-based schedulers (DDIM, PNDM, LCM): √ᾱ·original + √(1 − ᾱ)·noise at
    /// the step's timestep, the scalars float32 as torch computes them.
    fn add_noise(
        &self,
        original: Tensor<4>,
        noise: Tensor<4>,
        step_index: usize,
    ) -> Result<Tensor<4>, Error> {
        let timestep = self.timesteps()[step_index] as i64;
        let alpha = self.schedule().alpha_cumprod(timestep)?;
        Ok(lin(
            original,
            alpha.sqrt() as f64,
            noise,
            (1.0 - alpha).sqrt() as f64,
        )) // [b, c, h, w]
    }

    /// The estimate of x₀ implied by `model_output` at step `step_index`, for previews: at
    /// σ for the sigma-based schedulers ([`Self::x0_at_sigma`]), at the timestep's ᾱ for the
    /// others ([`Self::x0_at_alpha`]).
    fn pred_original(
        &self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
    ) -> Result<Tensor<4>, Error> {
        if let Some(sigmas) = self.sigmas() {
            let (cs, cm) = self.x0_at_sigma(sigmas[step_index] as f64);
            return Ok(lin(sample, cs, model_output, cm)); // [b, c, h, w]
        }
        let t = self.timesteps()[step_index].round() as i64;
        let alpha = self.schedule().alpha_cumprod(t.clamp(0, i64::MAX))? as f64;
        Ok(match self.schedule().prediction_type {
            PredictionType::Sample => model_output,
            _ => {
                let (cs, cm) = self.x0_at_alpha(alpha);
                lin(sample, cs, model_output, cm) // [b, c, h, w]
            }
        })
    }

    /// x₀ = cs·x + cm·model_output at ᾱ, as `(cs, cm)`: `(x − √(1−ᾱ)·ε)/√ᾱ` for ε, and the
    /// v- and sample-prediction forms.
    fn x0_at_alpha(&self, alpha: f64) -> (f64, f64) {
        let (a, b) = (alpha.sqrt(), (1.0 - alpha).sqrt());
        match self.schedule().prediction_type {
            PredictionType::Epsilon => (1.0 / a, -b / a),
            PredictionType::VPrediction => (a, -b),
            PredictionType::Sample => (0.0, 1.0),
        }
    }

    /// x₀ = cs·x + cm·model_output at noise level σ for the Euler-type schedulers (whose
    /// sample is x₀ + σ·ε), as `(cs, cm)`.
    fn x0_at_sigma(&self, sigma: f64) -> (f64, f64) {
        match self.schedule().prediction_type {
            PredictionType::Epsilon => (1.0, -sigma),
            PredictionType::VPrediction => (
                1.0 / (sigma * sigma + 1.0),
                -sigma / (sigma * sigma + 1.0).sqrt(),
            ),
            PredictionType::Sample => (0.0, 1.0),
        }
    }

    /// Forgets multistep state; nothing to forget by default.
    fn reset(&mut self) {}
}

/// `x·a + y·b` with host scalars: every update here is a short sum of such terms.
pub(crate) fn lin(x: Tensor<4>, a: f64, y: Tensor<4>, b: f64) -> Tensor<4> {
    x.mul_scalar(a as f32) + y.mul_scalar(b as f32) // [b, c, h, w]
}

/// The step-order bookkeeping of the multistep schedulers: the first step may be any index,
/// each later one must follow the previous.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sequence {
    next: Option<usize>,
}

impl Sequence {
    pub fn enter(&mut self, step_index: usize, what: &str) -> Result<(), Error> {
        match self.next {
            Some(next) if next != step_index => Err(Error::BadInput(format!(
                "{what} steps must be consecutive: expected step {next}, got {step_index} (call reset to start over)"
            ))),
            _ => {
                self.next = Some(step_index + 1);
                Ok(())
            }
        }
    }
}
