//! The host-side numbers every scheduler shares: the training noise schedule (betas,
//! alphas_cumprod, sigmas), the fields that describe it, and NumPy's / torch's arange,
//! linspace, round and interp reproduced to the bit.
//!
//! Why to the bit: diffusers computes these in float32 torch and float64 NumPy, and a
//! one-ulp change in alphas_cumprod near t = 0 moves `1 - alphas_cumprod` (and so the
//! smallest sigma) by ~1e-4 relative. Each function below says which dtype and formula
//! diffusers' code runs into; the goldens check them.

use crate::Error;

use super::config::Fields;

/// What the UNet predicts (`prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    /// The noise ε.
    Epsilon,
    /// v = √ᾱ ε − √(1−ᾱ) x₀ (SD 2.x 768-v).
    VPrediction,
    /// The clean sample x₀ itself.
    Sample,
}

impl PredictionType {
    fn name(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        }
    }
}

/// How inference timesteps are picked from the training ones (`timestep_spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

impl TimestepSpacing {
    pub const ALL: [TimestepSpacing; 3] = [
        TimestepSpacing::Leading,
        TimestepSpacing::Trailing,
        TimestepSpacing::Linspace,
    ];

    /// The config values, as diffusers spells them (also the CLI's and the JS API's).
    pub const NAMES: [&'static str; 3] = [
        Self::ALL[0].name(),
        Self::ALL[1].name(),
        Self::ALL[2].name(),
    ];

    /// The config's spelling.
    pub const fn name(self) -> &'static str {
        match self {
            TimestepSpacing::Leading => "leading",
            TimestepSpacing::Trailing => "trailing",
            TimestepSpacing::Linspace => "linspace",
        }
    }
}

/// The training schedule's betas (`beta_schedule`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BetaSchedule {
    Linear { start: f64, end: f64 },
    ScaledLinear { start: f64, end: f64 },
    SquaredCosCapV2,
}

/// A scheduler class's defaults for the shared fields (its `__init__` signature).
pub(crate) struct Defaults {
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: &'static str,
    pub timestep_spacing: &'static str,
    /// The prediction types the class implements, the default first.
    pub predictions: &'static [PredictionType],
}

/// diffusers' defaults as most schedulers declare them (DDPM's linear betas, "leading").
pub(crate) const DDPM_DEFAULTS: Defaults = Defaults {
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: "linear",
    timestep_spacing: "leading",
    predictions: &[
        PredictionType::Epsilon,
        PredictionType::VPrediction,
        PredictionType::Sample,
    ],
};

/// The fields every scheduler here declares, and the training schedule they give.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    /// ᾱ_t = Π(1 − β), float32 as torch keeps it.
    pub alphas_cumprod: Vec<f32>,
}

