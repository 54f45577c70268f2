//! The UNet's attention blocks: diffusers' `Transformer2DModel` (continuous input) with its
//! `BasicTransformerBlock`s, `Attention` and the GEGLU `FeedForward`
//! (`diffusers/models/transformers/transformer_2d.py`, `models/attention.py`,
//! `models/attention_processor.py`), as SD's UNet configures them: layer norms, no attention
//! bias, GEGLU, self-attention then cross-attention to the text.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::Error;
use crate::kernels;
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::ops;
use crate::weights::VarBuilder;

/// diffusers' `Attention` as SD uses it: `to_q`, `to_k`, `to_v` without bias, `to_out.0`
/// with bias, `heads` heads of `dim_head`, scale `1/√dim_head`.
#[derive(Module, Debug)]
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
    /// diffusers' `upcast_attention` (SD 2.x): compute `q kᵀ` and the softmax in f32 when
    /// the model runs in f16. We compute in f32 always, so it changes nothing today; it is
    /// kept so a future f16 path knows where it must not downcast.
    pub upcast_attention: bool,
}

impl Attention {
    /// `context_dim`: the width of what the keys and values come from (`query_dim` for
    /// self-attention, `cross_attention_dim` for cross-attention).
    pub fn load(
        vb: &VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        dim_head: usize,
        upcast_attention: bool,
    ) -> Result<Self, Error> {
        let inner = heads * dim_head;
        Ok(Attention {
            to_q: Linear::load(&vb.pp("to_q"), query_dim, inner, false)?,
            to_k: Linear::load(&vb.pp("to_k"), context_dim, inner, false)?,
            to_v: Linear::load(&vb.pp("to_v"), context_dim, inner, false)?,
            to_out: Linear::load(&vb.pp("to_out").pp(0), inner, query_dim, true)?,
            heads,
            upcast_attention,
        })
    }

    /// `[b, n, inner] -> [b, heads, n, dim_head]`
    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, inner] = x.dims();
        x.reshape([b, n, self.heads, inner / self.heads])
            .swap_dims(1, 2)
    }

    /// `x: [b, n, query_dim]`, `context: [b, m, context_dim]` (None: self-attention)
    /// -> `[b, n, query_dim]`
    pub fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>) -> Tensor<3> {
        self.forward_add(x, context, None)
    }

    /// [`Self::forward`] `+ residual` (`[b, n, query_dim]`), added as `to_out` writes on a GPU.
    pub fn forward_add(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        residual: Option<Tensor<3>>,
    ) -> Tensor<3> {
        let [b, n, _] = x.dims();
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.to_q.forward(x); // [b, n, inner]
        let k = self.to_k.forward(context.clone()); // [b, m, inner]
        let v = self.to_v.forward(context); // [b, m, inner]
        let out = if kernels::flash_attention_supported(&q, &k, self.heads) {
            kernels::flash_attention(q, k, v, self.heads) // [b, n, inner]
        } else {
            let (q, k, v) = (
                self.split_heads(q),
                self.split_heads(k),
                self.split_heads(v),
            );
            let out = ops::sliced_attention(q, k, v); // [b, h, n, d]
            let [_, h, _, d] = out.dims();
            out.swap_dims(1, 2).reshape([b, n, h * d]) // [b, n, inner]
        };
        self.to_out.forward_add(out, residual) // [b, n, query_dim]
    }
}

/// diffusers' `FeedForward` with `activation_fn = "geglu"`: `net.0` is GEGLU (`proj` to
/// twice the inner width, split into value and gate, `value * gelu(gate)`), `net.2` the
/// output linear (`net.1` is dropout).
#[derive(Module, Debug)]
pub struct FeedForward {
    pub proj: Linear,
    pub out: Linear,
}

impl FeedForward {
    pub fn load(vb: &VarBuilder, dim: usize) -> Result<Self, Error> {
        let inner = 4 * dim; // diffusers' mult = 4
        Ok(FeedForward {
            proj: Linear::load(&vb.pp("net").pp(0).pp("proj"), dim, 2 * inner, true)?,
            out: Linear::load(&vb.pp("net").pp(2), inner, dim, true)?,
        })
    }

    /// `[b, n, dim] -> [b, n, dim]`, `+ residual` when given (added as `net.2` writes).
    pub fn forward(&self, x: Tensor<3>, residual: Option<Tensor<3>>) -> Tensor<3> {
        // proj to [b, n, 2·inner], chunk(2, dim=-1): the value, then the gate.
        let h = self.proj.forward_geglu(x); // [b, n, inner]
        self.out.forward_add(h, residual) // [b, n, inner] -> [b, n, dim]
    }
}

