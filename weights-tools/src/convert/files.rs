//! The file-system side of `convert`: finds and reads a diffusers folder's or a single file's
//! configs, tokenizer and safetensors headers, for [`sd_webgpu::convert`] to plan from. Only
//! headers are read up front; tensor bytes are read as the converter asks for them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sd_webgpu::Error;
use sd_webgpu::convert::input::TOKENIZER_FILES;
use sd_webgpu::convert::ldm::{self, Configs};
use sd_webgpu::convert::{Input, Range, header_len, input};
use sd_webgpu::format::REQUIRED_CONFIGS;
use sd_webgpu::safetensors::{self as st, Header};
use serde_json::Value;

use crate::specs;

/// How files are named in messages.
pub fn label(path: &Path) -> String {
    path.display().to_string()
}

/// Reads a safetensors file's header without reading its data.
pub fn read_header(path: &Path) -> Result<Header, Error> {
    let io = |e: std::io::Error| Error::Io(format!("cannot read {}: {e}", path.display()));
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut bytes = Vec::with_capacity(8);
    (&mut file).take(8).read_to_end(&mut bytes).map_err(io)?;
    let header_len = header_len(&bytes, file_len, &label(path))?;
    bytes.resize(8 + header_len as usize, 0);
    file.read_exact(&mut bytes[8..]).map_err(io)?;
    st::parse_header(&bytes, file_len, &label(path))
}

/// Reads the byte ranges the converter asks for, keeping each file open.
pub struct RangeReader {
    paths: Vec<PathBuf>,
    files: Vec<Option<File>>,
}

impl RangeReader {
    pub fn new(paths: Vec<PathBuf>) -> RangeReader {
        let files = paths.iter().map(|_| None).collect();
        RangeReader { paths, files }
    }

    pub fn read(&mut self, r: Range) -> Result<Vec<u8>, Error> {
        let path = &self.paths[r.file];
        let io = |e: std::io::Error| Error::Io(format!("cannot read {}: {e}", path.display()));
        if self.files[r.file].is_none() {
            self.files[r.file] = Some(File::open(path).map_err(io)?);
        }
        let Some(file) = self.files[r.file].as_mut() else {
            unreachable!("opened above")
        };
        file.seek(SeekFrom::Start(r.start)).map_err(io)?;
        let mut raw = vec![0u8; r.len as usize];
        file.read_exact(&mut raw).map_err(io)?;
        Ok(raw)
    }
}

fn read_json(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::BadConfig(format!("{}: not valid JSON: {e}", path.display())))
}

/// Configs by path, and tokenizer files by path.
pub type FolderFiles = (BTreeMap<String, Value>, BTreeMap<String, Vec<u8>>);

/// Configs and tokenizer files of a diffusers folder (checked by the crate).
pub fn folder_files(dir: &Path) -> Result<FolderFiles, Error> {
    let mut configs = BTreeMap::new();
    for path in REQUIRED_CONFIGS {
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
    let mut tokenizer = BTreeMap::new();
    for name in TOKENIZER_FILES {
        let full = dir.join("tokenizer").join(name);
        if full.is_file() {
            let bytes = std::fs::read(&full)
                .map_err(|e| Error::Io(format!("cannot read {}: {e}", full.display())))?;
            tokenizer.insert(format!("tokenizer/{name}"), bytes);
        }
    }
    Ok((configs, tokenizer))
}

/// A diffusers folder (safetensors weights), with the paths of its weight files.
pub fn diffusers_folder(dir: &Path) -> Result<(Input, Vec<PathBuf>), Error> {
    let (configs, tokenizer) = folder_files(dir)?;
    let mut input = Input::diffusers(configs, tokenizer, &label(dir))?;
    let mut paths = Vec::new();
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
                    input::refuse_pickle(&label(&sub.join(&pickle)))?;
                }
            }
            return Err(Error::Io(format!(
                "{}/{stem}.safetensors is missing: {}",
                sub.display(),
                sd_webgpu::model::FOLDER_LAYOUT
            )));
        };
        let header = read_header(&path)?;
        input.add_diffusers_weights(component, &label(&path), &header)?;
        paths.push(path);
    }
    input.check_unique()?;
    Ok((input, paths))
}

/// A single-file checkpoint, with the built-in configs or those of the `config` folder.
pub fn single_file(
    path: &Path,
    config: Option<&Path>,
    v_prediction: Option<bool>,
) -> Result<Input, Error> {
    let name = label(path);
    input::expect_safetensors(&name)?;
    let header = read_header(path)?;
    // What the header is, checked before the --config folder is read.
    let family = ldm::builtin_family(&name, &header)?;
    let configs = match config {
        Some(dir) => {
            let (configs, tokenizer) = folder_files(dir)?;
            Configs::Folder(configs, tokenizer, label(dir))
        }
        None => Configs::Builtin(specs::single_file_spec(family)?),
    };
    ldm::single_file(&name, &header, configs, v_prediction)
}
