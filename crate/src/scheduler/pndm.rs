//! PNDMScheduler (`diffusers/schedulers/scheduling_pndm.py`): pseudo linear multistep
//! (PLMS) on past model outputs. Without `skip_prk_steps` (PNDM's default, so also what
//! `from_config` gives from a DDIM config) it first runs three Runge-Kutta steps of four
//! evaluations each, and the schedule has 9 more entries than steps asked for; SD 1.x's own
//! config skips them.
//!
//! State follows diffusers' step counter, not the step index, so img2img starting midway
//! behaves as in diffusers too.

use burn::tensor::Tensor;

use super::SchedulerKind;
use super::config::{Fields, SchedulerConfig};
use super::sampler::{Sampler, Sequence, lin};
use super::schedule::{DDPM_DEFAULTS, Defaults, PredictionType, Schedule};
use crate::Error;

const DEFAULTS: Defaults = Defaults {
    predictions: &[PredictionType::Epsilon, PredictionType::VPrediction],
    ..DDPM_DEFAULTS
};

#[derive(Clone, Debug)]
pub struct Pndm {
    schedule: Schedule,
    skip_prk_steps: bool,
    final_alpha_cumprod: f32,
    /// `N // steps`: PLMS steps back by it, Runge-Kutta by half of it.
    ratio: i64,
    /// The Runge-Kutta part of the schedule (empty with `skip_prk_steps`).
    prk_timesteps: Vec<i64>,
    timesteps: Vec<f64>,
    // diffusers' state: steps taken, past model outputs, the Runge-Kutta sums.
    counter: usize,
    ets: Vec<Tensor<4>>,
    cur_sample: Option<Tensor<4>>,
    cur_model_output: Option<Tensor<4>>,
    sequence: Sequence,
}

impl Pndm {
    pub fn from_config(config: &SchedulerConfig) -> Result<Self, Error> {
        let fields = Fields::new(config, SchedulerKind::Pndm.class_name());
        let schedule = Schedule::read(&fields, &DEFAULTS)?;
        let skip_prk_steps = fields.flag("skip_prk_steps", false)?;
        let final_alpha_cumprod = schedule.final_alpha_cumprod(&fields, false)?;
        Ok(Pndm {
            schedule,
            skip_prk_steps,
            final_alpha_cumprod,
            ratio: 0,
            prk_timesteps: Vec::new(),
            timesteps: Vec::new(),
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
            cur_model_output: None,
            sequence: Sequence::default(),
        })
    }
}

