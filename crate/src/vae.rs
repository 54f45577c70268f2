//! The VAE: diffusers' `AutoencoderKL` (`diffusers/models/autoencoders/autoencoder_kl.py` and
//! `vae.py`), configured by the checkpoint's `vae/config.json`. The encoder maps an image in
//! `[-1, 1]` to the mean of the latent distribution; the decoder maps latents back to an image.
//! Neither applies `scaling_factor`: the pipeline multiplies after encoding and divides before
//! decoding.
//!
//! Browser limit: WebGPU guarantees storage-buffer bindings of only 128 MiB, so no single
//! tensor may exceed that. The mid-block attention at 512×512 attends over 64×64 = 4096
//! tokens; its `[b, 1, 4096, 4096]` f32 score matrix is 64 MiB per batch item — fine for one
//! image, over the limit from two on (and softmax keeps more than one such buffer alive). The
//! attention therefore runs through [`ops::sliced_attention`], which keeps each score slice
//! within 64 MiB (on the CPU, our kernel keeps no score matrix: [`kernels::flash_attention`]).
//! The full-resolution layers are bigger still (`[1, 256, 512, 512]` is 256 MiB): the
//! encoder's down blocks and the decoder's up blocks run on horizontal strips ([`Strips`]) of
//! at most [`STRIP_BYTES`] each, which gives the same result.

use burn::module::Module;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::kernels;
use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::ops;
use crate::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::strips::{STRIP_BYTES, Strips, plan};
use crate::weights::VarBuilder;

/// diffusers hard-codes these for the VAE's resnets, attention and output norms.
const EPS: f64 = 1e-6;

/// `vae/config.json`, with diffusers' field names and defaults. Fields we do not use
/// (`_class_name`, `_diffusers_version`, ...) are ignored; values we do not implement are
/// rejected by [`AutoencoderKLConfig::from_json`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AutoencoderKLConfig {
    #[serde(default = "default_image_channels")]
    pub in_channels: usize,
    #[serde(default = "default_image_channels")]
    pub out_channels: usize,
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: usize,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_latent_channels")]
    pub latent_channels: usize,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    /// The training resolution (an int, or `[h, w]` in some configs); informational only.
    #[serde(default = "default_sample_size")]
    pub sample_size: SampleSize,
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default)]
    pub latents_mean: Option<Vec<f64>>,
    #[serde(default)]
    pub latents_std: Option<Vec<f64>>,
    #[serde(default = "default_true")]
    pub force_upcast: bool,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
}

/// `sample_size` (of the VAE in pixels, of the UNet in latent pixels): diffusers accepts an
/// int or a `[height, width]` pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    Rect(Vec<usize>),
}

impl SampleSize {
    /// `(height, width)`; `None` for a list that is not a pair.
    pub fn height_width(&self) -> Option<(usize, usize)> {
        match self {
            SampleSize::Square(n) => Some((*n, *n)),
            SampleSize::Rect(v) => match v[..] {
                [h, w] => Some((h, w)),
                _ => None,
            },
        }
    }
}