impl Schedule {
    /// Reads the shared fields with the class's defaults and builds the training schedule.
    pub(crate) fn read(fields: &Fields, defaults: &Defaults) -> Result<Self, Error> {
        let num_train_timesteps = fields.count("num_train_timesteps", 1000)?;
        if num_train_timesteps < 2 {
            return Err(Error::BadConfig(format!(
                "scheduler: num_train_timesteps = {num_train_timesteps} is not supported by {} (at least 2)",
                fields.class
            )));
        }
        fields.require_null("trained_betas")?;
        let kind = fields.choice(
            "beta_schedule",
            defaults.beta_schedule,
            &["linear", "scaled_linear", "squaredcos_cap_v2"],
        )?;
        let start = fields.finite("beta_start", defaults.beta_start)?;
        let end = fields.finite("beta_end", defaults.beta_end)?;
        let beta_schedule = match kind {
            "linear" => BetaSchedule::Linear { start, end },
            "scaled_linear" => BetaSchedule::ScaledLinear { start, end },
            _ => BetaSchedule::SquaredCosCapV2,
        };
        let names: Vec<&'static str> = defaults.predictions.iter().map(|p| p.name()).collect();
        let prediction = fields.choice("prediction_type", names[0], &names)?;
        let prediction_type = *defaults
            .predictions
            .iter()
            .find(|p| p.name() == prediction)
            .unwrap_or(&PredictionType::Epsilon);
        let timestep_spacing = match fields.choice(
            "timestep_spacing",
            defaults.timestep_spacing,
            &TimestepSpacing::NAMES,
        )? {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            _ => TimestepSpacing::Linspace,
        };
        let steps_offset = fields.count("steps_offset", 0)? as i64;
        let betas = betas(beta_schedule, num_train_timesteps);
        if betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(Error::BadConfig(format!(
                "scheduler: beta_start / beta_end give betas outside [0, 1) in {}",
                fields.class
            )));
        }
        Ok(Schedule {
            num_train_timesteps,
            beta_schedule,
            prediction_type,
            timestep_spacing,
            steps_offset,
            alphas_cumprod: alphas_cumprod(&betas),
        })
    }

    /// `alphas_cumprod[t]`. A timestep outside the training ones is an error, not Python's
    /// negative indexing: diffusers' "trailing" spacing can end at timestep −1 and then reads
    /// ᾱ[N − 1], the pure-noise level, for a sample nearly clean by then; our spacing never
    /// makes −1.
    pub fn alpha_cumprod(&self, t: i64) -> Result<f32, Error> {
        let n = self.alphas_cumprod.len() as i64;
        if (0..n).contains(&t) {
            Ok(self.alphas_cumprod[t as usize])
        } else {
            Err(Error::BadInput(format!(
                "timestep {t} is outside the {n} training timesteps (fewer steps, or a config with steps_offset 0, avoid it)"
            )))
        }
    }

    /// ᾱ "before" timestep 0, where the last step of DDIM, PNDM and LCM goes: 1 when the
    /// config's `set_alpha_to_one` (absent: the class's default, given) is true, else ᾱ₀.
    pub(crate) fn final_alpha_cumprod(
        &self,
        fields: &Fields,
        set_alpha_to_one: bool,
    ) -> Result<f32, Error> {
        Ok(if fields.flag("set_alpha_to_one", set_alpha_to_one)? {
            1.0
        } else {
            self.alphas_cumprod[0]
        })
    }

    /// ᾱ at `t`, or `final_alpha_cumprod` for a step past timestep 0 (`t` < 0).
    pub(crate) fn alpha_cumprod_or_final(
        &self,
        t: i64,
        final_alpha_cumprod: f32,
    ) -> Result<f32, Error> {
        if t >= 0 {
            self.alpha_cumprod(t)
        } else {
            Ok(final_alpha_cumprod)
        }
    }

    /// Checks that every timestep the UNet will see is a training timestep, 0 to N − 1.
    /// "leading" spacing with `steps_offset` 1 passes the end (1000 steps of 1000 reach
    /// timestep 1000): diffusers then fails (DDIM, PNDM) or clamps σ and runs the UNet at
    /// timestep 1000 (Euler, DPM-Solver); we refuse in every case.
    pub(crate) fn check_in_range(&self, timesteps: &[f64], steps: usize) -> Result<(), Error> {
        let last = (self.num_train_timesteps - 1) as f64;
        match timesteps.iter().find(|t| !(0.0..=last).contains(*t)) {
            None => Ok(()),
            Some(t) => Err(Error::BadInput(format!(
                "steps = {steps}: timestep_spacing \"{}\" with steps_offset {} gives timestep {t}, outside the \
                 training timesteps 0 to {last}; pick fewer steps",
                self.timestep_spacing.name(),
                self.steps_offset
            ))),
        }
    }

    /// Checks a step count against the training schedule; every scheduler refuses 0 and
    /// more steps than training timesteps.
    pub fn check_steps(&self, steps: usize) -> Result<(), Error> {
        if steps == 0 || steps > self.num_train_timesteps {
            return Err(Error::BadInput(format!(
                "steps = {steps}: the number of inference steps must be between 1 and num_train_timesteps ({})",
                self.num_train_timesteps
            )));
        }
        Ok(())
    }

    /// The training sigmas √((1 − ᾱ)/ᾱ), float32 as diffusers computes them from torch.
    pub fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }

    /// Timesteps in descending order for DDIM / Euler-type spacing (`set_timesteps` of
    /// DDIMScheduler and EulerDiscreteScheduler): "leading" `k·(N//n) + offset`, "trailing"
    /// `round(arange(N, 0, −N/n)) − 1`, "linspace" `linspace(0, N−1, n)`, rounded to
    /// integers only when `round_linspace`. Always `n` of them: see [`trailing`].
    pub fn spaced_timesteps(&self, steps: usize, round_linspace: bool) -> Vec<f64> {
        let n_train = self.num_train_timesteps as f64;
        match self.timestep_spacing {
            TimestepSpacing::Linspace => {
                let t = np_linspace(0.0, n_train - 1.0, steps, true);
                t.into_iter()
                    .rev()
                    .map(|x| {
                        if round_linspace {
                            x.round_ties_even()
                        } else {
                            x
                        }
                    })
                    .collect()
            }
            TimestepSpacing::Leading => {
                let ratio = (self.num_train_timesteps / steps) as i64;
                (0..steps as i64)
                    .rev()
                    .map(|k| (k * ratio + self.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => trailing(n_train, self.num_train_timesteps, steps),
        }
    }
}

/// "trailing" spacing from training timestep `last` down: `round(arange(last, 0, −N/n)) − 1`,
/// cut to `n` values. For some `n` (61, 103, 121, … of 1000) NumPy's arange has an extra
/// value near 0, which becomes timestep −1: diffusers then runs n + 1 steps, the last at
/// ᾱ[−1] = ᾱ[N − 1] (DDIM, PNDM) or at σ clamped to the smallest (Euler, DPM-Solver). We run
/// the n steps asked for, the same timesteps as diffusers' first n (docs/schedulers.md).
pub fn trailing(last: f64, num_train_timesteps: usize, steps: usize) -> Vec<f64> {
    let ratio = num_train_timesteps as f64 / steps as f64;
    np_arange(last, 0.0, -ratio)
        .into_iter()
        .take(steps)
        .map(|x| x.round_ties_even() - 1.0)
        .collect()
}

impl Schedule {
    /// Euler-type timesteps (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler):
    /// the same spacing as DDIM but float32 and unrounded for "linspace".
    pub fn float_timesteps(&self, steps: usize) -> Vec<f32> {
        self.spaced_timesteps(steps, false)
            .into_iter()
            .map(|t| t as f32)
            .collect()
    }

    /// The training sigmas at (fractional) `timesteps`, by `np.interp` in float64.
    pub fn interp_sigmas(&self, timesteps: &[f32]) -> Vec<f64> {
        let sigmas = self.sigmas();
        timesteps
            .iter()
            .map(|&t| np_interp(t as f64, &sigmas))
            .collect()
    }

    /// Euler-type `init_noise_sigma`: the largest sigma, or √(σ_max² + 1) for "leading"
    /// spacing, float32 as torch.
    pub fn euler_init_noise_sigma(&self, sigmas: &[f32]) -> f64 {
        let max = sigmas.iter().copied().fold(0.0f32, f32::max);
        match self.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }
}

/// diffusers' sigma-based schedulers find their first step with `index_for_timestep`,
/// which takes the second match when the first timestep repeats, and then run past the end
/// of their sigmas; we refuse such schedules rather than run a different one.
pub(crate) fn check_first_timestep_unique(timesteps: &[f64], class: &str) -> Result<(), Error> {
    let Some(&first) = timesteps.first() else {
        return Err(Error::BadInput(format!(
            "{class} with this config leaves no timesteps to sample"
        )));
    };
    if timesteps.iter().skip(1).any(|&t| t == first) {
        return Err(Error::BadInput(format!(
            "{class} with this config repeats its first timestep {first} in {} steps (diffusers fails on it too); \
             pick another step count or scheduler",
            timesteps.len()
        )));
    }
    Ok(())
}

/// β_t in float32: torch.linspace (float32) for "linear", its square for "scaled_linear",
/// and the float64 cosine product cast to float32 for "squaredcos_cap_v2".
pub fn betas(schedule: BetaSchedule, n: usize) -> Vec<f32> {
    match schedule {
        BetaSchedule::Linear { start, end } => torch_linspace_f32(start, end, n),
        BetaSchedule::ScaledLinear { start, end } => {
            torch_linspace_f32(start.sqrt(), end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect()
        }
        BetaSchedule::SquaredCosCapV2 => {
            // betas_for_alpha_bar(n), max_beta 0.999, in Python floats.
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
    }
}

/// `torch.linspace(start, end, n, dtype=float32)` on the CPU: the step is float32, each
/// value is formed in double from the nearer end and rounded once (checked bit for bit
/// against torch 2.x on 1000-point schedules).
pub fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if n == 1 {
        return vec![s];
    }
    let step = (e - s) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                (s as f64 + step as f64 * i as f64) as f32
            } else {
                (e as f64 - step as f64 * (n - 1 - i) as f64) as f32
            }
        })
        .collect()
}

