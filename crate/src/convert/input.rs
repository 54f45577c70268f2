//! What a convert reads: a diffusers folder or a single-file LDM checkpoint, as a list of
//! tensors located in safetensors files. Only headers are parsed up front (the caller reads
//! them); each tensor's bytes are pushed to the [`Converter`](super::Converter) when it is
//! converted, so memory holds one tensor at a time. Files are named by a label (a path
//! natively, a file name in the browser) that every message about them carries.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::Error;
use crate::safetensors::{self as st, Header};

/// One tensor to convert: a byte range of a safetensors file under its diffusers name.
#[derive(Debug, Clone)]
pub struct InputTensor {
    /// `text_encoder`, `unet` or `vae`.
    pub component: &'static str,
    /// The diffusers / transformers name.
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: st::Dtype,
    /// Index into [`Input::files`].
    pub file: usize,
    /// Absolute byte range in the file.
    pub start: u64,
    pub len: u64,
}

/// A model ready to convert.
pub struct Input {
    /// The safetensors files' labels, for messages; [`InputTensor::file`] indexes them.
    pub files: Vec<String>,
    pub tensors: Vec<InputTensor>,
    /// Diffusers configs by path (`unet/config.json`).
    pub configs: BTreeMap<String, Value>,
    /// Tokenizer files by path (`tokenizer/vocab.json`).
    pub tokenizer: BTreeMap<String, Vec<u8>>,
    /// `sd1`, `sd2`, `sd1-inpaint`, ...
    pub family: String,
    /// Things the user should know (skipped tensors, assumptions), for the caller to show.
    pub notes: Vec<String>,
}

/// The tokenizer files a diffusers folder may have, under `tokenizer/`.
pub const TOKENIZER_FILES: [&str; 5] = [
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

const PICKLE_HELP: &str = "pickle files (.ckpt, .pt, .pth, .bin) can run arbitrary code when loaded, so the converter never \
opens them. Get the model as .safetensors instead: most model pages offer one; or convert it yourself, in an \
environment you are willing to trust with that file, with diffusers \
(StableDiffusionPipeline.from_single_file(\"model.ckpt\").save_pretrained(\"folder\", safe_serialization=True)) \
or the safetensors library";

/// The most values one input tensor may have: SD 2's token embedding, the largest tensor of
/// SD 1.x / 2.x, has 50.6 M. The converter holds a tensor's values as f32, so a crafted
/// header announcing more is refused before anything is allocated (in the browser an
/// allocation failure would end the WebAssembly instance).
pub const MAX_TENSOR_VALUES: usize = 1 << 27;

/// The lowercase extension of a file name or path (`None` for `.hidden` or no dot).
fn extension(name: &str) -> Option<String> {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Refuses pickle files (`.ckpt`, `.pt`, `.pth`, `.bin`, `.pkl`) by the extension of `name`,
/// with what to do instead: [`Error::BadInput`].
pub fn refuse_pickle(name: &str) -> Result<(), Error> {
    if matches!(
        extension(name).as_deref(),
        Some("ckpt" | "pt" | "pth" | "bin" | "pkl")
    ) {
        return Err(Error::BadInput(format!("{name}: refused: {PICKLE_HELP}")));
    }
    Ok(())
}

/// Refuses a single file whose name does not end in `.safetensors`: [`Error::BadInput`].
pub fn expect_safetensors(name: &str) -> Result<(), Error> {
    if extension(name).as_deref() != Some("safetensors") {
        return Err(Error::BadInput(format!(
            "{name}: expected a diffusers folder or a .safetensors checkpoint"
        )));
    }
    Ok(())
}

/// The length of a safetensors header, from the file's first 8 bytes (`first`, fewer when the
/// file is shorter) and its size: the caller then reads `8 + length` bytes for
/// [`st::parse_header`]. [`Error::BadWeights`] naming `name` for a file that is not one.
pub fn header_len(first: &[u8], file_len: u64, name: &str) -> Result<u64, Error> {
    let len: [u8; 8] = first
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Error::BadWeights(format!(
                "{name}: shorter than a safetensors header: not a safetensors file"
            ))
        })?;
    let header_len = u64::from_le_bytes(len);
    if header_len > st::MAX_HEADER_BYTES || header_len + 8 > file_len {
        return Err(Error::BadWeights(format!(
            "{name}: declares a {header_len}-byte header in a {file_len}-byte file: not a safetensors file, or truncated"
        )));
    }
    Ok(header_len)
}

