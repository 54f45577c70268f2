//! The file-system side of `convert`: finds and reads a diffusers folder's or a single file's
//! configs, tokenizer and safetensors headers, for [`sd_webgpu::convert`] to plan from. Only
//! headers are read up front; tensor bytes are read as the converter asks for them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sd_webgpu::Error;
use sd_webgpu::convert::ldm::{self, Configs};
use sd_webgpu::convert::{Input, Range, header_len, input};
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

/// Configs by path, and tokenizer files by path.
pub type FolderFiles = (BTreeMap<String, Value>, BTreeMap<String, Vec<u8>>);

/// Configs and tokenizer files of a diffusers folder (checked by the crate).
pub fn folder_files(dir: &Path) -> Result<FolderFiles, Error> {
    input::folder_files(
        |path| {
            let full = dir.join(path);
            if !full.is_file() {
                return Ok(None);
            }
            std::fs::read(&full)
                .map(Some)
                .map_err(|e| Error::Io(format!("cannot read {}: {e}", full.display())))
        },
        &label(dir),
    )
}

/// A diffusers folder (safetensors weights), with the paths of its weight files.
pub fn diffusers_folder(dir: &Path) -> Result<(Input, Vec<PathBuf>), Error> {
    let (configs, tokenizer) = folder_files(dir)?;
    let mut input = Input::diffusers(configs, tokenizer, &label(dir))?;
    let mut paths = Vec::new();
    for (component, _) in input::WEIGHT_FILES {
        let path = dir.join(input::weights_path(
            component,
            |p| dir.join(p).is_file(),
            &label(dir),
        )?);
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
    ldm::single_file(&name, &header, configs, v_prediction).map_err(|e| {
        if e.to_string().contains(ldm::NEEDS_CONFIGS) {
            e.with_advice("give them with --config FOLDER")
        } else {
            e
        }
    })
}