impl Sampler for Pndm {
    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<(), Error> {
        // PNDM's own `_timesteps` ascend: the DDIM-style spacing, reversed.
        let spaced = self.schedule.spaced_timesteps(steps, true);
        self.schedule.check_in_range(&spaced, steps)?;
        let ascending: Vec<i64> = spaced.iter().rev().map(|&t| t as i64).collect();
        let len = ascending.len();
        let ratio = (self.schedule.num_train_timesteps / steps) as i64;
        let (prk, plms): (Vec<i64>, Vec<i64>) = if self.skip_prk_steps {
            // concat(_t[:-1], _t[-2:-1], _t[-1:])[::-1]: the second-to-last timestep twice
            // (its second use is PLMS's Heun-like correction).
            let mut plms = ascending[..len - 1].to_vec();
            if len >= 2 {
                plms.push(ascending[len - 2]);
            }
            plms.push(ascending[len - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            if len < 4 {
                return Err(Error::BadInput(format!(
                    "steps = {steps}: PNDM with Runge-Kutta warm-up (skip_prk_steps false) needs at least 4 steps (diffusers fails too)"
                )));
            }
            // The last four timesteps and their midpoints, each inner one twice, descending.
            let half = ratio / 2;
            let points: Vec<i64> = ascending[len - 4..]
                .iter()
                .flat_map(|&t| [t, t + half])
                .collect();
            let doubled: Vec<i64> = points[..points.len() - 1]
                .iter()
                .flat_map(|&t| [t, t])
                .collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            let plms = ascending[..len - 3].iter().rev().copied().collect();
            (prk, plms)
        };
        let timesteps: Vec<i64> = prk.iter().chain(&plms).copied().collect();
        for &t in &timesteps {
            self.schedule.alpha_cumprod(t)?;
        }
        self.ratio = ratio;
        self.prk_timesteps = prk;
        self.timesteps = timesteps.into_iter().map(|t| t as f64).collect();
        self.reset();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        _noise: Option<Tensor<4>>,
    ) -> Result<Tensor<4>, Error> {
        self.sequence.enter(step_index, "pndm")?;
        let timestep = self.timesteps[step_index] as i64;
        if self.counter < self.prk_timesteps.len() && !self.skip_prk_steps {
            self.step_prk(model_output, timestep, sample)
        } else {
            self.step_plms(model_output, timestep, sample)
        }
    }

    fn reset(&mut self) {
        self.counter = 0;
        self.ets.clear();
        self.cur_sample = None;
        self.cur_model_output = None;
        self.sequence = Sequence::default();
    }
}

impl Pndm {
    /// One of four Runge-Kutta evaluations: the first three step from the saved sample with
    /// the raw output, the fourth with the weighted sum (1/6, 1/3, 1/3, 1/6).
    fn step_prk(
        &mut self,
        model_output: Tensor<4>,
        timestep: i64,
        sample: Tensor<4>,
    ) -> Result<Tensor<4>, Error> {
        let diff_to_prev = if self.counter % 2 == 1 {
            0
        } else {
            self.ratio / 2
        };
        let prev_timestep = timestep - diff_to_prev;
        let timestep = self.prk_timesteps[self.counter / 4 * 4];
        let add = |sum: Option<Tensor<4>>, weight: f64, x: &Tensor<4>| {
            let term = x.clone().mul_scalar(weight as f32); // [b, c, h, w]
            Some(match sum {
                Some(sum) => sum + term,
                None => term,
            })
        };
        let model_output = match self.counter % 4 {
            0 => {
                self.cur_model_output = add(self.cur_model_output.take(), 1.0 / 6.0, &model_output);
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output
            }
            1 | 2 => {
                self.cur_model_output = add(self.cur_model_output.take(), 1.0 / 3.0, &model_output);
                model_output
            }
            _ => {
                add(self.cur_model_output.take(), 1.0 / 6.0, &model_output).unwrap_or(model_output)
            } // [b, c, h, w]
        };
        let cur_sample = self.cur_sample.clone().unwrap_or(sample);
        let prev = self.prev_sample(cur_sample, timestep, prev_timestep, model_output)?;
        self.counter += 1;
        Ok(prev)
    }

    /// Adams-Bashforth on the stored outputs (orders 1 to 4 as they accumulate); the second
    /// call of a run re-steps from the first sample with the mean of two outputs.
    fn step_plms(
        &mut self,
        model_output: Tensor<4>,
        timestep: i64,
        sample: Tensor<4>,
    ) -> Result<Tensor<4>, Error> {
        let (mut timestep, mut prev_timestep) = (timestep, timestep - self.ratio);
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(model_output.clone());
        } else {
            prev_timestep = timestep;
            timestep += self.ratio;
        }
        let e = &self.ets;
        let n = e.len();
        let (model_output, sample) = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            (model_output, sample)
        } else if n == 1 && self.counter == 1 {
            let first = self.cur_sample.take().unwrap_or(sample);
            (lin(model_output, 0.5, e[0].clone(), 0.5), first) // [b, c, h, w]
        } else if n == 2 {
            (lin(e[1].clone(), 1.5, e[0].clone(), -0.5), sample) // [b, c, h, w]
        } else if n == 3 {
            let sum = lin(e[2].clone(), 23.0 / 12.0, e[1].clone(), -16.0 / 12.0)
                + e[0].clone().mul_scalar(5.0f32 / 12.0); // [b, c, h, w]
            (sum, sample)
        } else {
            let sum = lin(e[3].clone(), 55.0 / 24.0, e[2].clone(), -59.0 / 24.0)
                + lin(e[1].clone(), 37.0 / 24.0, e[0].clone(), -9.0 / 24.0); // [b, c, h, w]
            (sum, sample)
        };
        let prev = self.prev_sample(sample, timestep, prev_timestep, model_output)?;
        self.counter += 1;
        Ok(prev)
    }

    /// PNDM's transfer from `timestep` to `prev_timestep` (formula (9) of the paper).
    fn prev_sample(
        &self,
        sample: Tensor<4>,
        timestep: i64,
        prev_timestep: i64,
        model_output: Tensor<4>,
    ) -> Result<Tensor<4>, Error> {
        let alpha = self.schedule.alpha_cumprod(timestep)? as f64;
        let alpha_prev = self
            .schedule
            .alpha_cumprod_or_final(prev_timestep, self.final_alpha_cumprod)?
            as f64;
        let (beta, beta_prev) = (1.0 - alpha, 1.0 - alpha_prev);
        let sample_coeff = (alpha_prev / alpha).sqrt();
        let denom = alpha * beta_prev.sqrt() + (alpha * beta * alpha_prev).sqrt();
        let k = (alpha_prev - alpha) / denom;
        // x_prev = sample_coeff·x − k·ε, with ε = √ᾱ·v + √(1−ᾱ)·x for v-prediction.
        let (cs, cm) = match self.schedule.prediction_type {
            PredictionType::VPrediction => (sample_coeff - k * beta.sqrt(), -k * alpha.sqrt()),
            _ => (sample_coeff, -k),
        };
        Ok(lin(sample, cs, model_output, cm)) // [b, c, h, w]
    }
}
