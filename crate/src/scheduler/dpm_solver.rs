//! DPMSolverMultistepScheduler (`diffusers/schedulers/scheduling_dpmsolver_multistep.py`)
//! as DPM-Solver++(2M): `algorithm_type="dpmsolver++"`, `solver_order=2`, with or without
//! Karras sigmas. The user-facing names fix those three fields, as
//! `from_config(config, algorithm_type=..., solver_order=2, use_karras_sigmas=...)` would;
//! every other field comes from the model config or DPM-Solver's defaults.
//!
//! The solver works on x₀ predictions in half-log-SNR λ = log(α/σ): a first-order step
//! (DDIM-like) to start and, with few steps or a final σ of 0, to finish; second-order
//! steps in between use the previous x₀, kept on the device.

use burn::tensor::Tensor;

use super::SchedulerKind;
use super::config::{Fields, SchedulerConfig};
use super::sampler::{Sampler, Sequence, lin};
use super::schedule::{
    BetaSchedule, DDPM_DEFAULTS, Defaults, PredictionType, Schedule, TimestepSpacing,
    check_first_timestep_unique, karras_sigmas, np_interp, np_linspace, sigma_to_t, trailing,
};
use crate::Error;

const DEFAULTS: Defaults = Defaults {
    timestep_spacing: "linspace",
    ..DDPM_DEFAULTS
};

#[derive(Clone, Debug)]
pub struct DpmSolver {
    schedule: Schedule,
    use_karras_sigmas: bool,
    /// `solver_type` "heun" (else "midpoint") for the second-order term.
    heun: bool,
    lower_order_final: bool,
    euler_at_final: bool,
    /// `final_sigmas_type` "sigma_min" (else "zero").
    final_sigma_min: bool,
    lambda_min_clipped: f64,
    /// Karras range overrides; diffusers reads them as hidden config attributes when the
    /// model config (say an Euler one) has them.
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    /// The previous step's x₀ prediction, and how many steps have run (capped at 2).
    prev_x0: Option<Tensor<4>>,
    lower_order_nums: usize,
    sequence: Sequence,
}

impl DpmSolver {
    pub fn from_config(config: &SchedulerConfig, use_karras_sigmas: bool) -> Result<Self, Error> {
        let fields = Fields::new(config, SchedulerKind::DpmPp2m.class_name());
        let schedule = Schedule::read(&fields, &DEFAULTS)?;
        fields.require_flag("thresholding", false, false)?;
        for flag in [
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
            "use_dynamic_shifting",
            "rescale_betas_zero_snr",
        ] {
            fields.require_flag(flag, false, false)?;
        }
        // Only "learned" / "learned_range" change anything (they drop predicted variance
        // channels); DDPM's "fixed_small" passes through from_config and is ignored.
        if let Some(v) = config
            .get("variance_type")
            .filter(|v| v.as_str().is_some_and(|s| s.starts_with("learned")))
        {
            return Err(Error::BadConfig(format!(
                "scheduler: variance_type = {v} is not supported by DPMSolverMultistepScheduler (only null)"
            )));
        }
        // diffusers maps the DEIS / UniPC solver types to midpoint.
        let heun = fields.choice(
            "solver_type",
            "midpoint",
            &["midpoint", "heun", "logrho", "bh1", "bh2"],
        )? == "heun";
        let lambda_min_clipped = fields.num("lambda_min_clipped", f64::NEG_INFINITY)?;
        if lambda_min_clipped.is_nan() {
            return Err(Error::BadConfig("scheduler: lambda_min_clipped = NaN is not supported by DPMSolverMultistepScheduler".into()));
        }
        Ok(DpmSolver {
            use_karras_sigmas,
            heun,
            lower_order_final: fields.flag("lower_order_final", true)?,
            euler_at_final: fields.flag("euler_at_final", false)?,
            final_sigma_min: fields.choice("final_sigmas_type", "zero", &["zero", "sigma_min"])?
                == "sigma_min",
            lambda_min_clipped,
            sigma_min: fields.opt_finite("sigma_min")?,
            sigma_max: fields.opt_finite("sigma_max")?,
            schedule,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            prev_x0: None,
            lower_order_nums: 0,
            sequence: Sequence::default(),
        })
    }

    /// The last training timestep the schedule may start from: all of them unless
    /// `lambda_min_clipped` cuts the noisiest ones (λ below it), as torch.searchsorted on
    /// the float32 λ table.
    fn last_timestep(&self) -> usize {
        let lambdas = self
            .schedule
            .alphas_cumprod
            .iter()
            .map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln());
        let clipped = lambdas
            .filter(|&l| (l as f64) < self.lambda_min_clipped)
            .count();
        self.schedule.num_train_timesteps - clipped
    }
}

