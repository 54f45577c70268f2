//! The timestep embedding: diffusers' `Timesteps` (sinusoidal, `get_timestep_embedding`) and
//! `TimestepEmbedding` (two linears around a SiLU, plus LCM's `cond_proj`), from
//! `diffusers/models/embeddings.py`.

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{Tensor, TensorData};

use crate::Error;
use crate::nn::Linear;
use crate::weights::VarBuilder;

/// diffusers' `get_timestep_embedding` with `max_period = 10000`, `scale = 1`:
/// `[sin(t·f), cos(t·f)]` (or `[cos, sin]` with `flip_sin_to_cos`), where
/// `f_i = exp(-ln(10000) · i / (dim/2 - downscale_freq_shift))`.
#[derive(Module, Debug)]
pub struct Timesteps {
    pub num_channels: usize,
    pub flip_sin_to_cos: bool,
    pub downscale_freq_shift: f64,
}

impl Timesteps {
    pub fn new(num_channels: usize, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Self {
        Timesteps {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
        }
    }

    /// The frequencies, computed on the host in f32 step by step as PyTorch does (f32
    /// `arange` times the f32-rounded `-ln(10000)`, divided, then `exp`), so the arguments
    /// of sin / cos — up to ~1000 radians — match diffusers' to the last bit or so.
    fn frequencies(&self) -> Vec<f32> {
        let half = self.num_channels / 2;
        let log_max = -(10000f64.ln()) as f32;
        let denom = (half as f64 - self.downscale_freq_shift) as f32;
        (0..half)
            .map(|i| ((i as f32 * log_max) / denom).exp())
            .collect()
    }

    /// `[b]` float timesteps -> `[b, num_channels]`
    pub fn forward(&self, timesteps: Tensor<1>) -> Tensor<2> {
        let [b] = timesteps.dims();
        let half = self.num_channels / 2;
        let device = timesteps.device();
        let freqs = Tensor::<1>::from_data(TensorData::new(self.frequencies(), [half]), &device);
        let args = timesteps.reshape([b, 1]) * freqs.reshape([1, half]); // [b, half]
        let (sin, cos) = sin_cos(args); // [b, half] each
        let mut parts = if self.flip_sin_to_cos {
            vec![cos, sin]
        } else {
            vec![sin, cos]
        };
        if self.num_channels % 2 == 1 {
            // diffusers pads an odd width with one zero column.
            parts.push(Tensor::zeros([b, 1], &device));
        }
        Tensor::cat(parts, 1) // [b, num_channels]
    }
}

/// `(sin x, cos x)`, accurate to a few 1e-7 for `|x|` up to ~12 000, from additions and
/// multiplications only.
///
/// Why not the backend's `sin` / `cos`: GPU sin / cos need only be accurate to 2^-11 (Vulkan)
/// and are implementation-defined in WebGPU. Chromium's SwiftShader adapter is off by ~2e-4
/// even for small arguments, which moved the SD 2 fixture's output by 1.6e-4 of its scale
/// (the golden tolerance is 1e-4); and timestep arguments reach ~1000 radians. Here `x` is
/// reduced to `[-π, π]` exactly (Cody–Waite: 2π split in three parts, the first two with 13
/// significant bits so `k·C1` and `k·C2` are exact for `|k| < 2^11`), then Taylor
/// polynomials to degree 17 / 18 (truncation below 3e-8 on `[-π, π]`) give sin and cos.
pub fn sin_cos<const D: usize>(x: Tensor<D>) -> (Tensor<D>, Tensor<D>) {
    const INV_TWO_PI: f32 = 0.159_154_94;
    const C1: f32 = 6.283_203_125; // 6434 / 1024
    const C2: f32 = -1.781_806_349_754_333_5e-5; // 13 significant bits
    const C3: f32 = 2.430_837_8e-10; // 2π - C1 - C2, rounded
    let k = x.clone().mul_scalar(INV_TWO_PI).round(); // whole turns
    // Left to right: each subtraction is exact or rounds only a small value.
    let r = x - k.clone().mul_scalar(C1) - k.clone().mul_scalar(C2) - k.mul_scalar(C3); // in [-π, π]
    let u = r.clone().square();
    // Horner in u = r²: sin r = r·Σ (-u)^i/(2i+1)!, cos r = Σ (-u)^i/(2i)!.
    let horner = |coefficients: &[f64]| {
        let (last, rest) = coefficients.split_last().unwrap();
        rest.iter()
            .rev()
            .fold(u.clone().mul_scalar(*last), |acc, c| {
                (acc.add_scalar(*c)).mul(u.clone())
            })
    };
    let fact = |n: u32| (1..=n).map(f64::from).product::<f64>();
    let sin_coeffs: Vec<f64> = (1..=8)
        .map(|i| (-1f64).powi(i) / fact(2 * i as u32 + 1))
        .collect();
    let cos_coeffs: Vec<f64> = (1..=9)
        .map(|i| (-1f64).powi(i) / fact(2 * i as u32))
        .collect();
    let sin = r.clone() + r * horner(&sin_coeffs); // r·(1 + u·(…))
    let cos = horner(&cos_coeffs).add_scalar(1.0); // 1 + u·(…)
    (sin, cos)
}

/// diffusers' `TimestepEmbedding` with `act_fn = "silu"` and no post activation:
/// `linear_2(silu(linear_1(sample + cond_proj(condition))))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
    /// LCM's guidance embedding (`time_cond_proj_dim`): `timestep_cond` projected to the
    /// sinusoidal width, without bias, and added to it.
    pub cond_proj: Option<Linear>,
}

