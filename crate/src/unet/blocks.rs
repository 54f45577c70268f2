//! The UNet's down, mid and up blocks (`diffusers/models/unets/unet_2d_blocks.py`):
//! `CrossAttnDownBlock2D`, `DownBlock2D`, `UNetMidBlock2DCrossAttn`, `UpBlock2D` and
//! `CrossAttnUpBlock2D`, with diffusers' skip-connection bookkeeping.
//!
//! Skips: every down block hands back each of its resnet (+ attention) outputs and, when it
//! downsamples, the downsampled map; the UNet keeps them on one stack that starts with
//! `conv_in`'s output. Up blocks have `layers_per_block + 1` resnets, and each resnet first
//! concatenates the most recent skip (popped from the stack) onto its input along channels —
//! the same order as diffusers' `res_hidden_states_tuple[-1]` slicing.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::Error;
use crate::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::weights::VarBuilder;

use super::transformer::Transformer2DModel;

/// What every block shares from the config.
#[derive(Clone, Debug)]
pub struct BlockSettings {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub cross_attention_dim: usize,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
}

impl BlockSettings {
    fn resnet(&self, vb: &VarBuilder, c_in: usize, c_out: usize) -> Result<ResnetBlock2D, Error> {
        ResnetBlock2D::load(
            vb,
            c_in,
            c_out,
            Some(self.temb_channels),
            self.groups,
            self.eps,
        )
    }

    fn transformer(
        &self,
        vb: &VarBuilder,
        channels: usize,
        heads: usize,
    ) -> Result<Transformer2DModel, Error> {
        Transformer2DModel::load(
            vb,
            channels,
            heads,
            self.cross_attention_dim,
            self.groups,
            self.use_linear_projection,
            self.upcast_attention,
        )
    }
}

/// The shape of one down block, as `UNet2DConditionModel.__init__` computes it.
#[derive(Clone, Debug)]
pub struct DownBlockShape {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_layers: usize,
    /// Attention heads, or `None` for `DownBlock2D`.
    pub heads: Option<usize>,
    /// All blocks but the last downsample.
    pub add_downsample: bool,
    pub downsample_padding: usize,
}

/// `CrossAttnDownBlock2D` (with `heads`) or `DownBlock2D` (without): resnets, each followed
/// by a transformer when attending, then an optional stride-2 conv.
#[derive(Module, Debug)]
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    /// Empty for `DownBlock2D`.
    pub attentions: Vec<Transformer2DModel>,
    pub downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn load(vb: &VarBuilder, shape: &DownBlockShape, s: &BlockSettings) -> Result<Self, Error> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..shape.num_layers {
            let c_in = if i == 0 {
                shape.in_channels
            } else {
                shape.out_channels
            };
            resnets.push(s.resnet(&vb.pp("resnets").pp(i), c_in, shape.out_channels)?);
            if let Some(heads) = shape.heads {
                attentions.push(s.transformer(
                    &vb.pp("attentions").pp(i),
                    shape.out_channels,
                    heads,
                )?);
            }
        }
        let downsampler = if shape.add_downsample {
            Some(Downsample2D::load(
                &vb.pp("downsamplers").pp(0),
                shape.out_channels,
                shape.downsample_padding,
            )?)
        } else {
            None
        };
        Ok(DownBlock {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// `x: [b, c_in, h, w]` -> (`[b, c_out, h', w']`, the skips it adds, in order).
    pub fn forward(
        &self,
        x: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
    ) -> (Tensor<4>, Vec<Tensor<4>>) {
        let mut x = x;
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(temb.clone())); // [b, c_out, h, w]
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context.clone()); // [b, c_out, h, w]
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(x); // [b, c_out, h/2, w/2]
            skips.push(x.clone());
        }
        (x, skips)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet, all at the deepest width.
#[derive(Module, Debug)]
pub struct UNetMidBlock2DCrossAttn {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    /// `mid_block_scale_factor`: diffusers divides each resnet's `shortcut + h` by it. Our
    /// shared `ResnetBlock2D` returns `shortcut + h`, so dividing its output is the same.
    pub output_scale_factor: f64,
}

