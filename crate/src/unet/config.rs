//! The UNet's `config.json`, with diffusers' field names and defaults
//! (`UNet2DConditionModel.__init__` in `diffusers/models/unets/unet_2d_condition.py`).
//!
//! Everything that shapes SD 1.x, 2.x, Turbo, inpainting and LCM UNets is supported. Any
//! other value of a field that changes the network is refused with [`Error::BadConfig`]
//! naming the field, so an exotic checkpoint never runs as a silently different model.
//!
//! Fields that diffusers reads but that have no effect on the block types we build are not
//! declared and so ignored, exactly as diffusers ignores them: `dropout`
//! (inference), `resnet_skip_time_act` and `resnet_out_scale_factor` (only the
//! `ResnetDownsampleBlock2D` / `SimpleCrossAttn*` blocks read them),
//! `mid_block_only_cross_attention` (only `UNetMidBlock2DSimpleCrossAttn`), and
//! `addition_time_embed_dim`, `addition_embed_type_num_heads`,
//! `projection_class_embeddings_input_dim` (only read with a class or addition embedding,
//! which are refused). Other unknown keys (`_class_name`, `_diffusers_version`) are fine.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;
use crate::vae::SampleSize;

/// A field diffusers accepts either as one value for every block or as a per-block list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrPerBlock {
    One(usize),
    PerBlock(Vec<usize>),
}

/// The down blocks we implement (diffusers' `get_down_block` names).
pub const DOWN_BLOCK_TYPES: [&str; 2] = ["CrossAttnDownBlock2D", "DownBlock2D"];
/// The up blocks we implement (diffusers' `get_up_block` names).
pub const UP_BLOCK_TYPES: [&str; 2] = ["CrossAttnUpBlock2D", "UpBlock2D"];
/// The only mid block we implement.
pub const MID_BLOCK_TYPE: &str = "UNetMidBlock2DCrossAttn";

/// `unet/config.json`. Missing fields take diffusers' defaults (SD 1.5's architecture).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    /// `null` means no mid block in diffusers; we need `UNetMidBlock2DCrossAttn`.
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    /// `false`, or a per-block list of `false`.
    pub only_cross_attention: Value,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: OneOrPerBlock,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub cross_attention_dim: OneOrPerBlock,
    /// `1`, or a per-block list of `1`.
    pub transformer_layers_per_block: Value,
    pub reverse_transformer_layers_per_block: Value,
    pub encoder_hid_dim: Value,
    pub encoder_hid_dim_type: Value,
    /// diffusers' legacy meaning: the number of HEADS per block (see [`Self::heads_per_block`]).
    pub attention_head_dim: OneOrPerBlock,
    /// diffusers raises when this is set; so do we.
    pub num_attention_heads: Value,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    pub class_embed_type: Value,
    pub addition_embed_type: Value,
    pub num_class_embeds: Value,
    pub class_embeddings_concat: bool,
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub time_embedding_type: String,
    pub time_embedding_dim: Option<usize>,
    pub time_embedding_act_fn: Value,
    pub timestep_post_act: Value,
    /// LCM's guidance embedding: the width of `timestep_cond`.
    pub time_cond_proj_dim: Option<usize>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub attention_type: String,
    pub cross_attention_norm: Value,
    /// The latent size the UNet was trained at (× the VAE's scale factor: the default image
    /// size, see [`crate::model::ModelDefaults`]); the network itself takes any size.
    pub sample_size: Option<SampleSize>,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        UNet2DConditionConfig {
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: strings(&[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]),
            mid_block_type: Some(MID_BLOCK_TYPE.to_string()),
            up_block_types: strings(&[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]),
            only_cross_attention: Value::Bool(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: OneOrPerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: OneOrPerBlock::One(1280),
            transformer_layers_per_block: Value::from(1),
            reverse_transformer_layers_per_block: Value::Null,
            encoder_hid_dim: Value::Null,
            encoder_hid_dim_type: Value::Null,
            attention_head_dim: OneOrPerBlock::One(8),
            num_attention_heads: Value::Null,
            dual_cross_attention: false,
            use_linear_projection: false,
            class_embed_type: Value::Null,
            addition_embed_type: Value::Null,
            num_class_embeds: Value::Null,
            class_embeddings_concat: false,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            time_embedding_act_fn: Value::Null,
            timestep_post_act: Value::Null,
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            attention_type: "default".into(),
            cross_attention_norm: Value::Null,
            sample_size: None,
        }
    }
}

