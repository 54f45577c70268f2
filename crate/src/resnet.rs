//! The ResNet block and the resampling layers shared by the UNet and the VAE, as diffusers'
//! `ResnetBlock2D`, `Downsample2D` and `Upsample2D` (`diffusers/models/resnet.py`,
//! `downsampling.py`, `upsampling.py`). Weight names are diffusers' state-dict names.

use burn::module::Module;
use burn::tensor::ops::PadMode;
use burn::tensor::{Int, Tensor, TensorData};

use crate::Error;
use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::weights::VarBuilder;

/// diffusers' `ResnetBlock2D` with `time_embedding_norm="default"`, silu, no dropout and
/// `output_scale_factor` 1 (what SD's UNet and VAE use):
/// `x + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(temb))))`, with a 1×1
/// `conv_shortcut` on `x` when the channel count changes.
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// `groups` is used for both norms (diffusers' `groups_out` defaults to `groups`);
    /// `temb_channels` is `None` for the VAE, whose blocks take no time embedding.
    pub fn load(
        vb: &VarBuilder,
        in_channels: usize,
        out_channels: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self, Error> {
        let time_emb_proj = match temb_channels {
            Some(t) => Some(Linear::load(
                &vb.pp("time_emb_proj"),
                t,
                out_channels,
                true,
            )?),
            None => None,
        };
        let conv_shortcut = if in_channels != out_channels {
            Some(Conv2d::load(
                &vb.pp("conv_shortcut"),
                in_channels,
                out_channels,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(&vb.pp("norm1"), groups, in_channels, eps)?,
            conv1: Conv2d::load(&vb.pp("conv1"), in_channels, out_channels, 3, 1, 1)?,
            time_emb_proj,
            norm2: GroupNorm::load(&vb.pp("norm2"), groups, out_channels, eps)?,
            conv2: Conv2d::load(&vb.pp("conv2"), out_channels, out_channels, 3, 1, 1)?,
            conv_shortcut,
        })
    }

    /// `x: [b, c_in, h, w]`, `temb_silu: [b, temb_channels]` -> `[b, c_out, h, w]`, where
    /// `temb_silu` is `silu(temb)` (the same for every resnet of a UNet call, so the caller
    /// computes it once). One given to a block built without `temb_channels` is ignored, as
    /// diffusers does.
    pub fn forward(&self, x: Tensor<4>, temb_silu: Option<Tensor<2>>) -> Tensor<4> {
        let h = self.norm1.forward_silu(x.clone()); // [b, c_in, h, w]
        let mut h = self.conv1.forward(h); // [b, c_out, h, w]
        if let (Some(proj), Some(temb_silu)) = (&self.time_emb_proj, temb_silu) {
            h = proj.forward_add_to_map(temb_silu, h); // + [b, c_out] over h, w
        }
        let h = self.norm2.forward_silu(h); // [b, c_out, h, w]
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x), // [b, c_out, h, w]
            None => x,
        };
        // conv2(h) + shortcut (output_scale_factor = 1), added as conv2 writes.
        self.conv2.forward_add(h, shortcut) // [b, c_out, h, w]
    }
}

/// diffusers' `Downsample2D` with `use_conv=True`: a 3×3 conv with stride 2, named `conv`.
/// With `padding = 0` (the VAE encoder's `downsample_padding`) diffusers first pads the input
/// by one zero on the right and bottom (`F.pad(x, (0, 1, 0, 1))`); the UNet uses padding 1.
#[derive(Module, Debug)]
pub struct Downsample2D {
    pub conv: Conv2d,
    /// The asymmetric (0, 1, 0, 1) zero padding applies (diffusers' `padding == 0`).
    pub pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn load(vb: &VarBuilder, channels: usize, padding: usize) -> Result<Self, Error> {
        Ok(Downsample2D {
            conv: Conv2d::load(&vb.pp("conv"), channels, channels, 3, 2, padding)?,
            pad_right_bottom: padding == 0,
        })
    }

    /// `[b, c, h, w] -> [b, c, h/2, w/2]` (rounded as PyTorch's conv does)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = if self.pad_right_bottom {
            x.pad((0, 1, 0, 1), PadMode::Constant(0.0)) // [b, c, h+1, w+1]
        } else {
            x
        };
        self.conv.forward(x) // [b, c, h/2, w/2]
    }
}