fn default_image_channels() -> usize {
    3
}
fn default_down_block_types() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn default_up_block_types() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn default_block_out_channels() -> Vec<usize> {
    vec![64]
}
fn default_layers_per_block() -> usize {
    1
}
fn default_act_fn() -> String {
    "silu".into()
}
fn default_latent_channels() -> usize {
    4
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_sample_size() -> SampleSize {
    SampleSize::Square(32)
}
fn default_scaling_factor() -> f64 {
    0.18215
}
fn default_true() -> bool {
    true
}

impl AutoencoderKLConfig {
    /// Parses and validates `vae/config.json`. Anything we do not implement is
    /// [`Error::BadConfig`] naming the field.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let config: AutoencoderKLConfig = serde_json::from_str(json)
            .map_err(|e| Error::BadConfig(format!("the VAE's config.json is malformed: {e}")))?;
        // `_class_name` is not a field of the struct; check it from the raw JSON.
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json)
            && let Some(class) = map.get("_class_name")
            && class.as_str() != Some("AutoencoderKL")
        {
            return Err(Error::BadConfig(format!(
                "_class_name = {class} in the VAE's config.json: only AutoencoderKL is supported"
            )));
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |why: String| Err(Error::BadConfig(format!("VAE config: {why}")));
        // diffusers maps both names to SiLU.
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return bad(format!(
                "act_fn = {:?} is not supported (only \"silu\")",
                self.act_fn
            ));
        }
        if self.block_out_channels.is_empty() {
            return bad("block_out_channels is empty".into());
        }
        let blocks = self.block_out_channels.len();
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return bad(format!(
                "down_block_types contains {t:?}: only \"DownEncoderBlock2D\" is supported"
            ));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return bad(format!(
                "up_block_types contains {t:?}: only \"UpDecoderBlock2D\" is supported"
            ));
        }
        if self.down_block_types.len() != blocks {
            return bad(format!(
                "down_block_types has {} entries but block_out_channels has {blocks}",
                self.down_block_types.len()
            ));
        }
        if self.up_block_types.len() != blocks {
            return bad(format!(
                "up_block_types has {} entries but block_out_channels has {blocks}",
                self.up_block_types.len()
            ));
        }
        let g = self.norm_num_groups;
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| g == 0 || c == 0 || c % g != 0)
        {
            return bad(format!(
                "norm_num_groups = {g} does not divide block_out_channels entry {c}"
            ));
        }
        for (name, value) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("layers_per_block", self.layers_per_block),
        ] {
            if value == 0 {
                return bad(format!("{name} = 0"));
            }
        }
        if let Some(shift) = self.shift_factor {
            return bad(format!(
                "shift_factor = {shift} is not supported (only null)"
            ));
        }
        if self.latents_mean.is_some() {
            return bad("latents_mean is not supported (only null)".into());
        }
        if self.latents_std.is_some() {
            return bad("latents_std is not supported (only null)".into());
        }
        if !self.scaling_factor.is_finite() || self.scaling_factor <= 0.0 {
            return bad(format!(
                "scaling_factor = {} must be a positive number",
                self.scaling_factor
            ));
        }
        Ok(())
    }

    /// How much smaller the latents are than the image: 2^(blocks - 1), 8 for SD.
    pub fn downscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// diffusers' `Attention` as the VAE's mid block builds it: group norm, self-attention over
/// the `h × w` pixels as tokens (heads = channels / attention_head_dim, one head for the VAE),
/// output projection, residual connection, `rescale_output_factor` 1.
#[derive(Module, Debug)]
pub struct VaeAttention {
    pub group_norm: GroupNorm,
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
}

impl VaeAttention {
    /// Accepts diffusers' names (`to_q`, `to_k`, `to_v`, `to_out.0`) and those of older VAE
    /// checkpoints (`query`, `key`, `value`, `proj_attn`).
    pub fn load(
        vb: &VarBuilder,
        channels: usize,
        head_dim: usize,
        groups: usize,
    ) -> Result<Self, Error> {
        if head_dim == 0 || channels % head_dim != 0 {
            return Err(Error::BadConfig(format!(
                "VAE attention: head dim {head_dim} does not divide {channels} channels"
            )));
        }
        let legacy = !vb.contains("to_q.weight")? && vb.contains("query.weight")?;
        let [q, k, v, out] = if legacy {
            ["query", "key", "value", "proj_attn"]
        } else {
            ["to_q", "to_k", "to_v", "to_out.0"]
        };
        let linear = |name: &str| Linear::load(&vb.pp(name), channels, channels, true);
        Ok(VaeAttention {
            group_norm: GroupNorm::load(&vb.pp("group_norm"), groups, channels, EPS)?,
            to_q: linear(q)?,
            to_k: linear(k)?,
            to_v: linear(v)?,
            to_out: linear(out)?,
            heads: channels / head_dim,
        })
    }

    /// `[b, c, h, w] -> [b, c, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, hgt, wid] = x.dims();
        let (n, heads) = (hgt * wid, self.heads);
        let d = c / heads;
        let tokens = self
            .group_norm
            .forward(x.clone())
            .reshape([b, c, n])
            .swap_dims(1, 2); // [b, n, c]
        let q = self.to_q.forward(tokens.clone()); // [b, n, c]
        let k = self.to_k.forward(tokens.clone());
        let v = self.to_v.forward(tokens);
        let merged = if kernels::flash_attention_supported(&q, &k, heads) {
            kernels::flash_attention(q, k, v, heads) // [b, n, c]
        } else {
            let split = |t: Tensor<3>| t.reshape([b, n, heads, d]).swap_dims(1, 2); // [b, heads, n, d]
            let attended = ops::sliced_attention(split(q), split(k), split(v)); // [b, heads, n, d]
            attended.swap_dims(1, 2).reshape([b, n, c]) // [b, n, c]
        };
        let out = self
            .to_out
            .forward(merged)
            .swap_dims(1, 2)
            .reshape([b, c, hgt, wid]); // [b, c, h, w]
        out + x // residual; rescale_output_factor 1
    }
}

