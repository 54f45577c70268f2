//! Single-file SD 1.x / 2.x checkpoints with the original LDM (CompVis / Stability) key names,
//! mapped to diffusers names the way diffusers' `single_file_utils` does:
//!
//! - `model.diffusion_model.*` → `unet` (`input_blocks` / `middle_block` / `output_blocks` →
//!   down / mid / up blocks; ResNet `in_layers` / `emb_layers` / `out_layers` → `norm1`,
//!   `conv1`, `time_emb_proj`, `norm2`, `conv2`)
//! - `first_stage_model.*` → `vae` (`down` / `up` → `down_blocks` / `up_blocks`, the up blocks
//!   in reverse order; mid-block attention `q`/`k`/`v`/`proj_out` 1×1 convs → linear weights)
//! - `cond_stage_model.transformer.*` (SD 1.x, CLIP ViT-L) → `text_encoder`, names unchanged
//! - `cond_stage_model.model.*` (SD 2.x, OpenCLIP ViT-H) → `text_encoder`: `in_proj_weight`
//!   split into q/k/v, `c_fc`/`c_proj` → `fc1`/`fc2`; its last layer, `text_projection` and
//!   `logit_scale` are dropped (diffusers' SD 2 text encoder has 23 of the 24 layers).
//!
//! Configs: the built-in SD 1.5 or SD 2.1 ones (SD 1 vs 2 from the cross-attention width,
//! inpainting from the UNet's 9 input channels), or those of a diffusers folder given with it.
//! The prediction type cannot be read from weights: the caller sets it, by default
//! v_prediction for SD 2.x (the 768-v models) and epsilon for SD 1.x and inpainting models;
//! an SD 2.x epsilon model gets SD 2.1 base's sizes and scheduler. The scheduler configs are
//! field for field those diffusers' single-file loader takes from the Hub for the same
//! model (tests/fixtures/single_file_configs).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::input::{self, Input};
use super::spec::Spec;
use crate::Error;
use crate::safetensors::{Header, TensorInfo};

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const CLIP: &str = "cond_stage_model.transformer.";
const OPEN_CLIP: &str = "cond_stage_model.model.";

/// What to do about a single file the built-in configs do not fit; each driver says how it
/// takes such configs (`sd-weights convert --config`, `importFile`'s `config` option).
pub const NEEDS_CONFIGS: &str = "give the configs of a diffusers folder of the same architecture";

