//! The timestep embedding: diffusers' `Timesteps` (sinusoidal, `get_timestep_embedding`) and
//! `TimestepEmbedding` (two linears around a SiLU, plus LCM's `cond_proj`), from
//! `diffusers/models/embeddings.py`.

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

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

    /// `b` timesteps (host values, as the scheduler gives them) -> `[b, num_channels]` on
    /// `device`. Computed on the host: the arguments `t·f` in f32 as torch forms them, their
    /// sin and cos in f64 rounded to f32, so one upload replaces some 30 small kernels, and
    /// GPU sin / cos (2^-11 in Vulkan, implementation-defined in WebGPU, off by ~2e-4 on
    /// SwiftShader) never meet arguments of up to ~1000 radians.
    pub fn forward(&self, timesteps: &[f32], device: &Device) -> Tensor<2> {
        let freqs = self.frequencies();
        let mut values = Vec::with_capacity(timesteps.len() * self.num_channels);
        for &t in timesteps {
            let args = freqs.iter().map(|&f| f64::from(t * f));
            let sin = args.clone().map(|a| a.sin() as f32);
            let cos = args.map(|a| a.cos() as f32);
            if self.flip_sin_to_cos {
                values.extend(cos.chain(sin));
            } else {
                values.extend(sin.chain(cos));
            }
            if self.num_channels % 2 == 1 {
                values.push(0.0); // diffusers pads an odd width with one zero column
            }
        }
        let shape = [timesteps.len(), self.num_channels];
        Tensor::from_data(TensorData::new(values, shape), device)
    }
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

    /// `[sin, cos]` (or flipped) of the f32 arguments, to f32 rounding, with the zero column
    /// of an odd width, for timesteps across the schedule's range.
    #[test]
    fn embedding_is_sin_and_cos_of_the_arguments() {
        let device = crate::device::cpu();
        for (channels, flip) in [(8, false), (9, true)] {
            let proj = Timesteps::new(channels, flip, 1.0);
            let timesteps = [0.0, 1.0, 499.5, 999.0];
            let got = proj.forward(&timesteps, &device);
            assert_eq!(got.dims(), [4, channels]);
            let got = pollster::block_on(crate::read_f32(got)).unwrap();
            let freqs = proj.frequencies();
            for (row, &t) in timesteps.iter().enumerate() {
                let row = &got[row * channels..][..channels];
                for (i, &f) in freqs.iter().enumerate() {
                    let a = f64::from(t * f);
                    let (first, second) = if flip {
                        (a.cos(), a.sin())
                    } else {
                        (a.sin(), a.cos())
                    };
                    assert!((f64::from(row[i]) - first).abs() < 1e-7, "t {t}, i {i}");
                    assert!(
                        (f64::from(row[freqs.len() + i]) - second).abs() < 1e-7,
                        "t {t}, i {i}"
                    );
                }
                if channels % 2 == 1 {
                    assert_eq!(row[channels - 1], 0.0);
                }
            }
        }
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