impl UNetMidBlock2DCrossAttn {
    pub fn load(
        vb: &VarBuilder,
        channels: usize,
        heads: usize,
        output_scale_factor: f64,
        s: &BlockSettings,
    ) -> Result<Self, Error> {
        Ok(UNetMidBlock2DCrossAttn {
            resnets: vec![
                s.resnet(&vb.pp("resnets").pp(0), channels, channels)?,
                s.resnet(&vb.pp("resnets").pp(1), channels, channels)?,
            ],
            attentions: vec![s.transformer(&vb.pp("attentions").pp(0), channels, heads)?],
            output_scale_factor,
        })
    }

    fn resnet(&self, i: usize, x: Tensor<4>, temb: &Tensor<2>) -> Tensor<4> {
        let y = self.resnets[i].forward(x, Some(temb.clone()));
        if self.output_scale_factor == 1.0 {
            y
        } else {
            y.div_scalar(self.output_scale_factor)
        }
    }

    /// `[b, c, h, w] -> [b, c, h, w]`
    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>, context: &Tensor<3>) -> Tensor<4> {
        let x = self.resnet(0, x, temb); // [b, c, h, w]
        let x = self.attentions[0].forward(x, context.clone()); // [b, c, h, w]
        self.resnet(1, x, temb) // [b, c, h, w]
    }
}

/// The shape of one up block, as `UNet2DConditionModel.__init__` computes it.
#[derive(Clone, Debug)]
pub struct UpBlockShape {
    /// The channels of the skip that the last resnet takes (the matching down block's input).
    pub in_channels: usize,
    /// The channels coming from the block below (the previous up block, or the mid block).
    pub prev_output_channels: usize,
    pub out_channels: usize,
    /// `layers_per_block + 1`.
    pub num_layers: usize,
    /// Attention heads, or `None` for `UpBlock2D`.
    pub heads: Option<usize>,
    /// All blocks but the last upsample.
    pub add_upsample: bool,
}

/// `CrossAttnUpBlock2D` (with `heads`) or `UpBlock2D` (without): resnets on the input
/// concatenated with a skip, each followed by a transformer when attending, then an
/// optional ×2 upsampling.
#[derive(Module, Debug)]
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    /// Empty for `UpBlock2D`.
    pub attentions: Vec<Transformer2DModel>,
    pub upsampler: Option<Upsample2D>,
}

impl UpBlock {
    pub fn load(vb: &VarBuilder, shape: &UpBlockShape, s: &BlockSettings) -> Result<Self, Error> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..shape.num_layers {
            // The last resnet takes the skip from before the matching down block's first
            // resnet; the others take skips at this block's own width.
            let skip = if i == shape.num_layers - 1 {
                shape.in_channels
            } else {
                shape.out_channels
            };
            let c_in = if i == 0 {
                shape.prev_output_channels
            } else {
                shape.out_channels
            };
            resnets.push(s.resnet(&vb.pp("resnets").pp(i), c_in + skip, shape.out_channels)?);
            if let Some(heads) = shape.heads {
                attentions.push(s.transformer(
                    &vb.pp("attentions").pp(i),
                    shape.out_channels,
                    heads,
                )?);
            }
        }
        let upsampler = if shape.add_upsample {
            Some(Upsample2D::load(
                &vb.pp("upsamplers").pp(0),
                shape.out_channels,
            )?)
        } else {
            None
        };
        Ok(UpBlock {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// `x: [b, c_prev, h, w]`, popping one skip per resnet from `skips` ->
    /// `[b, c_out, h', w']` with `h' × w'` the size of the next skip left in `skips` (2h × 2w
    /// for sizes that are multiples of the UNet's unit), or `[b, c_out, h, w]` without upsampler.
    pub fn forward(
        &self,
        x: Tensor<4>,
        skips: &mut Vec<Tensor<4>>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
    ) -> Tensor<4> {
        let mut x = x;
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("the down blocks left one skip per up-block resnet");
            x = Tensor::cat(vec![x, skip], 1); // [b, c + c_skip, h, w]
            x = resnet.forward(x, Some(temb.clone())); // [b, c_out, h, w]
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context.clone()); // [b, c_out, h, w]
            }
        }
        // Upsample to the next skip's size, as diffusers' `forward_upsample_size` does: 2h×2w
        // when the sample is a multiple of the UNet's unit, one less where a side was odd.
        match (&self.upsampler, skips.last()) {
            (Some(up), Some(next)) => {
                let [_, _, h, w] = next.dims();
                up.forward_to(x, [h, w]) // [b, c_out, h_skip, w_skip]
            }
            (Some(up), None) => up.forward(x), // [b, c_out, 2h, 2w]
            (None, _) => x,
        }
    }
}