/// diffusers' `BasicTransformerBlock` with `norm_type = "layer_norm"` (eps 1e-5): pre-norm
/// self-attention, cross-attention to the text, and the GEGLU feed-forward, each residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn load(
        vb: &VarBuilder,
        dim: usize,
        heads: usize,
        dim_head: usize,
        cross_attention_dim: usize,
        upcast_attention: bool,
    ) -> Result<Self, Error> {
        // Transformer2DModel does not pass the UNet's norm_eps down: its default 1e-5 applies.
        let eps = 1e-5;
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(&vb.pp("norm1"), dim, eps)?,
            attn1: Attention::load(&vb.pp("attn1"), dim, dim, heads, dim_head, upcast_attention)?,
            norm2: LayerNorm::load(&vb.pp("norm2"), dim, eps)?,
            attn2: Attention::load(
                &vb.pp("attn2"),
                dim,
                cross_attention_dim,
                heads,
                dim_head,
                upcast_attention,
            )?,
            norm3: LayerNorm::load(&vb.pp("norm3"), dim, eps)?,
            ff: FeedForward::load(&vb.pp("ff"), dim)?,
        })
    }

    /// `x: [b, n, dim]`, `context: [b, m, cross_attention_dim]` -> `[b, n, dim]`
    pub fn forward(&self, x: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let h = self.norm1.forward(x.clone());
        let x = self.attn1.forward_add(h, None, Some(x)); // [b, n, dim]
        let h = self.norm2.forward(x.clone());
        let x = self.attn2.forward_add(h, Some(context), Some(x)); // [b, n, dim]
        self.ff.forward(self.norm3.forward(x.clone()), Some(x)) // [b, n, dim]
    }
}

/// `proj_in` / `proj_out`: a 1×1 conv on the feature map (SD 1.x) or a linear on the tokens
/// (`use_linear_projection`, SD 2.x). Same arithmetic, different weight layout and order.
#[derive(Module, Debug)]
pub enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn load(vb: &VarBuilder, c_in: usize, c_out: usize, linear: bool) -> Result<Self, Error> {
        Ok(if linear {
            Projection::Linear(Linear::load(vb, c_in, c_out, true)?)
        } else {
            Projection::Conv(Conv2d::load(vb, c_in, c_out, 1, 1, 0)?)
        })
    }
}

/// diffusers' `Transformer2DModel` for continuous (feature map) input: GroupNorm (eps 1e-6)
/// → `proj_in` → tokens → transformer blocks → `proj_out` → back to a map, plus the input.
#[derive(Module, Debug)]
pub struct Transformer2DModel {
    pub norm: GroupNorm,
    pub proj_in: Projection,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Projection,
}

impl Transformer2DModel {
    /// `heads` heads of `channels / heads` each (diffusers' `out_channels // num_attention_heads`,
    /// so the inner width is `heads · (channels / heads)`, which may be below `channels`).
    pub fn load(
        vb: &VarBuilder,
        channels: usize,
        heads: usize,
        cross_attention_dim: usize,
        groups: usize,
        use_linear_projection: bool,
        upcast_attention: bool,
    ) -> Result<Self, Error> {
        if heads == 0 || heads > channels {
            return Err(Error::BadConfig(format!(
                "unet: attention_head_dim = {heads} heads does not fit a block of {channels} channels"
            )));
        }
        let dim_head = channels / heads;
        let inner = heads * dim_head;
        let block = BasicTransformerBlock::load(
            &vb.pp("transformer_blocks").pp(0),
            inner,
            heads,
            dim_head,
            cross_attention_dim,
            upcast_attention,
        )?;
        Ok(Transformer2DModel {
            norm: GroupNorm::load(&vb.pp("norm"), groups, channels, 1e-6)?,
            proj_in: Projection::load(&vb.pp("proj_in"), channels, inner, use_linear_projection)?,
            // transformer_layers_per_block = 1 (the config refuses other values).
            transformer_blocks: vec![block],
            proj_out: Projection::load(&vb.pp("proj_out"), inner, channels, use_linear_projection)?,
        })
    }

    /// `x: [b, c, h, w]`, `context: [b, m, cross_attention_dim]` -> `[b, c, h, w]`
    pub fn forward(&self, x: Tensor<4>, context: Tensor<3>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x); // [b, c, h, w]
        // [b, ch, h, w] -> [b, h·w, ch]: one token per pixel.
        let to_tokens = |x: Tensor<4>| {
            let ch = x.dims()[1];
            x.permute([0, 2, 3, 1]).reshape([b, h * w, ch])
        };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(x)), // [b, h·w, inner]
            Projection::Linear(linear) => linear.forward(to_tokens(x)), // [b, h·w, inner]
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context.clone()); // [b, h·w, inner]
        }
        let inner = tokens.dims()[2];
        let to_map = |t: Tensor<3>, ch: usize| t.reshape([b, h, w, ch]).permute([0, 3, 1, 2]);
        match &self.proj_out {
            // The residual is added as the conv writes.
            Projection::Conv(conv) => conv.forward_add(to_map(tokens, inner), residual), // [b, c, h, w]
            Projection::Linear(linear) => to_map(linear.forward(tokens), c) + residual, // [b, c, h, w]
        }
    }
}