/// `torch.cumprod(1.0 - betas)` in float32: torch's CPU kernel accumulates in double and
/// rounds each partial product (a float32 running product drifts by ~1e-5 over 1000 steps).
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let mut product = 1.0f64;
    betas
        .iter()
        .map(|&b| {
            product *= (1.0f32 - b) as f64;
            product as f32
        })
        .collect()
}

/// `np.linspace(start, stop, num, endpoint)` in float64: `i·step + start`, and the last
/// value exactly `stop` with the endpoint.
pub fn np_linspace(start: f64, stop: f64, num: usize, endpoint: bool) -> Vec<f64> {
    let div = if endpoint { num.saturating_sub(1) } else { num };
    let delta = stop - start;
    let mut y: Vec<f64> = if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            (0..num)
                .map(|i| i as f64 / div as f64 * delta + start)
                .collect()
        } else {
            (0..num).map(|i| i as f64 * step + start).collect()
        }
    } else {
        (0..num).map(|i| i as f64 * delta + start).collect()
    };
    if endpoint && num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `np.arange(start, stop, step)` in float64, to the bit: the length is
/// `ceil((stop − start)/step)` and values from the third on are `start + i·(x₁ − start)`.
/// For some step counts (61, 103, 121, … of 1000) `arange(1000, 0, −1000/n)` has n + 1
/// values because 1000/(1000/n) rounds above n; [`trailing`] drops that extra one.
pub fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if !(len > 0.0) {
        return Vec::new();
    }
    let len = len as usize;
    let mut out = Vec::with_capacity(len);
    out.push(start);
    if len > 1 {
        out.push(start + step);
    }
    if len > 2 {
        let delta = out[1] - start;
        out.extend((2..len).map(|i| start + i as f64 * delta));
    }
    out
}