impl Input {
    /// Adds the tensors of a safetensors file labelled `name` that `pick` maps, each to
    /// (component, diffusers name, shape, byte offset and length inside the stored tensor). A
    /// tensor mapped to nothing is never read, whatever its dtype; a mapped one must be stored
    /// as a float that [`st::to_f32`] reads, else it is an error naming the tensor and its dtype.
    pub fn add_file(
        &mut self,
        name: &str,
        header: &Header,
        mut pick: impl FnMut(&str, &st::TensorInfo) -> Vec<(&'static str, String, Vec<usize>, u64, u64)>,
    ) -> Result<(), Error> {
        let file = self.files.len();
        self.files.push(name.to_string());
        for (tensor, info) in &header.tensors {
            let mapped = pick(tensor, info);
            if !mapped.is_empty() && !info.dtype.is_readable_float() {
                return Err(st::unreadable(name, tensor, info.dtype));
            }
            let values = info.shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
            if !mapped.is_empty() && values.is_none_or(|n| n > MAX_TENSOR_VALUES) {
                return Err(Error::BadWeights(format!(
                    "{name}: tensor `{tensor}` has shape {:?}, over the {MAX_TENSOR_VALUES} values one tensor may have \
                     (Stable Diffusion's largest has 50.6 M): not an SD 1.x / 2.x checkpoint, or a damaged one",
                    info.shape
                )));
            }
            for (component, new_name, shape, rel_start, len) in mapped {
                self.tensors.push(InputTensor {
                    component,
                    name: new_name,
                    shape,
                    dtype: info.dtype,
                    file,
                    start: (header.data_start + info.start) as u64 + rel_start,
                    len,
                });
            }
        }
        Ok(())
    }

    /// Checks names are unique per component.
    pub fn check_unique(&self) -> Result<(), Error> {
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.tensors {
            if !seen.insert((t.component, t.name.as_str())) {
                return Err(Error::BadWeights(format!(
                    "tensor {}/{} appears twice in the input",
                    t.component, t.name
                )));
            }
        }
        Ok(())
    }

    /// A diffusers folder's model, before its weights: the configs (the five of
    /// [`REQUIRED_CONFIGS`](crate::format::REQUIRED_CONFIGS), parsed) and tokenizer files by
    /// path, checked by [`check_folder_files`]; `what` names the folder. Add each component's
    /// weights with [`Input::add_diffusers_weights`].
    pub fn diffusers(
        configs: BTreeMap<String, Value>,
        tokenizer: BTreeMap<String, Vec<u8>>,
        what: &str,
    ) -> Result<Input, Error> {
        check_folder_files(&configs, &tokenizer, what)?;
        let family = family(&configs)?;
        Ok(Input {
            files: vec![],
            tensors: vec![],
            configs,
            tokenizer,
            family,
            notes: vec![],
        })
    }

    /// Adds a diffusers component's safetensors file (`component`: `text_encoder`, `unet` or
    /// `vae`), labelled `name`: every float tensor under its own name (text encoder names get
    /// transformers 4's `text_model.` prefix); integer tensors are skipped, with a note unless
    /// they are CLIP's `position_ids`.
    pub fn add_diffusers_weights(
        &mut self,
        component: &'static str,
        name: &str,
        header: &Header,
    ) -> Result<(), Error> {
        let mut skipped = Vec::new();
        self.add_file(name, header, |tensor, info| {
            // Integer tensors are buffers (CLIP's position_ids), not weights.
            if info.dtype.is_integer() {
                if !tensor.ends_with("position_ids") {
                    skipped.push(format!(
                        "{component}: skipped `{tensor}`, stored as {}: integers are not weights",
                        info.dtype.name()
                    ));
                }
                return vec![];
            }
            // One canonical text encoder naming: transformers 4's `text_model.` prefix.
            let tensor = if component == "text_encoder" && !tensor.starts_with("text_model.") {
                format!("text_model.{tensor}")
            } else {
                tensor.to_string()
            };
            vec![(
                component,
                tensor,
                info.shape.clone(),
                0,
                (info.end - info.start) as u64,
            )]
        })?;
        self.notes.extend(skipped);
        Ok(())
    }
}

/// Widens a whole number of tensor `t`'s stored values (`raw`, little-endian) to f32,
/// appending them to `values`; `file` labels its file in the error for a dtype
/// [`st::to_f32`] does not read.
pub fn read_values(
    raw: &[u8],
    t: &InputTensor,
    file: &str,
    values: &mut Vec<f32>,
) -> Result<(), Error> {
    if !st::extend_f32(t.dtype, raw, values) {
        return Err(st::unreadable(file, &t.name, t.dtype));
    }
    Ok(())
}

/// Refuses NaN and infinities in tensor `t`'s values: [`Error::BadWeights`] naming `file` and
/// the tensor.
pub fn check_finite(values: &[f32], t: &InputTensor, file: &str) -> Result<(), Error> {
    if values.iter().any(|v| !v.is_finite()) {
        let beyond = if t.dtype == st::Dtype::F64 {
            " (or F64 values beyond f32's range)"
        } else {
            ""
        };
        return Err(Error::BadWeights(format!(
            "{file}: tensor {}/{} holds NaN or infinite values{beyond}: the checkpoint is broken; get a good copy",
            t.component, t.name
        )));
    }
    Ok(())
}

/// The family the manifest records: [`crate::model_info::ModelInfo::family`], from the
/// configs (already checked by [`check_configs`]).
pub fn family(configs: &BTreeMap<String, Value>) -> Result<String, Error> {
    Ok(crate::model_info::ModelInfo::from_configs(configs)?.family)
}

/// Checks that each config parses as the loader will parse it; `what` names where they come
/// from. Every path of [`REQUIRED_CONFIGS`](crate::format::REQUIRED_CONFIGS) must be present.
pub fn check_configs(configs: &BTreeMap<String, Value>, what: &str) -> Result<(), Error> {
    let get = |p: &str| {
        configs
            .get(p)
            .map(Value::to_string)
            .ok_or_else(|| Error::BadConfig(format!("{what}/{p} is missing")))
    };
    fn wrap<'a>(what: &'a str, p: &'a str) -> impl Fn(Error) -> Error + 'a {
        move |e: Error| Error::BadConfig(format!("{what}/{p}: {e}"))
    }
    crate::clip::ClipTextConfig::from_json(&get("text_encoder/config.json")?)
        .map_err(wrap(what, "text_encoder/config.json"))?;
    crate::unet::UNet2DConditionConfig::from_json(&get("unet/config.json")?)
        .map_err(wrap(what, "unet/config.json"))?;
    crate::vae::AutoencoderKLConfig::from_json(&get("vae/config.json")?)
        .map_err(wrap(what, "vae/config.json"))?;
    crate::scheduler::SchedulerConfig::from_json(&get("scheduler/scheduler_config.json")?)
        .map_err(wrap(what, "scheduler/scheduler_config.json"))?;
    get("model_index.json")?;
    Ok(())
}

/// Checks a diffusers folder's configs ([`check_configs`]) and that its tokenizer files (by
/// path, `tokenizer/vocab.json`) hold vocab.json + merges.txt or tokenizer.json; `what`
/// names the folder.
pub fn check_folder_files(
    configs: &BTreeMap<String, Value>,
    tokenizer: &BTreeMap<String, Vec<u8>>,
    what: &str,
) -> Result<(), Error> {
    check_configs(configs, what)?;
    let has = |n: &str| tokenizer.contains_key(&format!("tokenizer/{n}"));
    let bpe = has("vocab.json") && has("merges.txt");
    if !bpe && !has("tokenizer.json") {
        return Err(Error::Tokenizer(format!(
            "{what}: no tokenizer/vocab.json + merges.txt or tokenizer/tokenizer.json"
        )));
    }
    Ok(())
}

/// The components of a diffusers folder that hold weights, each with its file's stem
/// (`unet/diffusion_pytorch_model.safetensors`).
pub const WEIGHT_FILES: [(&str, &str); 3] = [
    ("text_encoder", "model"),
    ("unet", "diffusion_pytorch_model"),
    ("vae", "diffusion_pytorch_model"),
];

/// Reads a diffusers folder's configs (the five of
/// [`REQUIRED_CONFIGS`](crate::format::REQUIRED_CONFIGS), parsed) and tokenizer files (those
/// of [`TOKENIZER_FILES`] it has) by path, through `read(path)` (`Ok(None)`: no such file);
/// `what` names the folder in messages. Errors: [`Error::Io`] for a missing config (with the
/// layout a folder must have), [`Error::BadConfig`] for one that is not JSON, and what `read`
/// returns. For [`Input::diffusers`].
pub fn folder_files(
    mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>, Error>,
    what: &str,
) -> Result<(BTreeMap<String, Value>, BTreeMap<String, Vec<u8>>), Error> {
    let mut configs = BTreeMap::new();
    for path in crate::format::REQUIRED_CONFIGS {
        let bytes = read(path)?.ok_or_else(|| {
            Error::Io(format!(
                "{what}/{path} is missing: {}",
                crate::model::FOLDER_LAYOUT
            ))
        })?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadConfig(format!("{what}/{path}: not valid JSON: {e}")))?;
        configs.insert(path.to_string(), value);
    }
    let mut tokenizer = BTreeMap::new();
    for name in TOKENIZER_FILES {
        let path = format!("tokenizer/{name}");
        if let Some(bytes) = read(&path)? {
            tokenizer.insert(path, bytes);
        }
    }
    Ok((configs, tokenizer))
}

