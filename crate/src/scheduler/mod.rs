//! Noise schedulers, equal to diffusers' (0.42): DDIM, PNDM, Euler, Euler ancestral,
//! DPM-Solver++ 2M (with and without Karras sigmas) and LCM. Where we depart on purpose
//! (docs/schedulers.md): N steps are always N timesteps, each a training timestep
//! ("trailing" spacing's extra step at timestep −1 is dropped, schedules that would pass the
//! last training timestep are refused), and DDIM steps to the next timestep of its schedule.
//!
//! Split of work: the host computes the timesteps, alphas and sigmas once in
//! `set_timesteps`, in the same float32 / float64 arithmetic as diffusers (see
//! [`schedule`]); each step then runs on the device as a few tensor operations on `sample`
//! and `model_output` with those host scalars, so sampling never reads a tensor back.
//! Multistep state (PNDM's past model outputs, DPM-Solver's previous x₀) stays on the device.
//!
//! A scheduler is chosen by its user-facing name ([`SchedulerKind`]) and built from the
//! model's `scheduler/scheduler_config.json` like diffusers'
//! `XScheduler.from_config(model_config)` (see [`config`]), or the model's own scheduler
//! is used ([`SchedulerKind::of_model`]).
//!
//! Files: `config.rs` (the config and the from_config merge), `schedule.rs` (betas,
//! ᾱ, sigmas, spacing and the NumPy/torch arithmetic), `sampler.rs` (the trait each
//! scheduler implements, whose provided methods hold the arithmetic they share), and one file
//! per scheduler: `ddim.rs`, `pndm.rs`, `euler.rs`, `euler_ancestral.rs`, `dpm_solver.rs`,
//! `lcm.rs`. Only [`Scheduler`] is public: it checks indices, shapes and noise before a
//! scheduler's step.
//!
//! Shapes in comments: b batch, c channels, h height, w width of the latents.

pub mod config;
mod ddim;
mod dpm_solver;
mod euler;
mod euler_ancestral;
mod lcm;
mod pndm;
mod sampler;
pub mod schedule;

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;

pub use config::SchedulerConfig;
pub use schedule::{BetaSchedule, PredictionType, Schedule, TimestepSpacing};

use crate::Error;
use sampler::Sampler;

