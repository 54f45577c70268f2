//! CLIP's text encoder (`transformers.CLIPTextModel`), which turns token ids into the
//! embeddings the UNet attends to. SD 1.x uses OpenAI's ViT-L/14 text tower (768 wide,
//! quick_gelu), SD 2.x OpenCLIP's ViT-H/14 (1024 wide, gelu); the config says which.

use burn::module::Module;
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::{Int, Tensor, TensorData};
use serde::Deserialize;

use crate::Error;
use crate::nn::{Embedding, LayerNorm, Linear};
use crate::ops;
use crate::weights::VarBuilder;

/// The fields of the text encoder's `config.json` that shape the network.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "quick_gelu".into()
}

fn default_eps() -> f64 {
    1e-5
}

impl ClipTextConfig {
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let config: ClipTextConfig = serde_json::from_str(json)
            .map_err(|e| Error::BadConfig(format!("text_encoder/config.json: {e}")))?;
        Activation::parse(&config.hidden_act)?;
        if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
            return Err(Error::BadConfig(format!(
                "text_encoder: num_attention_heads = {} does not divide hidden_size = {}",
                config.num_attention_heads, config.hidden_size
            )));
        }
        Ok(config)
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::BadConfig(format!(
                "text_encoder: hidden_act = \"{other}\" is not supported (quick_gelu or gelu)"
            ))),
        }
    }

    fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            // OpenAI's approximation: x * sigmoid(1.702 x).
            Activation::QuickGelu => x.clone() * sigmoid(x.mul_scalar(1.702)),
            Activation::Gelu => gelu(x),
        }
    }
}

#[derive(Module, Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl ClipAttention {
    fn load(vb: &VarBuilder, c: &ClipTextConfig) -> Result<Self, Error> {
        let d = c.hidden_size;
        Ok(ClipAttention {
            q_proj: Linear::load(&vb.pp("q_proj"), d, d, true)?,
            k_proj: Linear::load(&vb.pp("k_proj"), d, d, true)?,
            v_proj: Linear::load(&vb.pp("v_proj"), d, d, true)?,
            out_proj: Linear::load(&vb.pp("out_proj"), d, d, true)?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: Tensor<3>, causal_mask: Tensor<4>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let split = |t: Tensor<3>| {
            t.reshape([b, n, self.heads, d / self.heads])
                .swap_dims(1, 2)
        };
        let q = split(self.q_proj.forward(x.clone())); // [b, heads, n, d/heads]
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let out = ops::attention_with_bias(q, k, v, Some(causal_mask)); // [b, heads, n, d/heads]
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, n, d]))
    }
}

#[derive(Module, Debug)]
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    #[module(skip)]
    act: Activation,
}

impl ClipEncoderLayer {
    fn load(vb: &VarBuilder, c: &ClipTextConfig) -> Result<Self, Error> {
        let (d, eps) = (c.hidden_size, c.layer_norm_eps);
        Ok(ClipEncoderLayer {
            layer_norm1: LayerNorm::load(&vb.pp("layer_norm1"), d, eps)?,
            self_attn: ClipAttention::load(&vb.pp("self_attn"), c)?,
            layer_norm2: LayerNorm::load(&vb.pp("layer_norm2"), d, eps)?,
            fc1: Linear::load(&vb.pp("mlp").pp("fc1"), d, c.intermediate_size, true)?,
            fc2: Linear::load(&vb.pp("mlp").pp("fc2"), c.intermediate_size, d, true)?,
            act: Activation::parse(&c.hidden_act)?,
        })
    }

    fn forward(&self, x: Tensor<3>, causal_mask: Tensor<4>) -> Tensor<3> {
        // Pre-norm residual blocks: x + attn(ln(x)), then x + mlp(ln(x)).
        let x = x.clone()
            + self
                .self_attn
                .forward(self.layer_norm1.forward(x), causal_mask);
        let h = self.fc2.forward(
            self.act
                .forward(self.fc1.forward(self.layer_norm2.forward(x.clone()))),
        );
        x + h
    }
}

#[derive(Module, Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
}

impl ClipTextModel {
    /// Loads from a text encoder's weights, with or without the `text_model.` prefix that
    /// transformers 4 writes and transformers 5 leaves out.
    pub fn load(vb: &VarBuilder, c: &ClipTextConfig) -> Result<Self, Error> {
        let vb = if vb.contains("text_model.final_layer_norm.weight")? {
            vb.pp("text_model")
        } else {
            vb.clone()
        };
        let emb = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| ClipEncoderLayer::load(&vb.pp("encoder.layers").pp(i), c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClipTextModel {
            token_embedding: Embedding::load(
                &emb.pp("token_embedding"),
                c.vocab_size,
                c.hidden_size,
            )?,
            position_embedding: Embedding::load(
                &emb.pp("position_embedding"),
                c.max_position_embeddings,
                c.hidden_size,
            )?,
            layers,
            final_layer_norm: LayerNorm::load(
                &vb.pp("final_layer_norm"),
                c.hidden_size,
                c.layer_norm_eps,
            )?,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// `[b, n]` token ids -> `[b, n, hidden]` embeddings.
    ///
    /// `clip_skip` has A1111's meaning: 1 uses the last layer; 2 the layer before it, and so on;
    /// the final layer norm is applied either way (as diffusers' `clip_skip` does).
    pub fn forward(&self, ids: Tensor<2, Int>, clip_skip: usize) -> Result<Tensor<3>, Error> {
        if clip_skip == 0 || clip_skip > self.layers.len() {
            return Err(Error::BadInput(format!(
                "clip_skip = {clip_skip}: must be between 1 and {} (the text encoder's layer count)",
                self.layers.len()
            )));
        }
        let device = ids.device();
        let [_, n] = ids.dims();
        let positions = Tensor::<1, Int>::arange(0..n as i64, &device).unsqueeze::<2>();
        let mut x = self.token_embedding.forward(ids) + self.position_embedding.forward(positions); // [b, n, d]
        let mask = causal_mask(n, &device);
        for layer in &self.layers[..self.layers.len() + 1 - clip_skip] {
            x = layer.forward(x, mask.clone());
        }
        Ok(self.final_layer_norm.forward(x))
    }
}

/// `[1, 1, n, n]`: 0 on and below the diagonal, a large negative number above, so each token
/// attends only to itself and earlier tokens.
fn causal_mask(n: usize, device: &burn::tensor::Device) -> Tensor<4> {
    let values: Vec<f32> = (0..n * n)
        .map(|i| if i % n > i / n { f32::MIN } else { 0.0 })
        .collect();
    Tensor::from_data(TensorData::new(values, [1, 1, n, n]), device)
}
