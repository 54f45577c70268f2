//! What `convert` reads: a diffusers folder or a single-file LDM checkpoint, as a list of
//! tensors located in safetensors files. Only headers are read up front; each tensor's bytes
//! are read when it is converted, so memory holds one tensor at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sd_webgpu::Error;
use sd_webgpu::safetensors::{self as st, Header};
use serde_json::Value;

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
    pub files: Vec<PathBuf>,
    pub tensors: Vec<InputTensor>,
    /// Diffusers configs by path (`unet/config.json`).
    pub configs: BTreeMap<String, Value>,
    /// Tokenizer files by path (`tokenizer/vocab.json`).
    pub tokenizer: BTreeMap<String, Vec<u8>>,
    /// `sd1`, `sd2`, `sd1-inpaint`, ...
    pub family: String,
    /// Things the user should know (skipped tensors, assumptions), printed by convert.
    pub notes: Vec<String>,
}

pub const CONFIG_PATHS: [&str; 5] = [
    "model_index.json",
    "text_encoder/config.json",
    "unet/config.json",
    "vae/config.json",
    "scheduler/scheduler_config.json",
];
pub const TOKENIZER_FILES: [&str; 5] = [
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

const PICKLE_HELP: &str = "pickle files (.ckpt, .pt, .pth, .bin) can run arbitrary code when loaded, so sd-weights never \
opens them. Get the model as .safetensors instead: most model pages offer one; or convert it yourself, in an \
environment you are willing to trust with that file, with diffusers \
(StableDiffusionPipeline.from_single_file(\"model.ckpt\").save_pretrained(\"folder\", safe_serialization=True)) \
or the safetensors library";

/// Refuses pickle files by extension, with what to do instead.
pub fn refuse_pickle(path: &Path) -> Result<(), Error> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if matches!(ext.as_deref(), Some("ckpt" | "pt" | "pth" | "bin" | "pkl")) {
        return Err(Error::BadInput(format!(
            "{}: refused: {PICKLE_HELP}",
            path.display()
        )));
    }
    Ok(())
}

/// Reads a safetensors file's header without reading its data.
pub fn read_header(path: &Path) -> Result<Header, Error> {
    let io = |e: std::io::Error| Error::Io(format!("cannot read {}: {e}", path.display()));
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| {
        Error::BadWeights(format!(
            "{}: shorter than a safetensors header: not a safetensors file",
            path.display()
        ))
    })?;
    let header_len = u64::from_le_bytes(len);
    if header_len > st::MAX_HEADER_BYTES || header_len + 8 > file_len {
        return Err(Error::BadWeights(format!(
            "{}: declares a {header_len}-byte header in a {file_len}-byte file: not a safetensors file, or truncated",
            path.display()
        )));
    }
    let mut bytes = len.to_vec();
    bytes.resize(8 + header_len as usize, 0);
    file.read_exact(&mut bytes[8..]).map_err(io)?;
    st::parse_header(&bytes, file_len, &path.display().to_string())
}

