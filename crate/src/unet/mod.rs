//! Stable Diffusion's denoiser: diffusers' `UNet2DConditionModel`
//! (`diffusers/models/unets/unet_2d_condition.py`) for SD 1.x, 2.x, Turbo, inpainting and
//! LCM checkpoints. Weight names are diffusers' (`unet/diffusion_pytorch_model.safetensors`).
//!
//! - [`config`]: `config.json`, and what we refuse;
//! - [`embeddings`]: the sinusoidal timestep embedding and its MLP;
//! - [`transformer`]: the attention blocks (with sliced attention for the browser);
//! - [`blocks`]: down, mid and up blocks and the skip connections.

pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod transformer;

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

pub use config::UNet2DConditionConfig;

use crate::Error;
use crate::nn::{Conv2d, GroupNorm};
use crate::weights::VarBuilder;
use blocks::{
    BlockSettings, DownBlock, DownBlockShape, UNetMidBlock2DCrossAttn, UpBlock, UpBlockShape,
};
use embeddings::{TimestepEmbedding, Timesteps};

#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    pub conv_in: Conv2d,
    pub time_proj: Timesteps,
    pub time_embedding: TimestepEmbedding,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: UNetMidBlock2DCrossAttn,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    /// The width of `encoder_hidden_states` (from the config), for input checks.
    pub cross_attention_dim: usize,
}

impl UNet2DConditionModel {
    /// Builds the UNet that `config` describes from `vb` (the `unet/` weights, unprefixed).
    /// An unsupported config is [`Error::BadConfig`] naming the field; a missing or
    /// misshapen tensor is [`Error::BadWeights`] naming it.
    pub fn load(vb: &VarBuilder, config: &UNet2DConditionConfig) -> Result<Self, Error> {
        config.validate()?;
        let channels = &config.block_out_channels;
        let n = channels.len();
        let heads = config.heads_per_block();
        let layers = config.layers();
        let time_embed_dim = config.time_embed_dim();
        let settings = BlockSettings {
            temb_channels: time_embed_dim,
            groups: config.groups(),
            eps: config.norm_eps,
            cross_attention_dim: config.cross_dim(),
            use_linear_projection: config.use_linear_projection,
            upcast_attention: config.upcast_attention,
        };

        let mut down_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let shape = DownBlockShape {
                in_channels: if i == 0 { channels[0] } else { channels[i - 1] },
                out_channels: channels[i],
                num_layers: layers,
                heads: config.down_has_attention(i).then_some(heads[i]),
                add_downsample: i + 1 < n,
                downsample_padding: config.downsample_padding,
            };
            down_blocks.push(DownBlock::load(
                &vb.pp("down_blocks").pp(i),
                &shape,
                &settings,
            )?);
        }

        let mid_block = UNetMidBlock2DCrossAttn::load(
            &vb.pp("mid_block"),
            channels[n - 1],
            heads[n - 1],
            config.mid_block_scale_factor,
            &settings,
        )?;

        // Up blocks walk the channel list backwards; heads too (`reversed_num_attention_heads`).
        let mut up_blocks = Vec::with_capacity(n);
        let mut output_channels = channels[n - 1];
        for i in 0..n {
            let prev_output_channels = output_channels;
            output_channels = channels[n - 1 - i];
            let shape = UpBlockShape {
                in_channels: channels[(n - 1).saturating_sub(i + 1)],
                prev_output_channels,
                out_channels: output_channels,
                num_layers: layers + 1,
                heads: config.up_has_attention(i).then_some(heads[n - 1 - i]),
                add_upsample: i + 1 < n,
            };
            up_blocks.push(UpBlock::load(&vb.pp("up_blocks").pp(i), &shape, &settings)?);
        }