impl Sampler for DpmSolver {
    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<(), Error> {
        let s = &self.schedule;
        let last = self.last_timestep();
        // n + 1 points, dropping the final 0, for "linspace" and "leading".
        let mut timesteps: Vec<f64> = match s.timestep_spacing {
            TimestepSpacing::Linspace => {
                let t = np_linspace(0.0, last as f64 - 1.0, steps + 1, true);
                t.iter()
                    .rev()
                    .take(steps)
                    .map(|x| x.round_ties_even())
                    .collect()
            }
            TimestepSpacing::Leading => {
                let ratio = (last / (steps + 1)) as i64;
                (1..=steps as i64)
                    .rev()
                    .map(|k| (k * ratio + s.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => trailing(last as f64, s.num_train_timesteps, steps),
        };
        let train_sigmas = s.sigmas();
        let sigmas: Vec<f64> = if self.use_karras_sigmas {
            let sigma_min = self.sigma_min.unwrap_or(train_sigmas[0] as f64);
            let sigma_max = self
                .sigma_max
                .unwrap_or(train_sigmas[train_sigmas.len() - 1] as f64);
            let sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            let log_sigmas: Vec<f32> = train_sigmas.iter().map(|s| s.ln()).collect();
            let round = s.beta_schedule != BetaSchedule::SquaredCosCapV2;
            timesteps = sigmas
                .iter()
                .map(|&sigma| {
                    let t = sigma_to_t(sigma, &log_sigmas);
                    if round { t.round_ties_even() } else { t }
                })
                .collect();
            sigmas
        } else {
            timesteps
                .iter()
                .map(|&t| np_interp(t, &train_sigmas))
                .collect()
        };
        let final_sigma = if self.final_sigma_min {
            train_sigmas[0]
        } else {
            0.0
        };
        let sigmas: Vec<f32> = sigmas
            .into_iter()
            .map(|s| s as f32)
            .chain([final_sigma])
            .collect();
        // torch's .to(int64) truncates (the unrounded cosine-schedule Karras timesteps).
        let timesteps: Vec<f64> = timesteps.into_iter().map(f64::trunc).collect();
        self.schedule.check_in_range(&timesteps, steps)?;
        check_first_timestep_unique(&timesteps, SchedulerKind::DpmPp2m.class_name())?;
        // Without Karras sigmas a repeated timestep is a repeated σ: a zero-length step,
        // after which the second-order update divides by that zero length (only "linspace"
        // with as many steps as training timesteps gets there; diffusers runs it).
        if let Some(pair) = timesteps
            .windows(2)
            .find(|pair| pair[0] == pair[1] && !self.use_karras_sigmas)
        {
            return Err(Error::BadInput(format!(
                "steps = {steps}: DPMSolverMultistepScheduler with timestep_spacing \"{}\" repeats timestep {}, \
                 a zero-length step its second-order update cannot take; pick fewer steps",
                self.schedule.timestep_spacing.name(),
                pair[0]
            )));
        }
        (self.timesteps, self.sigmas) = (timesteps, sigmas);
        self.reset();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        _noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, Error> {
        self.sequence.enter(step_index, "dpmpp-2m")?;
        let len = self.timesteps.len();
        let last_step = step_index == len - 1;
        let lower_order_final = last_step
            && (self.euler_at_final
                || (self.lower_order_final && len < 15)
                || !self.final_sigma_min);

        // convert_model_output: x₀ from the model output at σ_s0.
        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[step_index]);
        let (cs, cm) = match self.schedule.prediction_type {
            PredictionType::Epsilon => (1.0 / alpha_s0, -sigma_s0 / alpha_s0),
            PredictionType::VPrediction => (alpha_s0, -sigma_s0),
            PredictionType::Sample => (0.0, 1.0),
        };
        let x0 = lin(sample.clone(), cs, model_output, cm); // [b, c, h, w]

        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[step_index + 1]);
        let h = lambda_t - lambda_s0;
        let e = alpha_t * ((-h).exp() - 1.0);
        let prev = match self.prev_x0.take() {
            Some(prev_x0)
                if self.lower_order_nums >= 1 && !lower_order_final && step_index >= 1 =>
            {
                // Second order: D1 = (m0 − m1)/r0 with r0 = h_prev / h.
                let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[step_index - 1]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                let (c0, c1) = if self.heun {
                    let g = alpha_t * (((-h).exp() - 1.0) / h + 1.0);
                    (-e + g / r0, -g / r0)
                } else {
                    (-e - 0.5 * e / r0, 0.5 * e / r0)
                };
                sample.mul_scalar((sigma_t / sigma_s0) as f32) + lin(x0.clone(), c0, prev_x0, c1) // [b, c, h, w]
            }
            // First order (DPM-Solver++(1), i.e. DDIM in λ).
            _ => lin(sample, sigma_t / sigma_s0, x0.clone(), -e), // [b, c, h, w]
        };
        self.prev_x0 = Some(x0);
        self.lower_order_nums = (self.lower_order_nums + 1).min(2);
        Ok(prev)
    }

    /// α·x + σ·noise at σ = sigmas[step_index], with α = 1/√(σ² + 1) (float32 as torch).
    fn add_noise(
        &self,
        original: Tensor<4>,
        noise: Tensor<4>,
        step_index: usize,
    ) -> Result<Tensor<4>, Error> {
        let sigma = self.sigmas[step_index];
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        Ok(lin(original, alpha as f64, noise, (sigma * alpha) as f64)) // [b, c, h, w]
    }

    fn reset(&mut self) {
        self.prev_x0 = None;
        self.lower_order_nums = 0;
        self.sequence = Sequence::default();
    }
}

/// (α_t, σ_t, λ_t) of noise level σ: α = 1/√(σ² + 1), σ_t = σ·α, λ = ln α − ln σ_t
/// (+∞ at σ = 0, where the first-order step returns x₀).
fn alpha_sigma_lambda(sigma: f32) -> (f64, f64, f64) {
    let sigma = sigma as f64;
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    (alpha, sigma_t, alpha.ln() - sigma_t.ln())
}