/// diffusers' `Upsample2D` with `use_conv=True`: nearest-neighbour upsampling (×2, or to a
/// given size), then a 3×3 conv named `conv`.
#[derive(Module, Debug)]
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn load(vb: &VarBuilder, channels: usize) -> Result<Self, Error> {
        Ok(Upsample2D {
            conv: Conv2d::load(&vb.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    /// `[b, c, h, w] -> [b, c, 2h, 2w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(upsample_nearest_2x(x)) // [b, c, 2h, 2w]
    }

    /// `[b, c, h, w] -> [b, c, height, width]`: diffusers' `Upsample2D.forward(x, output_size)`,
    /// which the UNet calls with the next skip connection's size so that samples whose sides
    /// are not multiples of its total downsampling come back to their own size.
    pub fn forward_to(&self, x: Tensor<4>, [height, width]: [usize; 2]) -> Tensor<4> {
        self.conv.forward(upsample_nearest(x, [height, width])) // [b, c, height, width]
    }
}

/// Nearest-neighbour upsampling to `[height, width]` as PyTorch's
/// `F.interpolate(x, size=(height, width), mode="nearest")` computes it: output index `i`
/// reads input index `min(floor(i · (in / out)), in - 1)` in f32 (`nearest_idx` in ATen's
/// `UpSample.h`). Exact doubling takes [`upsample_nearest_2x`].
pub fn upsample_nearest(x: Tensor<4>, [height, width]: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if height == 2 * h && width == 2 * w {
        return upsample_nearest_2x(x);
    }
    let device = x.device();
    let pick = |x: Tensor<4>, dim: usize, from: usize, to: usize| {
        if from == to {
            return x;
        }
        let ids: Vec<i64> = nearest_indices(from, to)
            .into_iter()
            .map(|i| i as i64)
            .collect();
        x.select(
            dim,
            Tensor::<1, Int>::from_data(TensorData::new(ids, [to]), &device),
        )
    };
    let x = pick(x, 2, h, height); // [b, c, height, w]
    pick(x, 3, w, width) // [b, c, height, width]
}

/// The input index each of `to` outputs reads in PyTorch's nearest interpolation from `from`
/// inputs (see [`upsample_nearest`]).
fn nearest_indices(from: usize, to: usize) -> Vec<usize> {
    let scale = from as f32 / to as f32;
    (0..to)
        .map(|i| ((i as f32 * scale).floor() as usize).min(from - 1))
        .collect()
}

/// Nearest-neighbour ×2 upsampling (`F.interpolate(x, scale_factor=2.0, mode="nearest")`):
/// every pixel repeated into a 2×2 block. Written as a broadcast rather than with burn's
/// `interpolate` so it is exact and identical on every backend, whatever their coordinate
/// conventions.
pub fn upsample_nearest_2x(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1]) // [b, c, h, 1, w, 1]
        .expand([b, c, h, 2, w, 2]) // [b, c, h, 2, w, 2]
        .reshape([b, c, 2 * h, 2 * w]) // [b, c, 2h, 2w]
}

// Native only: they read tensors back synchronously on the CPU backend.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// PyTorch's `F.interpolate(size=..., mode="nearest")` indices, printed by torch 2.15.
    #[test]
    fn nearest_indices_are_pytorchs() {
        assert_eq!(nearest_indices(2, 3), [0, 0, 1]);
        assert_eq!(nearest_indices(3, 5), [0, 0, 1, 1, 2]);
        assert_eq!(nearest_indices(4, 7), [0, 0, 1, 1, 2, 2, 3]);
        assert_eq!(nearest_indices(3, 6), [0, 0, 1, 1, 2, 2]);
        // The UNet's case, n -> 2n - 1: torch gives i / 2 for every n up to 1024.
        for n in 1..=1024 {
            let want: Vec<usize> = (0..2 * n - 1).map(|i| i / 2).collect();
            assert_eq!(nearest_indices(n, 2 * n - 1), want, "{n} -> {}", 2 * n - 1);
        }
    }

    #[test]
    fn upsample_to_a_size_picks_those_pixels() {
        let device = crate::device::cpu();
        let x = Tensor::<4>::from_data(
            TensorData::new((0..6).map(|v| v as f32).collect::<Vec<_>>(), [1, 1, 2, 3]),
            &device,
        );
        let y = upsample_nearest(x.clone(), [3, 5]); // rows 0 0 1, columns 0 0 1 1 2
        let read = |t: Tensor<4>| pollster::block_on(crate::read_f32(t)).unwrap();
        let got = read(y);
        assert_eq!(
            got,
            [0., 0., 1., 1., 2., 0., 0., 1., 1., 2., 3., 3., 4., 4., 5.]
        );
        assert_eq!(
            read(upsample_nearest(x.clone(), [4, 6])),
            read(upsample_nearest_2x(x))
        );
    }
}