/// diffusers' `UNetMidBlock2D` without time embedding: resnet, attention (optional), resnet.
#[derive(Module, Debug)]
pub struct MidBlock {
    pub resnet0: ResnetBlock2D,
    pub attention: Option<VaeAttention>,
    pub resnet1: ResnetBlock2D,
}

impl MidBlock {
    fn load(
        vb: &VarBuilder,
        channels: usize,
        groups: usize,
        add_attention: bool,
    ) -> Result<Self, Error> {
        let attention = if add_attention {
            // attention_head_dim = channels: a single head.
            Some(VaeAttention::load(
                &vb.pp("attentions.0"),
                channels,
                channels,
                groups,
            )?)
        } else {
            None
        };
        Ok(MidBlock {
            resnet0: ResnetBlock2D::load(
                &vb.pp("resnets.0"),
                channels,
                channels,
                None,
                groups,
                EPS,
            )?,
            attention,
            resnet1: ResnetBlock2D::load(
                &vb.pp("resnets.1"),
                channels,
                channels,
                None,
                groups,
                EPS,
            )?,
        })
    }

    /// `[b, c, h, w] -> [b, c, h, w]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.resnet0.forward(x, None);
        let x = match &self.attention {
            Some(attention) => attention.forward(x),
            None => x,
        };
        self.resnet1.forward(x, None)
    }
}

/// diffusers' `DownEncoderBlock2D`: resnets, then a stride-2 conv (all but the last block).
#[derive(Module, Debug)]
pub struct DownEncoderBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsampler: Option<Downsample2D>,
}

/// diffusers' `UpDecoderBlock2D`: resnets, then ×2 upsampling (all but the last block).
#[derive(Module, Debug)]
pub struct UpDecoderBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsampler: Option<Upsample2D>,
}