        Ok(UNet2DConditionModel {
            conv_in: Conv2d::load(&vb.pp("conv_in"), config.in_channels, channels[0], 3, 1, 1)?,
            time_proj: Timesteps::new(channels[0], config.flip_sin_to_cos, config.freq_shift),
            time_embedding: TimestepEmbedding::load(
                &vb.pp("time_embedding"),
                channels[0],
                time_embed_dim,
                config.time_cond_proj_dim,
            )?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                &vb.pp("conv_norm_out"),
                config.groups(),
                channels[0],
                config.norm_eps,
            )?,
            conv_out: Conv2d::load(
                &vb.pp("conv_out"),
                channels[0],
                config.out_channels,
                3,
                1,
                1,
            )?,
            cross_attention_dim: config.cross_dim(),
        })
    }

    /// Channels of the sample (4, or 9 for inpainting UNets).
    pub fn in_channels(&self) -> usize {
        self.conv_in.c_in
    }

    /// How many times the latents are halved (and brought back) inside the UNet.
    pub fn downsamplings(&self) -> usize {
        self.down_blocks
            .iter()
            .filter(|b| b.downsampler.is_some())
            .count()
    }

    /// Whether a `height × width` latent fits: any positive size. Sides that are not
    /// multiples of `2^downsamplings` are rounded up by each stride-2 downsampling and brought
    /// back to the skip connection's size by the up blocks, as diffusers does.
    pub fn check_latent_size(&self, height: usize, width: usize) -> Result<(), Error> {
        if height == 0 || width == 0 {
            return Err(Error::BadInput(format!(
                "latents of {height}×{width}: each side must be at least 1"
            )));
        }
        Ok(())
    }

    /// Predicts the noise (or v) for `sample: [b, in_channels, h, w]` at `timestep` (`b`
    /// host values, or one, broadcast as diffusers does) given `encoder_hidden_states: [b, 77, cross_dim]`
    /// and, for LCM models, `timestep_cond: [b, time_cond_proj_dim]` -> `[b, out_channels, h, w]`.
    ///
    /// Inputs that do not fit this model (channels, a latent size failing
    /// [`Self::check_latent_size`], batch sizes, a `timestep_cond` without `time_cond_proj_dim`
    /// or of the wrong width) are [`Error::BadInput`].
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timestep: &[f32],
        encoder_hidden_states: Tensor<3>,
        timestep_cond: Option<Tensor<2>>,
    ) -> Result<Tensor<4>, Error> {
        let [b, c, h, w] = sample.dims();
        self.check_inputs(
            c,
            h,
            w,
            b,
            timestep.len(),
            encoder_hidden_states.dims(),
            timestep_cond.as_ref().map(|t| t.dims()),
        )?;
        let timestep = match timestep {
            [t] => vec![*t; b],
            all => all.to_vec(),
        }; // b values
        let t_emb = self.time_proj.forward(&timestep, &sample.device()); // [b, c0]
        let temb = self.time_embedding.forward(t_emb, timestep_cond); // [b, 4·c0]
        // Every resnet projects silu(temb): computed once here, not once per resnet.
        let temb = silu(temb); // [b, 4·c0]
        let context = encoder_hidden_states; // [b, 77, cross_dim]

        let mut x = self.conv_in.forward(sample); // [b, c0, h, w]
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (y, block_skips) = block.forward(x, &temb, &context); // [b, c_i, h/2^i', w/2^i']
            x = y;
            skips.extend(block_skips);
        }
        x = self.mid_block.forward(x, &temb, &context); // [b, c_last, h/2^k, w/2^k]
        for block in &self.up_blocks {
            x = block.forward(x, &mut skips, &temb, &context); // [b, c_j, size of the next skip]
        }
        debug_assert!(skips.is_empty(), "every skip is consumed by an up block");
        let x = self.conv_norm_out.forward_silu(x); // [b, c0, h, w]
        Ok(self.conv_out.forward(x)) // [b, out_channels, h, w]
    }

    #[allow(clippy::too_many_arguments)]
    fn check_inputs(
        &self,
        channels: usize,
        h: usize,
        w: usize,
        batch: usize,
        timesteps: usize,
        context: [usize; 3],
        cond: Option<[usize; 2]>,
    ) -> Result<(), Error> {
        let bad = |s: String| Err(Error::BadInput(s));
        if channels != self.in_channels() {
            return bad(format!(
                "unet: the sample has {channels} channels, this UNet takes in_channels = {}",
                self.in_channels()
            ));
        }
        self.check_latent_size(h, w)?;
        if timesteps != batch && timesteps != 1 {
            return bad(format!(
                "unet: {timesteps} timesteps for a batch of {batch}"
            ));
        }
        if context[0] != batch || context[2] != self.cross_attention_dim {
            return bad(format!(
                "unet: encoder_hidden_states {context:?} do not fit a batch of {batch} with cross_attention_dim = {}",
                self.cross_attention_dim
            ));
        }
        match (cond, self.time_embedding.cond_proj.as_ref()) {
            (Some(_), None) => bad("unet: timestep_cond was given, but this UNet has no time_cond_proj_dim (not an LCM model)".into()),
            (Some([cb, d]), Some(proj)) if (cb != batch && cb != 1) || d != proj.d_in => bad(format!(
                "unet: timestep_cond [{cb}, {d}] does not fit a batch of {batch} with time_cond_proj_dim = {}",
                proj.d_in
            )),
            _ => Ok(()),
        }
    }
}