/// `np.interp(x, arange(len(fp)), fp)` in float64: clamps outside, exact at the points.
pub fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j] as f64;
    }
    let (y0, y1) = (fp[j] as f64, fp[j + 1] as f64);
    let slope = y1 - y0; // (fp[j+1] - fp[j]) / (xp[j+1] - xp[j]) with unit spacing
    let y = slope * (x - j as f64) + y0;
    if y.is_nan() {
        slope * (x - (j + 1) as f64) + y1
    } else {
        y
    }
}

/// Karras et al.'s noise levels (`_convert_to_karras`, ρ = 7), float64 as NumPy.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, steps, true)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// `_sigma_to_t`: the fractional training timestep of `sigma`, interpolating in log sigma.
/// `log_sigmas` is float32 (NumPy's log of the float32 sigmas), so `low − high` is a float32
/// difference, as in diffusers.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // `cumsum(dists >= 0).argmax()`: the last index whose log sigma is <= log_sigma, 0 when
    // there is none; then clipped to len − 2.
    let low_idx = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let (low, high) = (log_sigmas[low_idx], log_sigmas[low_idx + 1]);
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * (low_idx + 1) as f64
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn arange_has_numpys_extra_trailing_step() {
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 61.0).len(), 62);
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 60.0).len(), 60);
        assert_eq!(
            np_arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
    }

    /// The extra arange value is dropped: 61 steps are 61 timesteps, the last 15, not −1.
    #[test]
    fn trailing_gives_exactly_the_steps_asked_for() {
        let t = trailing(1000.0, 1000, 61);
        assert_eq!((t.len(), t[0], t[59], t[60]), (61, 999.0, 32.0, 15.0));
        assert_eq!(
            trailing(1000.0, 1000, 6),
            vec![999.0, 832.0, 666.0, 499.0, 332.0, 166.0]
        );
    }

    #[test]
    fn linspace_and_interp_match_numpy_on_simple_values() {
        assert_eq!(np_linspace(0.0, 999.0, 1, true), vec![0.0]);
        assert_eq!(
            np_linspace(0.0, 999.0, 4, true),
            vec![0.0, 333.0, 666.0, 999.0]
        );
        assert_eq!(
            np_linspace(0.0, 50.0, 4, false),
            vec![0.0, 12.5, 25.0, 37.5]
        );
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(np_interp(-1.0, &fp), 1.0);
        assert_eq!(np_interp(0.5, &fp), 2.0);
        assert_eq!(np_interp(1.25, &fp), 4.0);
        assert_eq!(np_interp(9.0, &fp), 7.0);
    }

    #[test]
    fn round_is_half_to_even_like_numpy() {
        assert_eq!(937.5f64.round_ties_even(), 938.0);
        assert_eq!(62.5f64.round_ties_even(), 62.0);
    }
}