impl TimestepEmbedding {
    pub fn load(
        vb: &VarBuilder,
        in_channels: usize,
        time_embed_dim: usize,
        cond_proj_dim: Option<usize>,
    ) -> Result<Self, Error> {
        let cond_proj = match cond_proj_dim {
            Some(d) => Some(Linear::load(&vb.pp("cond_proj"), d, in_channels, false)?),
            None => None,
        };
        Ok(TimestepEmbedding {
            linear_1: Linear::load(&vb.pp("linear_1"), in_channels, time_embed_dim, true)?,
            linear_2: Linear::load(&vb.pp("linear_2"), time_embed_dim, time_embed_dim, true)?,
            cond_proj,
        })
    }

    /// `sample: [b, in_channels]`, `condition: [b, cond_proj_dim]` -> `[b, time_embed_dim]`.
    /// As in diffusers, a missing `condition` skips `cond_proj`; a condition for a model
    /// without `cond_proj` is a caller bug and panics.
    pub fn forward(&self, sample: Tensor<2>, condition: Option<Tensor<2>>) -> Tensor<2> {
        let sample = match (condition, &self.cond_proj) {
            (Some(c), Some(proj)) => sample + proj.forward(c), // [b, in_channels]
            (Some(_), None) => panic!(
                "timestep_cond was given, but this UNet has no time_cond_proj_dim (not an LCM model)"
            ),
            (None, _) => sample,
        };
        let h = silu(self.linear_1.forward(sample)); // [b, time_embed_dim]
        self.linear_2.forward(h) // [b, time_embed_dim]
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// Against f64 sin / cos of the same f32 arguments, over the timestep range, on the CPU
    /// and natively on the GPU.
    fn check_sin_cos(device: &burn::tensor::Device) {
        let x: Vec<f32> = (0..4001)
            .map(|i| (i as f32 - 2000.0) * 0.5003)
            .chain([0.0, 3.1415927, -3.1415927, 999.0, 1e-3])
            .collect();
        let n = x.len();
        let (sin, cos) = sin_cos(Tensor::<1>::from_data(
            TensorData::new(x.clone(), [n]),
            device,
        ));
        let sin = pollster::block_on(crate::read_f32(sin)).unwrap();
        let cos = pollster::block_on(crate::read_f32(cos)).unwrap();
        let mut worst = 0f64;
        for i in 0..n {
            let a = x[i] as f64;
            worst = worst
                .max((sin[i] as f64 - a.sin()).abs())
                .max((cos[i] as f64 - a.cos()).abs());
        }
        assert!(worst < 1e-6, "sin_cos max error {worst:e}");
    }

    #[test]
    fn sin_cos_is_accurate_on_cpu() {
        check_sin_cos(&crate::device::cpu());
    }

    #[test]
    fn sin_cos_is_accurate_on_wgpu() {
        check_sin_cos(&pollster::block_on(crate::device::gpu()).unwrap());
    }

    /// The frequencies follow diffusers: `exp(-ln(10000)·i / (half - shift))`.
    #[test]
    fn frequencies_match_diffusers() {
        let f = Timesteps::new(8, true, 1.0).frequencies();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0);
        let want = (-(10000f64.ln()) * 3.0 / 3.0).exp(); // i = 3, half - shift = 3
        assert!((f[3] as f64 - want).abs() < 1e-9, "{} vs {want}", f[3]);
    }
}