/// The schedulers: the one list of them, with each one's name (what users pick it by, in the
/// CLI and the JS API), the name AUTOMATIC1111 writes for it and the diffusers class it
/// reproduces. The JS API hands this list out as `Generator.schedulers()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `ddim`: DDIMScheduler (deterministic with eta 0; see [`Scheduler::set_eta`]).
    Ddim,
    /// `pndm`: PNDMScheduler (PLMS, after Runge-Kutta warm-up steps unless `skip_prk_steps`).
    Pndm,
    /// `euler`: EulerDiscreteScheduler.
    Euler,
    /// `euler-a`: EulerAncestralDiscreteScheduler.
    EulerAncestral,
    /// `dpmpp-2m`: DPMSolverMultistepScheduler, dpmsolver++, order 2.
    DpmPp2m,
    /// `dpmpp-2m-karras`: the same with Karras sigmas.
    DpmPp2mKarras,
    /// `lcm`: LCMScheduler, for latent consistency models.
    Lcm,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 7] = [
        SchedulerKind::Ddim,
        SchedulerKind::Pndm,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmPp2m,
        SchedulerKind::DpmPp2mKarras,
        SchedulerKind::Lcm,
    ];

    /// The user-facing name (`--scheduler`, the JS `scheduler` option).
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Pndm => "pndm",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerAncestral => "euler-a",
            SchedulerKind::DpmPp2m => "dpmpp-2m",
            SchedulerKind::DpmPp2mKarras => "dpmpp-2m-karras",
            SchedulerKind::Lcm => "lcm",
        }
    }

    /// The name AUTOMATIC1111's web UI writes in an image's `parameters` ("Sampler: ..."),
    /// which other tools read back.
    pub fn a1111_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIM",
            SchedulerKind::Pndm => "PLMS",
            SchedulerKind::Euler => "Euler",
            SchedulerKind::EulerAncestral => "Euler a",
            SchedulerKind::DpmPp2m => "DPM++ 2M",
            SchedulerKind::DpmPp2mKarras => "DPM++ 2M Karras",
            SchedulerKind::Lcm => "LCM",
        }
    }

    /// The diffusers class it reproduces.
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::DpmPp2m | SchedulerKind::DpmPp2mKarras => "DPMSolverMultistepScheduler",
            SchedulerKind::Lcm => "LCMScheduler",
        }
    }

    /// Parses a user-facing name; an unknown one is an error listing the valid names.
    pub fn parse(name: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                Error::BadInput(format!(
                    "unknown scheduler \"{name}\"; choose one of: {}",
                    names.join(", ")
                ))
            })
    }

    /// The model's own scheduler, from the config's `_class_name` (matched against
    /// [`Self::class_name`]). A DPM-Solver config must be the dpmsolver++ order-2 variant we
    /// implement (otherwise pick one by name); its `use_karras_sigmas` picks between the two
    /// DPM++ 2M names.
    pub fn of_model(config: &SchedulerConfig) -> Result<Self, Error> {
        let class = config.class_name.as_deref().unwrap_or("");
        let Some(kind) = Self::ALL.into_iter().find(|k| k.class_name() == class) else {
            let mut classes: Vec<&str> = Self::ALL.iter().map(|k| k.class_name()).collect();
            classes.dedup();
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            return Err(Error::BadConfig(format!(
                "scheduler: _class_name = \"{class}\" is not a scheduler we implement ({}); pick one by name: {}",
                classes.join(", "),
                names.join(", ")
            )));
        };
        if !matches!(kind, SchedulerKind::DpmPp2m | SchedulerKind::DpmPp2mKarras) {
            return Ok(kind);
        }
        let fields = config::Fields::new(config, kind.class_name());
        fields.choice("algorithm_type", "dpmsolver++", &["dpmsolver++"])?;
        let order = fields.count("solver_order", 2)?;
        if order != 2 {
            return Err(Error::BadConfig(format!(
                "scheduler: solver_order = {order} is not supported by {} (only 2; pick a scheduler by name)",
                kind.class_name()
            )));
        }
        Ok(match fields.flag("use_karras_sigmas", false)? {
            true => SchedulerKind::DpmPp2mKarras,
            false => SchedulerKind::DpmPp2m,
        })
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// One scheduler, of any kind. Call [`Self::set_timesteps`], then for each index `i` of
/// [`Self::timesteps`]: run the UNet on [`Self::scale_model_input`] at timestep `i`, and
/// [`Self::step`] with its output (plus fresh noise where [`Self::needs_noise`]).
#[derive(Clone, Debug)]
pub struct Scheduler {
    kind: SchedulerKind,
    inner: Inner,
}

/// The scheduler inside: an enum rather than a `Box<dyn Sampler>`, so that a [`Scheduler`]
/// stays `Clone` and DDIM's η can be set on it.
#[derive(Clone, Debug)]
enum Inner {
    Ddim(ddim::Ddim),
    Pndm(pndm::Pndm),
    Euler(euler::Euler),
    EulerAncestral(euler_ancestral::EulerAncestral),
    DpmSolver(dpm_solver::DpmSolver),
    Lcm(lcm::Lcm),
}

impl Inner {
    fn sampler(&self) -> &dyn Sampler {
        match self {
            Inner::Ddim(s) => s,
            Inner::Pndm(s) => s,
            Inner::Euler(s) => s,
            Inner::EulerAncestral(s) => s,
            Inner::DpmSolver(s) => s,
            Inner::Lcm(s) => s,
        }
    }

    fn sampler_mut(&mut self) -> &mut dyn Sampler {
        match self {
            Inner::Ddim(s) => s,
            Inner::Pndm(s) => s,
            Inner::Euler(s) => s,
            Inner::EulerAncestral(s) => s,
            Inner::DpmSolver(s) => s,
            Inner::Lcm(s) => s,
        }
    }
}

impl Scheduler {
    /// `kind` built from the model's scheduler config, as diffusers'
    /// `XScheduler.from_config(config)`. For the DPM-Solver names the name also fixes
    /// `algorithm_type="dpmsolver++"`, `solver_order=2` and `use_karras_sigmas`, as
    /// `from_config(config, **those)` would.
    pub fn new(kind: SchedulerKind, config: &SchedulerConfig) -> Result<Self, Error> {
        let inner = match kind {
            SchedulerKind::Ddim => Inner::Ddim(ddim::Ddim::from_config(config)?),
            SchedulerKind::Pndm => Inner::Pndm(pndm::Pndm::from_config(config)?),
            SchedulerKind::Euler => Inner::Euler(euler::Euler::from_config(config)?),
            SchedulerKind::EulerAncestral => {
                Inner::EulerAncestral(euler_ancestral::EulerAncestral::from_config(config)?)
            }
            SchedulerKind::DpmPp2m => {
                Inner::DpmSolver(dpm_solver::DpmSolver::from_config(config, false)?)
            }
            SchedulerKind::DpmPp2mKarras => {
                Inner::DpmSolver(dpm_solver::DpmSolver::from_config(config, true)?)
            }
            SchedulerKind::Lcm => Inner::Lcm(lcm::Lcm::from_config(config)?),
        };
        Ok(Scheduler { kind, inner })
    }

    /// The model's own scheduler ([`SchedulerKind::of_model`]).
    pub fn of_model(config: &SchedulerConfig) -> Result<Self, Error> {
        Self::new(SchedulerKind::of_model(config)?, config)
    }

    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// The training schedule and the shared fields as this scheduler read them.
    pub fn schedule(&self) -> &Schedule {
        self.inner.sampler().schedule()
    }

    /// What the UNet predicts, per the config.
    pub fn prediction_type(&self) -> PredictionType {
        self.schedule().prediction_type
    }

    /// DDIM's η in [0, 1]: 0 is deterministic DDIM, 1 is DDPM-like. Like diffusers'
    /// pipelines, which pass `eta` only to schedulers whose `step` takes it, the other
    /// schedulers ignore it.
    pub fn set_eta(&mut self, eta: f64) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::BadInput(format!(
                "eta = {eta}: DDIM's eta must be between 0 and 1"
            )));
        }
        if let Inner::Ddim(s) = &mut self.inner {
            s.eta = eta;
        }
        Ok(())
    }

    /// Computes the timesteps (and sigmas) for `steps` inference steps and clears any
    /// multistep state. 0 steps, or more than `num_train_timesteps`, is an error, as are the
    /// counts diffusers itself cannot run with this config (each scheduler says which).
    pub fn set_timesteps(&mut self, steps: usize) -> Result<(), Error> {
        self.schedule().check_steps(steps)?;
        self.inner.sampler_mut().set_timesteps(steps)
    }

    /// The UNet's timestep for each step index (integers except for Euler-type schedules).
    /// Empty before [`Self::set_timesteps`]. One per step asked for, except PNDM's, as in
    /// diffusers: one more with `skip_prk_steps` (PLMS's first step calls the UNet twice,
    /// so the second timestep comes twice), more without (its Runge-Kutta warm-up).
    pub fn timesteps(&self) -> &[f64] {
        self.inner.sampler().timesteps()
    }

    /// The noise levels σ (one more than the timesteps, ending at 0) of the sigma-based
    /// schedulers (Euler, Euler ancestral, DPM-Solver); `None` for the others.
    pub fn sigmas(&self) -> Option<&[f32]> {
        self.inner.sampler().sigmas()
    }

    /// The standard deviation of the initial noise: multiply unit Gaussian latents by it.
    pub fn init_noise_sigma(&self) -> f64 {
        self.inner.sampler().init_noise_sigma()
    }

    /// The UNet input for step `step_index`: Euler-type schedulers divide by √(σ² + 1), the
    /// others pass `sample` through.
    pub fn scale_model_input(
        &self,
        sample: Tensor<4>,
        step_index: usize,
    ) -> Result<Tensor<4>, Error> {
        check_index(step_index, self.timesteps().len())?;
        Ok(self.inner.sampler().scale_model_input(sample, step_index))
    }

    /// Whether [`Self::step`] at `step_index` uses noise (DDIM with η > 0, Euler ancestral
    /// except where σ reaches 0, LCM except on its last step).
    pub fn needs_noise(&self, step_index: usize) -> bool {
        self.inner.sampler().needs_noise(step_index)
    }

    /// One denoising step from `sample` (`[b, c, h, w]`) given the UNet's output for it,
    /// returning the next sample. `noise` (unit Gaussian, like `sample`) is required where
    /// [`Self::needs_noise`] and ignored elsewhere. Multistep schedulers (PNDM, DPM-Solver)
    /// must be stepped through consecutive indices; they may start at any index (img2img).
    pub fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, Error> {
        check_index(step_index, self.timesteps().len())?;
        same_shape("model_output", &model_output, &sample)?;
        let noise = if self.needs_noise(step_index) {
            let noise = noise.ok_or_else(|| {
                Error::BadInput(format!(
                    "{} needs noise at step {step_index}; none was given",
                    self.kind
                ))
            })?;
            same_shape("noise", &noise, &sample)?;
            Some(noise)
        } else {
            None
        };
        self.inner
            .sampler_mut()
            .step(model_output, step_index, sample, noise)
    }

    /// `original` noised to the level of step `step_index`, for img2img and inpainting
    /// (diffusers' `add_noise` at `timesteps[step_index]`, with `set_begin_index(step_index)`
    /// on the sigma-based schedulers as its pipelines do).
    pub fn add_noise(
        &self,
        original: Tensor<4>,
        noise: Tensor<4>,
        step_index: usize,
    ) -> Result<Tensor<4>, Error> {
        check_index(step_index, self.timesteps().len())?;
        same_shape("noise", &noise, &original)?;
        self.inner.sampler().add_noise(original, noise, step_index)
    }

    /// The estimate of the clean sample x₀ implied by `model_output` at step `step_index`,
    /// for previews: `x − σ·ε`-style for the sigma-based schedulers, `(x − √(1−ᾱ)·ε)/√ᾱ` (or
    /// its v- and sample-prediction forms) for the others. Not used for sampling itself.
    pub fn pred_original(
        &self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
    ) -> Result<Tensor<4>, Error> {
        check_index(step_index, self.timesteps().len())?;
        same_shape("model_output", &model_output, &sample)?;
        self.inner
            .sampler()
            .pred_original(model_output, step_index, sample)
    }

    /// Forgets multistep state, to sample again with the same timesteps.
    pub fn reset(&mut self) {
        self.inner.sampler_mut().reset()
    }
}