fn unsupported(field: &str, value: impl std::fmt::Display, supported: &str) -> Error {
    Error::BadConfig(format!(
        "unet: {field} = {value} is not supported ({supported})"
    ))
}

/// diffusers accepts `UNetResFoo` for `Foo` in block type names (`get_down_block`).
fn block_name(name: &str) -> &str {
    name.strip_prefix("UNetRes").unwrap_or(name)
}

impl UNet2DConditionConfig {
    /// Parses and validates `unet/config.json`.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::BadConfig(format!("unet/config.json: {e}")))?;
        let config: UNet2DConditionConfig = serde_json::from_value(value.clone()).map_err(|e| {
            // serde does not say which field failed: find it by parsing each on its own.
            let field = value.as_object().and_then(|fields| {
                fields.iter().find(|(k, v)| {
                    let alone = Value::Object([((*k).clone(), (*v).clone())].into_iter().collect());
                    serde_json::from_value::<UNet2DConditionConfig>(alone).is_err()
                })
            });
            match field {
                Some((k, v)) => Error::BadConfig(format!("unet: {k} = {v} in config.json: {e}")),
                None => Error::BadConfig(format!("unet/config.json: {e}")),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that this config describes a network we build exactly; otherwise names the
    /// field. [`super::UNet2DConditionModel::load`] calls it too, so edited configs are checked.
    pub fn validate(&self) -> Result<(), Error> {
        // Fields that must keep their default, because they add or change parts we do not build.
        let null_fields = [
            ("num_attention_heads", &self.num_attention_heads),
            ("class_embed_type", &self.class_embed_type),
            ("num_class_embeds", &self.num_class_embeds),
            ("addition_embed_type", &self.addition_embed_type),
            ("encoder_hid_dim", &self.encoder_hid_dim),
            ("encoder_hid_dim_type", &self.encoder_hid_dim_type),
            ("time_embedding_act_fn", &self.time_embedding_act_fn),
            ("timestep_post_act", &self.timestep_post_act),
            ("cross_attention_norm", &self.cross_attention_norm),
            (
                "reverse_transformer_layers_per_block",
                &self.reverse_transformer_layers_per_block,
            ),
        ];
        for (field, value) in null_fields {
            if !value.is_null() {
                let why = if field == "num_attention_heads" {
                    // diffusers' own check: the field's meaning is reserved (issue #2011);
                    // heads come from `attention_head_dim`.
                    "diffusers refuses it too; heads come from attention_head_dim"
                } else {
                    "only null"
                };
                return Err(unsupported(field, value, why));
            }
        }
        let flags = [
            ("center_input_sample", self.center_input_sample),
            ("dual_cross_attention", self.dual_cross_attention),
            ("class_embeddings_concat", self.class_embeddings_concat),
        ];
        for (field, value) in flags {
            if value {
                return Err(unsupported(field, value, "only false"));
            }
        }
        let names = [
            (
                "time_embedding_type",
                self.time_embedding_type.as_str(),
                "positional",
            ),
            (
                "resnet_time_scale_shift",
                self.resnet_time_scale_shift.as_str(),
                "default",
            ),
            ("attention_type", self.attention_type.as_str(), "default"),
        ];
        for (field, value, want) in names {
            if value != want {
                return Err(unsupported(
                    field,
                    format!("\"{value}\""),
                    &format!("only \"{want}\""),
                ));
            }
        }
        // diffusers' get_activation maps both names to SiLU.
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return Err(unsupported(
                "act_fn",
                format!("\"{}\"", self.act_fn),
                "only \"silu\"",
            ));
        }
        for (field, kernel) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if kernel != 3 {
                return Err(unsupported(field, kernel, "only 3"));
            }
        }
        match &self.only_cross_attention {
            Value::Bool(false) => {}
            Value::Array(list) if list.iter().all(|v| v == &Value::Bool(false)) => {}
            other => return Err(unsupported("only_cross_attention", other, "only false")),
        }
        match &self.transformer_layers_per_block {
            v if v == &Value::from(1) => {}
            Value::Array(list) if list.iter().all(|v| v == &Value::from(1)) => {}
            other => return Err(unsupported("transformer_layers_per_block", other, "only 1")),
        }

        let blocks = self.down_block_types.len();
        if blocks == 0 {
            return Err(Error::BadConfig("unet: down_block_types is empty".into()));
        }
        if self.up_block_types.len() != blocks || self.block_out_channels.len() != blocks {
            return Err(Error::BadConfig(format!(
                "unet: down_block_types ({blocks}), up_block_types ({}) and block_out_channels ({}) must have the same length",
                self.up_block_types.len(),
                self.block_out_channels.len()
            )));
        }
        for name in &self.down_block_types {
            if !DOWN_BLOCK_TYPES.contains(&block_name(name)) {
                return Err(unsupported(
                    "down_block_types",
                    format!("\"{name}\""),
                    &DOWN_BLOCK_TYPES.join(" or "),
                ));
            }
        }
        for name in &self.up_block_types {
            if !UP_BLOCK_TYPES.contains(&block_name(name)) {
                return Err(unsupported(
                    "up_block_types",
                    format!("\"{name}\""),
                    &UP_BLOCK_TYPES.join(" or "),
                ));
            }
        }
        if self.mid_block_type.as_deref() != Some(MID_BLOCK_TYPE) {
            let found = self
                .mid_block_type
                .as_deref()
                .map_or("null".to_string(), |s| format!("\"{s}\""));
            return Err(unsupported(
                "mid_block_type",
                found,
                &format!("only \"{MID_BLOCK_TYPE}\""),
            ));
        }
        if self.block_out_channels.contains(&0) || self.in_channels == 0 || self.out_channels == 0 {
            return Err(Error::BadConfig(
                "unet: channel counts must be positive".into(),
            ));
        }
        match self.layers_per_block {
            OneOrPerBlock::One(n) if n > 0 => {}
            ref other => {
                return Err(unsupported(
                    "layers_per_block",
                    json(other),
                    "a single positive integer",
                ));
            }
        }
        match self.cross_attention_dim {
            OneOrPerBlock::One(n) if n > 0 => {}
            ref other => {
                return Err(unsupported(
                    "cross_attention_dim",
                    json(other),
                    "a single positive integer",
                ));
            }
        }
        let groups = self
            .norm_num_groups
            .ok_or_else(|| unsupported("norm_num_groups", "null", "a group count"))?;
        if groups == 0 {
            return Err(unsupported("norm_num_groups", 0, "a positive group count"));
        }
        if let OneOrPerBlock::PerBlock(list) = &self.attention_head_dim {
            if list.len() != blocks {
                return Err(Error::BadConfig(format!(
                    "unet: attention_head_dim has {} entries for {blocks} down blocks",
                    list.len()
                )));
            }
        }
        if self.time_embedding_dim == Some(0) || self.time_cond_proj_dim == Some(0) {
            return Err(Error::BadConfig(
                "unet: time_embedding_dim / time_cond_proj_dim must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Attention heads per down block. diffusers' legacy naming: `num_attention_heads =
    /// num_attention_heads or attention_head_dim`, so `attention_head_dim` holds the heads
    /// (SD 1.x: 8 everywhere; SD 2.x: [5, 10, 20, 20]); each head is `channels / heads` wide.
    /// The mid block uses the last entry, up block `i` entry `n - 1 - i`.
    pub fn heads_per_block(&self) -> Vec<usize> {
        match &self.attention_head_dim {
            OneOrPerBlock::One(h) => vec![*h; self.down_block_types.len()],
            OneOrPerBlock::PerBlock(list) => list.clone(),
        }
    }

    /// Resnets per down block (up blocks have one more). Valid after [`Self::validate`].
    pub fn layers(&self) -> usize {
        match self.layers_per_block {
            OneOrPerBlock::One(n) => n,
            OneOrPerBlock::PerBlock(ref list) => list[0],
        }
    }

    /// The width of `encoder_hidden_states`. Valid after [`Self::validate`].
    pub fn cross_dim(&self) -> usize {
        match self.cross_attention_dim {
            OneOrPerBlock::One(n) => n,
            OneOrPerBlock::PerBlock(ref list) => list[0],
        }
    }

    /// `norm_num_groups`. Valid after [`Self::validate`].
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }

    /// The time embedding width: `time_embedding_dim`, or 4 × the first block's channels.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels[0])
    }

    /// Whether down block `i` has attention (`CrossAttnDownBlock2D`).
    pub fn down_has_attention(&self, i: usize) -> bool {
        block_name(&self.down_block_types[i]) == "CrossAttnDownBlock2D"
    }

    /// Whether up block `i` has attention (`CrossAttnUpBlock2D`).
    pub fn up_has_attention(&self, i: usize) -> bool {
        block_name(&self.up_block_types[i]) == "CrossAttnUpBlock2D"
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "?".into())
}
