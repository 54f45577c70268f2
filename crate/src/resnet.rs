//! The ResNet block and the resampling layers shared by the UNet and the VAE, as diffusers'
//! `ResnetBlock2D`, `Downsample2D` and `Upsample2D` (`diffusers/models/resnet.py`,
//! `downsampling.py`, `upsampling.py`). Weight names are diffusers' state-dict names.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::ops::PadMode;

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

    /// `x: [b, c_in, h, w]`, `temb: [b, temb_channels]` -> `[b, c_out, h, w]`. A `temb` given
    /// to a block built without `temb_channels` is ignored, as diffusers does.
    pub fn forward(&self, x: Tensor<4>, temb: Option<Tensor<2>>) -> Tensor<4> {
        let h = silu(self.norm1.forward(x.clone())); // [b, c_in, h, w]
        let mut h = self.conv1.forward(h); // [b, c_out, h, w]
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(silu(temb)); // [b, c_out]
            let [b, c] = t.dims();
            h = h + t.reshape([b, c, 1, 1]); // broadcast over h, w
        }
        let h = silu(self.norm2.forward(h)); // [b, c_out, h, w]
        let h = self.conv2.forward(h); // [b, c_out, h, w]
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x), // [b, c_out, h, w]
            None => x,
        };
        shortcut + h // output_scale_factor = 1
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

/// diffusers' `Upsample2D` with `use_conv=True`: nearest-neighbour ×2, then a 3×3 conv named
/// `conv`.
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