/// A mapped tensor: component, diffusers name, shape, byte range inside the source tensor.
type Mapped = (&'static str, String, Vec<usize>, u64, u64);
/// Each LDM name with what it maps to, and the number of tensors dropped.
type MappedHeader = (Vec<(String, Vec<Mapped>)>, usize);

fn whole(component: &'static str, name: String, info: &TensorInfo) -> Mapped {
    (
        component,
        name,
        info.shape.clone(),
        0,
        (info.end - info.start) as u64,
    )
}

fn resnet(rest: &str) -> String {
    for (from, to) in [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ] {
        if let Some(tail) = rest.strip_prefix(from) {
            return format!("{to}{tail}");
        }
    }
    rest.to_string()
}

/// `N.K.rest` → (N, K, rest).
fn split_block(s: &str) -> Option<(usize, usize, &str)> {
    let (n, s) = s.split_once('.')?;
    let (k, rest) = s.split_once('.')?;
    Some((n.parse().ok()?, k.parse().ok()?, rest))
}

/// A UNet name after `model.diffusion_model.`; `None` when it is not one we know.
pub fn unet_name(name: &str, layers_per_block: usize) -> Option<String> {
    let per = layers_per_block.checked_add(1)?;
    for (from, to) in [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ] {
        if let Some(tail) = name.strip_prefix(from) {
            return Some(format!("{to}{tail}"));
        }
    }
    if let Some(s) = name.strip_prefix("input_blocks.") {
        let (n, k, rest) = split_block(s)?;
        let (i, j) = ((n.checked_sub(1)?) / per, (n - 1) % per);
        return Some(match (j == layers_per_block, k) {
            (true, 0) => format!(
                "down_blocks.{i}.downsamplers.0.conv.{}",
                rest.strip_prefix("op.")?
            ),
            (false, 0) => format!("down_blocks.{i}.resnets.{j}.{}", resnet(rest)),
            (false, 1) => format!("down_blocks.{i}.attentions.{j}.{rest}"),
            _ => return None,
        });
    }
    if let Some(s) = name.strip_prefix("middle_block.") {
        let (k, rest) = s.split_once('.')?;
        return Some(match k {
            "0" => format!("mid_block.resnets.0.{}", resnet(rest)),
            "1" => format!("mid_block.attentions.0.{rest}"),
            "2" => format!("mid_block.resnets.1.{}", resnet(rest)),
            _ => return None,
        });
    }
    if let Some(s) = name.strip_prefix("output_blocks.") {
        let (n, k, rest) = split_block(s)?;
        let (i, j) = (n / per, n % per);
        return Some(match k {
            0 => format!("up_blocks.{i}.resnets.{j}.{}", resnet(rest)),
            1 | 2 if rest.starts_with("conv.") => format!("up_blocks.{i}.upsamplers.0.{rest}"),
            1 => format!("up_blocks.{i}.attentions.{j}.{rest}"),
            _ => return None,
        });
    }
    None
}

/// A VAE name after `first_stage_model.`, with the number of up blocks; the bool says the
/// tensor is a mid-block attention 1×1 conv to flatten to a linear weight.
pub fn vae_name(name: &str, up_blocks: usize) -> Option<(String, bool)> {
    let block = |rest: &str| rest.replace("nin_shortcut.", "conv_shortcut.");
    let (part, rest) = name.split_once('.')?;
    if !matches!(part, "encoder" | "decoder") {
        return matches!(part, "quant_conv" | "post_quant_conv").then(|| (name.to_string(), false));
    }
    let mapped = if let Some(s) = rest.strip_prefix("down.") {
        let (i, s) = s.split_once('.')?;
        if let Some(r) = s.strip_prefix("downsample.") {
            format!("down_blocks.{i}.downsamplers.0.{r}")
        } else {
            let (j, r) = s.strip_prefix("block.")?.split_once('.')?;
            format!("down_blocks.{i}.resnets.{j}.{}", block(r))
        }
    } else if let Some(s) = rest.strip_prefix("up.") {
        let (i, s) = s.split_once('.')?;
        let i = up_blocks.checked_sub(1)?.checked_sub(i.parse().ok()?)?;
        if let Some(r) = s.strip_prefix("upsample.") {
            format!("up_blocks.{i}.upsamplers.0.{r}")
        } else {
            let (j, r) = s.strip_prefix("block.")?.split_once('.')?;
            format!("up_blocks.{i}.resnets.{j}.{}", block(r))
        }
    } else if let Some(r) = rest.strip_prefix("mid.block_1.") {
        format!("mid_block.resnets.0.{}", block(r))
    } else if let Some(r) = rest.strip_prefix("mid.block_2.") {
        format!("mid_block.resnets.1.{}", block(r))
    } else if let Some(r) = rest.strip_prefix("mid.attn_1.") {
        let (layer, tail) = r.split_once('.')?;
        let to = match layer {
            "norm" => "group_norm",
            "q" => "to_q",
            "k" => "to_k",
            "v" => "to_v",
            "proj_out" => "to_out.0",
            _ => return None,
        };
        return Some((
            format!("{part}.mid_block.attentions.0.{to}.{tail}"),
            layer != "norm" && tail == "weight",
        ));
    } else if let Some(r) = rest.strip_prefix("norm_out.") {
        format!("conv_norm_out.{r}")
    } else if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        rest.to_string()
    } else {
        return None;
    };
    Some((format!("{part}.{mapped}"), false))
}