fn check_index(step_index: usize, len: usize) -> Result<(), Error> {
    if len == 0 {
        return Err(Error::BadInput(
            "the scheduler has no timesteps: call set_timesteps first".into(),
        ));
    }
    if step_index >= len {
        return Err(Error::BadInput(format!(
            "step index {step_index} is past the last of {len} timesteps"
        )));
    }
    Ok(())
}

fn same_shape(what: &str, t: &Tensor<4>, sample: &Tensor<4>) -> Result<(), Error> {
    if t.dims() != sample.dims() {
        return Err(Error::BadInput(format!(
            "{what} has shape {:?}, the sample {:?}",
            t.dims(),
            sample.dims()
        )));
    }
    Ok(())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// SD's schedule (SD 1.5's scheduler config) with the given spacing.
    fn sd_config(spacing: TimestepSpacing) -> SchedulerConfig {
        let json = format!(
            r#"{{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000,
                "clip_sample": false, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
                "timestep_spacing": "{}"}}"#,
            spacing.name()
        );
        SchedulerConfig::from_json(&json).unwrap()
    }

    /// The step counts refused with SD's schedule, where the spacing cannot give that many
    /// distinct training timesteps: "leading" with steps_offset 1 reaches timestep 1000 at
    /// 1000 steps (DPM-Solver's leading spacing, N // (n + 1) apart, at 999, and repeats at
    /// 1000); DPM-Solver's "linspace" repeats one at 1000; LCM takes at most the 50 steps it
    /// was distilled on. Karras sigmas do not depend on the spacing.
    fn refused(kind: SchedulerKind, spacing: TimestepSpacing, steps: usize) -> bool {
        use SchedulerKind::*;
        use TimestepSpacing::*;
        match (kind, spacing) {
            (Lcm, _) => steps > 50,
            (DpmPp2mKarras, _) => false,
            (DpmPp2m, Leading) => steps >= 999,
            (DpmPp2m, Linspace) | (_, Leading) => steps == 1000,
            _ => false,
        }
    }

    /// Exactly `steps` UNet timesteps, each a training timestep, descending; DDIM steps to
    /// the next of them and from the last to the final ᾱ.
    fn check_schedule(s: &Scheduler, steps: usize) -> Result<(), String> {
        let t = s.timesteps();
        let n_train = s.schedule().num_train_timesteps as f64;
        if let Some(bad) = t.iter().find(|&&x| !(0.0..n_train).contains(&x)) {
            return Err(format!("timestep {bad} is not a training timestep"));
        }
        // PNDM's PLMS takes its first step with two UNet calls (a Heun-like correction, as
        // the original PLMS sampler does), so its second timestep comes twice.
        let mut distinct = t.to_vec();
        if s.kind() == SchedulerKind::Pndm {
            distinct.dedup();
            if t.len() != distinct.len() + usize::from(steps >= 2) {
                return Err(format!(
                    "PNDM: {} timesteps for {} distinct ones",
                    t.len(),
                    distinct.len()
                ));
            }
        }
        if distinct.len() != steps {
            return Err(format!("{} timesteps {t:?}", distinct.len()));
        }
        // Karras sigmas near σ_min may round to the same timestep; the sigmas still descend.
        let strictly = s.kind() != SchedulerKind::DpmPp2mKarras;
        if let Some(pair) = distinct
            .windows(2)
            .find(|p| if strictly { p[0] <= p[1] } else { p[0] < p[1] })
        {
            return Err(format!("timesteps not descending at {pair:?}"));
        }
        if let Some(sigmas) = s.sigmas() {
            if sigmas.len() != steps + 1 || sigmas[steps] != 0.0 {
                return Err(format!(
                    "{} sigmas, the last {:?}",
                    sigmas.len(),
                    sigmas.last()
                ));
            }
            if let Some(pair) = sigmas.windows(2).find(|p| p[0] <= p[1]) {
                return Err(format!("sigmas not descending at {pair:?}"));
            }
        }
        if let Inner::Ddim(ddim) = &s.inner {
            let alpha = |t: f64| {
                s.schedule()
                    .alpha_cumprod(t as i64)
                    .map(f64::from)
                    .map_err(|e| e.to_string())
            };
            for (i, &(_, prev)) in ddim.step_alphas().iter().enumerate() {
                let want = match t.get(i + 1) {
                    Some(&next) => alpha(next)?,
                    None => alpha(0.0)?, // the final ᾱ: ᾱ₀ without set_alpha_to_one
                };
                if prev != want {
                    return Err(format!(
                        "DDIM step {i} from {} goes to ᾱ = {prev}, not the next timestep's {want}",
                        t[i]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Issue 16: with "trailing" spacing 61 steps (also 103, 121, …) ran 62, the last at
    /// timestep −1. Every scheduler × spacing × step count from 1 to 1000 now runs exactly
    /// the steps asked for, on training timesteps (or refuses, see `refused`).
    #[test]
    fn every_step_count_gives_that_many_training_timesteps() {
        let mut failures = Vec::new();
        for spacing in TimestepSpacing::ALL {
            let config = sd_config(spacing);
            for kind in SchedulerKind::ALL {
                // Karras sigmas ignore the spacing (and cost most here): one spacing suffices.
                if kind == SchedulerKind::DpmPp2mKarras && spacing != TimestepSpacing::Leading {
                    continue;
                }
                let mut scheduler = Scheduler::new(kind, &config).unwrap();
                for steps in 1..=1000 {
                    let what = format!("{kind}, {} spacing, {steps} steps", spacing.name());
                    match (
                        scheduler.set_timesteps(steps),
                        refused(kind, spacing, steps),
                    ) {
                        (Ok(()), false) => {
                            if let Err(e) = check_schedule(&scheduler, steps) {
                                failures.push(format!("{what}: {e}"));
                            }
                        }
                        (Err(_), true) => {}
                        (Ok(()), true) => {
                            failures.push(format!("{what}: runs; expected a refusal"))
                        }
                        (Err(e), false) => failures.push(format!("{what}: refused: {e}")),
                    }
                }
            }
        }
        let shown = failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            failures.is_empty(),
            "{} failures, the first:\n{shown}",
            failures.len()
        );
    }
}