/// The path of `component`'s weights in a diffusers folder (`unet/diffusion_pytorch_model
/// .safetensors`, else its `.fp16.safetensors`), given which paths the folder has (`has`);
/// `what` names the folder. Errors: sharded weights, pickle files (refused with why, see
/// [`refuse_pickle`]) and a missing file ([`Error::Io`], with the layout a folder must have).
pub fn weights_path(
    component: &str,
    has: impl Fn(&str) -> bool,
    what: &str,
) -> Result<String, Error> {
    let stem = WEIGHT_FILES
        .iter()
        .find(|(c, _)| *c == component)
        .map(|(_, stem)| *stem)
        .ok_or_else(|| Error::BadInput(format!("{component} is not a component with weights")))?;
    let found = [
        format!("{component}/{stem}.safetensors"),
        format!("{component}/{stem}.fp16.safetensors"),
    ]
    .into_iter()
    .find(|p| has(p));
    if let Some(path) = found {
        return Ok(path);
    }
    if has(&format!("{component}/{stem}.safetensors.index.json")) {
        return Err(Error::BadInput(format!(
            "{what}/{component}: sharded weights ({stem}.safetensors.index.json) are not supported; save the model \
             unsharded (save_pretrained(..., max_shard_size=\"10GB\"))"
        )));
    }
    for pickle in [format!("{stem}.bin"), format!("{stem}.ckpt")] {
        let path = format!("{component}/{pickle}");
        if has(&path) {
            refuse_pickle(&format!("{what}/{path}"))?;
        }
    }
    Err(Error::Io(format!(
        "{what}/{component}/{stem}.safetensors is missing: {}",
        crate::model::FOLDER_LAYOUT
    )))
}