/// diffusers' `Encoder` with `double_z=True`: outputs mean and log-variance stacked on the
/// channel axis.
#[derive(Module, Debug)]
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownEncoderBlock>,
    pub mid_block: MidBlock,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Encoder {
    fn load(vb: &VarBuilder, config: &AutoencoderKLConfig) -> Result<Self, Error> {
        let channels = &config.block_out_channels;
        let groups = config.norm_num_groups;
        let mut down_blocks = Vec::with_capacity(channels.len());
        let mut c_in = channels[0];
        for (i, &c_out) in channels.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let resnets = (0..config.layers_per_block)
                .map(|j| {
                    let c = if j == 0 { c_in } else { c_out };
                    ResnetBlock2D::load(&vb.pp("resnets").pp(j), c, c_out, None, groups, EPS)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let is_last = i + 1 == channels.len();
            // The VAE encoder uses downsample_padding = 0: zero pad right and bottom, then conv.
            let downsampler = if is_last {
                None
            } else {
                Some(Downsample2D::load(&vb.pp("downsamplers.0"), c_out, 0)?)
            };
            down_blocks.push(DownEncoderBlock {
                resnets,
                downsampler,
            });
            c_in = c_out;
        }
        let c_last = *channels
            .last()
            .expect("validated: block_out_channels is not empty");
        Ok(Encoder {
            conv_in: Conv2d::load(&vb.pp("conv_in"), config.in_channels, channels[0], 3, 1, 1)?,
            down_blocks,
            mid_block: MidBlock::load(
                &vb.pp("mid_block"),
                c_last,
                groups,
                config.mid_block_add_attention,
            )?,
            conv_norm_out: GroupNorm::load(&vb.pp("conv_norm_out"), groups, c_last, EPS)?,
            conv_out: Conv2d::load(
                &vb.pp("conv_out"),
                c_last,
                2 * config.latent_channels,
                3,
                1,
                1,
            )?,
        })
    }

    /// `[b, in, H, W] -> [b, 2 * latent, H / f, W / f]`; the down blocks run on strips of at
    /// most `strip_bytes`.
    fn forward(&self, x: Tensor<4>, strip_bytes: usize) -> Tensor<4> {
        let [b, _, rows, w] = x.dims();
        let f = 1 << (self.down_blocks.len() - 1);
        // Bytes per latent row at each level k (scale f / 2^k), input and output channels.
        let mut per_latent_row = 0;
        let mut c_prev = self.conv_in.c_in;
        for (k, block) in self.down_blocks.iter().enumerate() {
            let c = block
                .resnets
                .last()
                .map(|r| r.conv2.c_out)
                .unwrap_or(c_prev);
            let scale = f >> k;
            per_latent_row = per_latent_row.max(b * c.max(c_prev) * scale * scale * (w / f) * 4);
            c_prev = c;
        }
        let latent_rows = plan(rows / f, 1, per_latent_row, strip_bytes);
        let split: Vec<usize> = if rows % f == 0 {
            latent_rows.iter().map(|r| r * f).collect()
        } else {
            vec![rows]
        };
        let mut h = Strips::split(x, &split).conv(&self.conv_in); // [b, c0, H, W] in strips
        for block in &self.down_blocks {
            for resnet in &block.resnets {
                h = h.resnet(resnet); // [b, c_i, H_i, W_i]
            }
            if let Some(down) = &block.downsampler {
                h = h.downsample(down); // [b, c_i, H_i / 2, W_i / 2]
            }
        }
        let h = self.mid_block.forward(h.cat()); // [b, c_last, H / f, W / f]
        let h = self.conv_norm_out.forward_silu(h);
        self.conv_out.forward(h) // [b, 2 * latent, H / f, W / f]
    }
}

/// diffusers' `Decoder` (group-norm variant).
#[derive(Module, Debug)]
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpDecoderBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Decoder {
    fn load(vb: &VarBuilder, config: &AutoencoderKLConfig) -> Result<Self, Error> {
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let groups = config.norm_num_groups;
        let mut up_blocks = Vec::with_capacity(reversed.len());
        let mut c_in = reversed[0];
        for (i, &c_out) in reversed.iter().enumerate() {
            let vb = vb.pp("up_blocks").pp(i);
            let resnets = (0..config.layers_per_block + 1)
                .map(|j| {
                    let c = if j == 0 { c_in } else { c_out };
                    ResnetBlock2D::load(&vb.pp("resnets").pp(j), c, c_out, None, groups, EPS)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let is_last = i + 1 == reversed.len();
            let upsampler = if is_last {
                None
            } else {
                Some(Upsample2D::load(&vb.pp("upsamplers.0"), c_out)?)
            };
            up_blocks.push(UpDecoderBlock { resnets, upsampler });
            c_in = c_out;
        }
        let c_first = config.block_out_channels[0];
        Ok(Decoder {
            conv_in: Conv2d::load(
                &vb.pp("conv_in"),
                config.latent_channels,
                reversed[0],
                3,
                1,
                1,
            )?,
            mid_block: MidBlock::load(
                &vb.pp("mid_block"),
                reversed[0],
                groups,
                config.mid_block_add_attention,
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::load(&vb.pp("conv_norm_out"), groups, c_first, EPS)?,
            conv_out: Conv2d::load(&vb.pp("conv_out"), c_first, config.out_channels, 3, 1, 1)?,
        })
    }

    /// `[b, latent, h, w] -> [b, out, h * f, w * f]`; the up blocks run on strips of at most
    /// `strip_bytes`.
    fn forward(&self, z: Tensor<4>, strip_bytes: usize) -> Tensor<4> {
        let h = self.conv_in.forward(z); // [b, c_last, h, w]
        let h = self.mid_block.forward(h); // [b, c_last, h, w]
        let [b, mut c_prev, rows, w] = h.dims();
        // Bytes per latent row at each level k (scale 2^k), input and output channels.
        let mut per_latent_row = 0;
        for (k, block) in self.up_blocks.iter().enumerate() {
            let c = block
                .resnets
                .last()
                .map(|r| r.conv2.c_out)
                .unwrap_or(c_prev);
            let scale = 1 << k;
            per_latent_row = per_latent_row.max(b * c.max(c_prev) * scale * scale * w * 4);
            if block.upsampler.is_some() {
                per_latent_row = per_latent_row.max(b * c * 4 * scale * scale * w * 4);
            }
            c_prev = c;
        }
        let mut x = Strips::split(h, &plan(rows, 1, per_latent_row, strip_bytes));
        for block in &self.up_blocks {
            for resnet in &block.resnets {
                x = x.resnet(resnet); // [b, c_i, h_i, w_i]
            }
            if let Some(up) = &block.upsampler {
                x = x.upsample(up); // [b, c_i, 2 h_i, 2 w_i]
            }
        }
        let x = x.group_norm(&self.conv_norm_out, true); // [b, c0, h * f, w * f]
        x.conv(&self.conv_out).cat() // [b, out, h * f, w * f]
    }
}

/// diffusers' `AutoencoderKL`.
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quant_conv: Option<Conv2d>,
    pub post_quant_conv: Option<Conv2d>,
    pub latent_channels: usize,
    pub scaling_factor: f64,
}

impl AutoencoderKL {
    /// Builds the VAE from its weights (`encoder.*`, `decoder.*`, `quant_conv.*`,
    /// `post_quant_conv.*`, as in `vae/diffusion_pytorch_model.safetensors`).
    pub fn load(vb: &VarBuilder, config: &AutoencoderKLConfig) -> Result<Self, Error> {
        config.validate()?;
        let latent = config.latent_channels;
        let quant_conv = if config.use_quant_conv {
            Some(Conv2d::load(
                &vb.pp("quant_conv"),
                2 * latent,
                2 * latent,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        let post_quant_conv = if config.use_post_quant_conv {
            Some(Conv2d::load(
                &vb.pp("post_quant_conv"),
                latent,
                latent,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        Ok(AutoencoderKL {
            encoder: Encoder::load(&vb.pp("encoder"), config)?,
            decoder: Decoder::load(&vb.pp("decoder"), config)?,
            quant_conv,
            post_quant_conv,
            latent_channels: latent,
            scaling_factor: config.scaling_factor,
        })
    }

    /// The factor the pipeline multiplies encoded latents by (and divides by before decoding).
    pub fn scaling_factor(&self) -> f64 {
        self.scaling_factor
    }

    /// The latent distribution's parameters: `[b, 3, H, W]` in `[-1, 1]` ->
    /// `[b, 2 * latent, H / f, W / f]`, mean first, then log-variance (unclamped).
    pub fn encode_moments(&self, x: Tensor<4>) -> Tensor<4> {
        self.encode_moments_in_strips(x, STRIP_BYTES)
    }

    /// [`Self::encode_moments`] with full-resolution strips of at most `strip_bytes` (the
    /// default is [`STRIP_BYTES`]); any budget gives the same result.
    pub fn encode_moments_in_strips(&self, x: Tensor<4>, strip_bytes: usize) -> Tensor<4> {
        let h = self.encoder.forward(x, strip_bytes); // [b, 2 * latent, H / f, W / f]
        match &self.quant_conv {
            Some(conv) => conv.forward(h),
            None => h,
        }
    }

    /// The latent distribution's mean: `[b, 3, H, W]` in `[-1, 1]` -> `[b, latent, H / f, W / f]`.
    /// Not multiplied by `scaling_factor`.
    pub fn encode_mean(&self, x: Tensor<4>) -> Tensor<4> {
        self.encode_moments(x).narrow(1, 0, self.latent_channels) // [b, latent, H / f, W / f]
    }

    /// Latents (already divided by `scaling_factor`) -> image, `[b, latent, h, w] ->
    /// [b, 3, h * f, w * f]`, roughly in `[-1, 1]`. A batch is decoded one image at a time so
    /// that buffer sizes do not grow with it (see the module docs).
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        self.decode_in_strips(z, STRIP_BYTES)
    }

    /// [`Self::decode`] with full-resolution strips of at most `strip_bytes` (the default is
    /// [`STRIP_BYTES`]); any budget gives the same result.
    pub fn decode_in_strips(&self, z: Tensor<4>, strip_bytes: usize) -> Tensor<4> {
        let b = z.dims()[0];
        if b > 1 {
            let images = (0..b)
                .map(|i| self.decode_in_strips(z.clone().narrow(0, i, 1), strip_bytes))
                .collect();
            return Tensor::cat(images, 0); // [b, 3, h * f, w * f]
        }
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z), // [1, latent, h, w]
            None => z,
        };
        self.decoder.forward(z, strip_bytes) // [1, 3, h * f, w * f]
    }
}