/// OpenCLIP text tower names → CLIPTextModel names (q/k/v split into three).
fn open_clip(
    name: &str,
    info: &TensorInfo,
    layers: usize,
    out: &mut Vec<Mapped>,
) -> Result<bool, String> {
    let te = "text_encoder";
    let simple = match name {
        "token_embedding.weight" => {
            Some("text_model.embeddings.token_embedding.weight".to_string())
        }
        "positional_embedding" => {
            Some("text_model.embeddings.position_embedding.weight".to_string())
        }
        "ln_final.weight" | "ln_final.bias" => {
            Some(format!("text_model.final_layer_norm.{}", &name[9..]))
        }
        _ => None,
    };
    if let Some(n) = simple {
        out.push(whole(te, n, info));
        return Ok(true);
    }
    let Some(s) = name.strip_prefix("transformer.resblocks.") else {
        return Ok(matches!(name, "text_projection" | "logit_scale") || name.starts_with("visual."));
    };
    let (l, rest) = s.split_once('.').ok_or("bad layer name")?;
    let l: usize = l.parse().map_err(|_| "bad layer number")?;
    if l >= layers {
        return Ok(true);
    }
    let prefix = format!("text_model.encoder.layers.{l}");
    if let Some(kind) = rest.strip_prefix("attn.in_proj_") {
        let rows = info.shape.first().copied().unwrap_or(0);
        if info.shape.is_empty() || rows % 3 != 0 {
            return Err(format!(
                "{name}: shape {:?} does not split into q, k, v",
                info.shape
            ));
        }
        let bytes = ((info.end - info.start) / 3) as u64;
        let mut shape = info.shape.clone();
        shape[0] = rows / 3;
        for (i, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            out.push((
                te,
                format!("{prefix}.self_attn.{p}.{kind}"),
                shape.clone(),
                bytes * i as u64,
                bytes,
            ));
        }
        return Ok(true);
    }
    let mapped = [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("attn.out_proj.", "self_attn.out_proj."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ]
    .iter()
    .find_map(|(from, to)| rest.strip_prefix(from).map(|t| format!("{prefix}.{to}{t}")));
    match mapped {
        Some(n) => {
            out.push(whole(te, n, info));
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Maps every tensor of an LDM checkpoint header. Unknown UNet / VAE / text-encoder names are
/// errors (the checkpoint is not an SD 1.x / 2.x one); tensors outside those three prefixes
/// (EMA copies, schedules) are ignored.
pub fn map(
    header: &Header,
    unet_config: &Value,
    vae_config: &Value,
    text_layers: usize,
) -> Result<MappedHeader, String> {
    let lpb = unet_config["layers_per_block"]
        .as_u64()
        .ok_or("unet config: layers_per_block must be one number")? as usize;
    let up_blocks = vae_config["block_out_channels"]
        .as_array()
        .map(Vec::len)
        .ok_or("vae config: no block_out_channels")?;
    let mut mapped = Vec::new();
    let mut dropped = 0;
    for (name, info) in &header.tensors {
        let mut out = Vec::new();
        if let Some(rest) = name.strip_prefix(UNET) {
            let n = unet_name(rest, lpb).ok_or_else(|| format!("unexpected UNet tensor {name}"))?;
            out.push(whole("unet", n, info));
        } else if let Some(rest) = name.strip_prefix(VAE) {
            match vae_name(rest, up_blocks) {
                Some((n, flatten)) => {
                    let mut m = whole("vae", n, info);
                    if flatten && m.2.len() == 4 {
                        m.2.truncate(2);
                    }
                    out.push(m);
                }
                None if rest.starts_with("encoder.") || rest.starts_with("decoder.") => {
                    return Err(format!("unexpected VAE tensor {name}"));
                }
                None => dropped += 1,
            }
        } else if let Some(rest) = name.strip_prefix(CLIP) {
            let rest = rest.strip_prefix("text_model.").unwrap_or(rest);
            if rest.ends_with("position_ids") {
                continue;
            }
            let layer = rest
                .strip_prefix("encoder.layers.")
                .and_then(|s| s.split('.').next())
                .and_then(|l| l.parse::<usize>().ok());
            if layer.is_some_and(|l| l >= text_layers) {
                dropped += 1;
                continue;
            }
            out.push(whole("text_encoder", format!("text_model.{rest}"), info));
        } else if let Some(rest) = name.strip_prefix(OPEN_CLIP) {
            let before = out.len();
            if !open_clip(rest, info, text_layers, &mut out)? {
                return Err(format!("unexpected OpenCLIP tensor {name}"));
            }
            if out.len() == before {
                dropped += 1;
            }
        } else {
            continue;
        }
        mapped.push((name.clone(), out));
    }
    Ok((mapped, dropped))
}

/// The configs a single file converts with.
pub enum Configs {
    /// The built-in ones: the [`Spec`] of the family [`builtin_family`] names.
    Builtin(Spec),
    /// A diffusers folder's configs and tokenizer files by path (`sd-weights convert
    /// --config`), checked by [`input::check_folder_files`]; the string names the folder.
    Folder(BTreeMap<String, Value>, BTreeMap<String, Vec<u8>>, String),
}

/// What a single file's header says it is: SD 2 (OpenCLIP text encoder), inpainting (9 UNet
/// input channels), its cross-attention width and input channels.
struct Kind {
    sd2: bool,
    inpaint: bool,
    context: usize,
    in_channels: usize,
}

fn kind(name: &str, header: &Header) -> Result<Kind, Error> {
    let bad = |why: &str| Error::BadWeights(format!("{name}: {why}"));
    if header
        .tensors
        .keys()
        .any(|k| k.starts_with("conditioner.embedders"))
    {
        return Err(bad(
            "this is an SDXL checkpoint; only SD 1.x and 2.x are supported",
        ));
    }
    let unet_tensor = |n: &str| header.tensors.get(&format!("{UNET}{n}"));
    let (Some(conv_in), Some(to_k)) = (
        unet_tensor("input_blocks.0.0.weight"),
        unet_tensor("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"),
    ) else {
        return Err(bad(
            "not a Stable Diffusion 1.x / 2.x single-file checkpoint (no model.diffusion_model.input_blocks tensors); \
             give a diffusers folder instead",
        ));
    };
    let in_channels = conv_in.shape.get(1).copied().unwrap_or(0);
    Ok(Kind {
        sd2: header.tensors.keys().any(|k| k.starts_with(OPEN_CLIP)),
        inpaint: in_channels == 9,
        context: to_k.shape.get(1).copied().unwrap_or(0),
        in_channels,
    })
}

/// One config to edit. The five are there (checked by `check_folder_files` or
/// [`Spec::parse`]): this only keeps a missing one from being a panic.
fn config<'a>(
    configs: &'a mut BTreeMap<String, Value>,
    path: &str,
) -> Result<&'a mut Value, Error> {
    configs
        .get_mut(path)
        .ok_or_else(|| Error::BadConfig(format!("{path} is missing")))
}

/// The built-in spec a single-file checkpoint (its parsed header; `name` labels the file)
/// converts with: `sd15`, `sd15-inpaint` or `sd21`
/// ([`SINGLE_FILE_FAMILIES`](super::spec::SINGLE_FILE_FAMILIES)). The caller
/// gets that [`Spec`] and passes it to [`single_file`]. [`Error::BadWeights`] for an SDXL
/// checkpoint or one that is not SD 1.x / 2.x.
pub fn builtin_family(name: &str, header: &Header) -> Result<&'static str, Error> {
    let kind = kind(name, header)?;
    Ok(match (kind.sd2, kind.inpaint) {
        (false, false) => "sd15",
        (false, true) => "sd15-inpaint",
        (true, _) => "sd21",
    })
}

/// A single-file checkpoint as a convert [`Input`], from its parsed header (`name` labels the
/// file in messages), the configs to convert it with, and the prediction type
/// (`Some(true)`: v_prediction; `None`: v_prediction for SD 2.x text to image, else epsilon).
///
/// Errors ([`Error::BadWeights`] naming the file): SDXL or not SD 1.x / 2.x, tensors the
/// architecture does not have or of another shape, a component missing; a built-in spec of
/// another family than [`builtin_family`]'s is [`Error::BadInput`].
pub fn single_file(
    name: &str,
    header: &Header,
    configs: Configs,
    v_prediction: Option<bool>,
) -> Result<Input, Error> {
    let bad = |why: String| Error::BadWeights(format!("{name}: {why}"));
    let Kind {
        sd2,
        inpaint,
        context,
        in_channels,
    } = kind(name, header)?;
    let unet_tensor = |n: &str| header.tensors.get(&format!("{UNET}{n}"));
    let mut notes = Vec::new();

    let builtin = matches!(configs, Configs::Builtin(_));
    let (mut configs, tokenizer, spec) = match configs {
        Configs::Folder(configs, tokenizer, what) => {
            input::check_folder_files(&configs, &tokenizer, &what)?;
            (configs, tokenizer, None)
        }
        Configs::Builtin(mut spec) => {
            let family = builtin_family(name, header)?;
            if spec.family != family {
                return Err(Error::BadInput(format!(
                    "{name}: is an {family} checkpoint, but the built-in {} spec was given",
                    spec.family
                )));
            }
            let mut configs = std::mem::take(&mut spec.configs);
            let unet = config(&mut configs, "unet/config.json")?;
            unet["in_channels"] = in_channels.into();
            unet["cross_attention_dim"] = context.into();
            let linear =
                unet_tensor("input_blocks.1.1.proj_in.weight").is_some_and(|t| t.shape.len() == 2);
            unet["use_linear_projection"] = linear.into();
            notes.push(format!(
                "using the built-in {} configs (cross-attention width {context}, {in_channels} input channels)",
                if sd2 { "SD 2.1" } else { "SD 1.5" }
            ));
            let tokenizer = std::mem::take(&mut spec.tokenizer);
            (configs, tokenizer, Some(spec))
        }
    };
    let v_pred = v_prediction.unwrap_or(sd2 && !inpaint);
    if v_prediction.is_some() || builtin {
        let prediction = if v_pred { "v_prediction" } else { "epsilon" };
        let scheduler = config(&mut configs, "scheduler/scheduler_config.json")?;
        // Written only where it changes the config (absent is epsilon for every scheduler),
        // so the built-in configs stay field for field those diffusers loads.
        if scheduler["prediction_type"].as_str().unwrap_or("epsilon") != prediction {
            scheduler["prediction_type"] = prediction.into();
        }
        if v_prediction.is_none() {
            notes.push(format!(
                "prediction type {prediction} assumed (SD 2.x 768 models are v_prediction, the rest epsilon); \
                 if images come out wrong, convert again with the other prediction type"
            ));
        }
        if builtin && sd2 && !v_pred {
            // The 512-pixel SD 2 base models.
            config(&mut configs, "unet/config.json")?["sample_size"] = 64.into();
            config(&mut configs, "vae/config.json")?["sample_size"] = 512.into();
            if !inpaint {
                // stabilityai/stable-diffusion-2-1-base's scheduler: 2-1's with PNDM (and
                // epsilon, set above) instead of DDIM; tests/fixtures/single_file_configs.
                let pndm = "PNDMScheduler";
                config(&mut configs, "scheduler/scheduler_config.json")?["_class_name"] =
                    pndm.into();
                config(&mut configs, "model_index.json")?["scheduler"] =
                    serde_json::json!(["diffusers", pndm]);
            }
        }
    }
    input::check_configs(&configs, name)?;
    let text_layers = configs["text_encoder/config.json"]["num_hidden_layers"]
        .as_u64()
        .unwrap_or(0) as usize;
    let (mapped, dropped) =
        map(header, &configs["unet/config.json"], &configs["vae/config.json"], text_layers).map_err(|why| {
            let hint = if builtin {
                format!(", or one whose architecture differs from the built-in SD 1.5 / 2.1 configs ({NEEDS_CONFIGS})")
            } else {
                ", or it does not match the configs given".to_string()
            };
            bad(format!("{why}: not an SD 1.x / 2.x checkpoint with the original LDM names{hint}"))
        })?;
    if dropped > 0 {
        notes.push(format!("{dropped} tensors not used by diffusers were skipped (extra text-encoder layers, projections, losses)"));
    }
    let family = input::family(&configs)?;
    let mut input = Input {
        files: vec![],
        tensors: vec![],
        configs,
        tokenizer,
        family,
        notes,
    };
    let by_name: BTreeMap<String, Vec<Mapped>> = mapped.into_iter().collect();
    input.add_file(name, header, |tensor, _| {
        by_name.get(tensor).cloned().unwrap_or_default()
    })?;
    input.check_unique()?;
    for component in ["text_encoder", "unet", "vae"] {
        if !input.tensors.iter().any(|t| t.component == component) {
            return Err(bad(format!(
                "has no {component} weights: not a complete SD checkpoint"
            )));
        }
    }
    if let Some(spec) = spec {
        check_against_spec(&input, &spec, sd2 && inpaint).map_err(bad)?;
    }
    Ok(input)
}

/// With the built-in configs, the mapped tensors must be exactly diffusers' list (an SD 2
/// inpainting checkpoint: SD 2.1's, with 9 UNet input channels).
fn check_against_spec(input: &Input, spec: &Spec, sd2_inpaint: bool) -> Result<(), String> {
    let mut want: BTreeSet<(String, Vec<usize>)> = spec
        .tensors
        .iter()
        .map(|(c, n, s)| (format!("{c}/{n}"), s.clone()))
        .collect();
    if sd2_inpaint {
        want = want
            .into_iter()
            .map(|(n, mut s)| {
                if n == "unet/conv_in.weight" && s.len() > 1 {
                    s[1] = 9;
                }
                (n, s)
            })
            .collect();
    }
    let got: BTreeSet<(String, Vec<usize>)> = input
        .tensors
        .iter()
        .map(|t| (format!("{}/{}", t.component, t.name), t.shape.clone()))
        .collect();
    if let Some((n, s)) = want.difference(&got).next() {
        let found = got
            .iter()
            .find(|(g, _)| g == n)
            .map(|(_, s)| format!("has shape {s:?}"))
            .unwrap_or("is missing".into());
        return Err(format!(
            "tensor {n} {found}, the SD architecture needs {s:?}; {NEEDS_CONFIGS}"
        ));
    }
    if let Some((n, _)) = got.difference(&want).next() {
        return Err(format!("tensor {n} is not part of the SD architecture"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            unet_name("input_blocks.3.0.op.weight", 2).unwrap(),
            "down_blocks.0.downsamplers.0.conv.weight"
        );
        assert_eq!(
            unet_name("input_blocks.4.0.skip_connection.bias", 2).unwrap(),
            "down_blocks.1.resnets.0.conv_shortcut.bias"
        );
        assert_eq!(
            unet_name("output_blocks.2.1.conv.weight", 2).unwrap(),
            "up_blocks.0.upsamplers.0.conv.weight"
        );
        assert_eq!(
            unet_name("output_blocks.5.2.conv.bias", 2).unwrap(),
            "up_blocks.1.upsamplers.0.conv.bias"
        );
        assert_eq!(
            unet_name("output_blocks.5.1.norm.bias", 2).unwrap(),
            "up_blocks.1.attentions.2.norm.bias"
        );
        assert_eq!(
            unet_name("middle_block.2.emb_layers.1.weight", 2).unwrap(),
            "mid_block.resnets.1.time_emb_proj.weight"
        );
        assert!(unet_name("input_blocks.1.7.x", 2).is_none());
        assert!(unet_name("label_emb.0.0.weight", 2).is_none());
        assert_eq!(
            vae_name("decoder.up.3.block.0.nin_shortcut.weight", 4)
                .unwrap()
                .0,
            "decoder.up_blocks.0.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(
            vae_name("encoder.mid.attn_1.proj_out.weight", 4).unwrap(),
            (
                "encoder.mid_block.attentions.0.to_out.0.weight".into(),
                true
            )
        );
        assert_eq!(
            vae_name("encoder.mid.attn_1.q.bias", 4).unwrap(),
            ("encoder.mid_block.attentions.0.to_q.bias".into(), false)
        );
        assert!(vae_name("loss.logvar", 4).is_none());
        assert!(unet_name("input_blocks.1.0.in_layers.0.weight", usize::MAX).is_none());
    }

    /// A crafted checkpoint whose fused q/k/v weight is a scalar is an error, not a panic.
    #[test]
    fn lying_shapes_are_errors() {
        use crate::safetensors::Dtype;
        let info = TensorInfo {
            dtype: Dtype::F16,
            shape: vec![],
            start: 0,
            end: 2,
        };
        let name = format!("{OPEN_CLIP}transformer.resblocks.0.attn.in_proj_weight");
        let header = Header {
            tensors: [(name, info)].into_iter().collect(),
            data_start: 8,
        };
        let (unet, vae) = (
            serde_json::json!({"layers_per_block": 2}),
            serde_json::json!({"block_out_channels": [1, 2]}),
        );
        let err = map(&header, &unet, &vae, 1).unwrap_err();
        assert!(
            err.contains("in_proj_weight") && err.contains("does not split into q, k, v"),
            "{err}"
        );
    }
}