impl Input {
    /// Adds the tensors of a safetensors file that `pick` maps, each to (component, diffusers
    /// name, shape, byte offset and length inside the stored tensor). A tensor mapped to
    /// nothing is never read, whatever its dtype; a mapped one must be stored as a float
    /// that [`st::to_f32`] reads, else it is an error naming the tensor and its dtype.
    pub fn add_file(
        &mut self,
        path: &Path,
        header: &Header,
        mut pick: impl FnMut(&str, &st::TensorInfo) -> Vec<(&'static str, String, Vec<usize>, u64, u64)>,
    ) -> Result<(), Error> {
        let file = self.files.len();
        self.files.push(path.to_path_buf());
        for (name, info) in &header.tensors {
            let mapped = pick(name, info);
            if !mapped.is_empty() && !info.dtype.is_readable_float() {
                return Err(st::unreadable(
                    &path.display().to_string(),
                    name,
                    info.dtype,
                ));
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
}

/// Reads the tensor's values as f32, refusing NaN and infinities.
pub fn read_values(
    files: &mut [Option<File>],
    paths: &[PathBuf],
    t: &InputTensor,
) -> Result<Vec<f32>, Error> {
    let path = &paths[t.file];
    let io = |e: std::io::Error| Error::Io(format!("cannot read {}: {e}", path.display()));
    if files[t.file].is_none() {
        files[t.file] = Some(File::open(path).map_err(io)?);
    }
    let file = files[t.file].as_mut().unwrap();
    file.seek(SeekFrom::Start(t.start)).map_err(io)?;
    let mut raw = vec![0u8; t.len as usize];
    file.read_exact(&mut raw).map_err(io)?;
    let values = st::to_f32(t.dtype, &raw)
        .ok_or_else(|| st::unreadable(&path.display().to_string(), &t.name, t.dtype))?;
    if values.iter().any(|v| !v.is_finite()) {
        let beyond = if t.dtype == st::Dtype::F64 {
            " (or F64 values beyond f32's range)"
        } else {
            ""
        };
        return Err(Error::BadWeights(format!(
            "{}: tensor {}/{} holds NaN or infinite values{beyond}: the checkpoint is broken; get a good copy",
            path.display(),
            t.component,
            t.name
        )));
    }
    Ok(values)
}

/// The family the manifest records: [`sd_webgpu::model_info::ModelInfo::family`], from the
/// configs (already checked by [`check_configs`]).
pub fn family(configs: &BTreeMap<String, Value>) -> Result<String, Error> {
    Ok(sd_webgpu::model_info::ModelInfo::from_configs(configs)?.family)
}

fn read_json(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::BadConfig(format!("{}: not valid JSON: {e}", path.display())))
}

/// Checks that each config parses as the loader will parse it.
pub fn check_configs(configs: &BTreeMap<String, Value>, what: &str) -> Result<(), Error> {
    let get = |p: &str| configs[p].to_string();
    fn wrap<'a>(what: &'a str, p: &'a str) -> impl Fn(Error) -> Error + 'a {
        move |e: Error| Error::BadConfig(format!("{what}/{p}: {e}"))
    }
    sd_webgpu::clip::ClipTextConfig::from_json(&get("text_encoder/config.json"))
        .map_err(wrap(what, "text_encoder/config.json"))?;
    sd_webgpu::unet::UNet2DConditionConfig::from_json(&get("unet/config.json"))
        .map_err(wrap(what, "unet/config.json"))?;
    sd_webgpu::vae::AutoencoderKLConfig::from_json(&get("vae/config.json"))
        .map_err(wrap(what, "vae/config.json"))?;
    sd_webgpu::scheduler::SchedulerConfig::from_json(&get("scheduler/scheduler_config.json"))
        .map_err(wrap(what, "scheduler/scheduler_config.json"))?;
    Ok(())
}

/// Configs by path, and tokenizer files by path.
pub type FolderFiles = (BTreeMap<String, Value>, BTreeMap<String, Vec<u8>>);

/// Configs and tokenizer of a diffusers folder.
pub fn folder_files(dir: &Path) -> Result<FolderFiles, Error> {
    let mut configs = BTreeMap::new();
    for path in CONFIG_PATHS {
        let full = dir.join(path);
        if !full.is_file() {
            return Err(Error::Io(format!(
                "{} is missing: {}",
                full.display(),
                sd_webgpu::model::FOLDER_LAYOUT
            )));
        }
        configs.insert(path.to_string(), read_json(&full)?);
    }
    check_configs(&configs, &dir.display().to_string())?;
    let mut tokenizer = BTreeMap::new();
    for name in TOKENIZER_FILES {
        let full = dir.join("tokenizer").join(name);
        if full.is_file() {
            let bytes = std::fs::read(&full)
                .map_err(|e| Error::Io(format!("cannot read {}: {e}", full.display())))?;
            tokenizer.insert(format!("tokenizer/{name}"), bytes);
        }
    }
    let has = |n: &str| tokenizer.contains_key(&format!("tokenizer/{n}"));
    let bpe = has("vocab.json") && has("merges.txt");
    if !bpe && !has("tokenizer.json") {
        return Err(Error::Tokenizer(format!(
            "{}: no tokenizer/vocab.json + merges.txt or tokenizer/tokenizer.json",
            dir.display()
        )));
    }
    Ok((configs, tokenizer))
}

/// A diffusers folder (safetensors weights).
pub fn diffusers_folder(dir: &Path) -> Result<Input, Error> {
    let (configs, tokenizer) = folder_files(dir)?;
    let family = family(&configs)?;
    let mut input = Input {
        files: vec![],
        tensors: vec![],
        configs,
        tokenizer,
        family,
        notes: vec![],
    };
    for (component, stem) in [
        ("text_encoder", "model"),
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
    ] {
        let sub = dir.join(component);
        let path = [
            format!("{stem}.safetensors"),
            format!("{stem}.fp16.safetensors"),
        ]
        .into_iter()
        .map(|f| sub.join(f))
        .find(|p| p.is_file());
        let Some(path) = path else {
            if sub.join(format!("{stem}.safetensors.index.json")).is_file() {
                return Err(Error::BadInput(format!(
                    "{}: sharded weights ({stem}.safetensors.index.json) are not supported; save the model unsharded \
                     (save_pretrained(..., max_shard_size=\"10GB\"))",
                    sub.display()
                )));
            }
            for pickle in [format!("{stem}.bin"), format!("{stem}.ckpt")] {
                if sub.join(&pickle).is_file() {
                    refuse_pickle(&sub.join(&pickle))?;
                }
            }
            return Err(Error::Io(format!(
                "{}/{stem}.safetensors is missing: {}",
                sub.display(),
                sd_webgpu::model::FOLDER_LAYOUT
            )));
        };
        let header = read_header(&path)?;
        let mut skipped = Vec::new();
        input.add_file(&path, &header, |name, info| {
            // Integer tensors are buffers (CLIP's position_ids), not weights.
            if info.dtype.is_integer() {
                if !name.ends_with("position_ids") {
                    skipped.push(format!(
                        "{component}: skipped `{name}`, stored as {}: integers are not weights",
                        info.dtype.name()
                    ));
                }
                return vec![];
            }
            // One canonical text encoder naming: transformers 4's `text_model.` prefix.
            let name = if component == "text_encoder" && !name.starts_with("text_model.") {
                format!("text_model.{name}")
            } else {
                name.to_string()
            };
            vec![(
                component,
                name,
                info.shape.clone(),
                0,
                (info.end - info.start) as u64,
            )]
        })?;
        input.notes.extend(skipped);
    }
    input.check_unique()?;
    Ok(input)
}
