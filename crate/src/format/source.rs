//! A converted model directory on disk, read on the CPU: its files and configs for
//! [`crate::model::StableDiffusion`], and its weights as a [`WeightSource`] that dequantizes
//! to f32. This is the reference the browser's streaming loader is checked against.
//!
//! Opening checks the manifest and that every chunk file has its listed size; the sha256 of
//! chunks is checked by `sd-weights verify` (reading every byte), that of the small tokenizer
//! files on every read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{MANIFEST, Manifest, TensorEntry, read_tensor, sha256_hex};
use crate::Error;
use crate::model::ModelFiles;
use crate::weights::WeightSource;

/// A converted model directory (see [`crate::format`]).
#[derive(Clone)]
pub struct ConvertedModel {
    dir: PathBuf,
    manifest: Arc<Manifest>,
    /// `component/name` → index into `manifest.tensors`.
    index: Arc<HashMap<String, usize>>,
}

impl ConvertedModel {
    /// Whether `dir` holds a converted model (has a `manifest.json`).
    pub fn is_converted(dir: &Path) -> bool {
        dir.join(MANIFEST).is_file()
    }

    /// Opens `dir`: reads and validates the manifest and checks the chunk files' sizes.
    pub fn open(dir: &Path) -> Result<ConvertedModel, Error> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Io(format!(
                "cannot read {}: {e}; a converted model directory holds manifest.json and its chunks (made by sd-weights convert)",
                path.display()
            ))
        })?;
        let manifest = Manifest::from_json(&text).map_err(|e| match e {
            Error::BadWeights(why) => Error::BadWeights(format!("{}: {why}", dir.display())),
            other => other,
        })?;
        for chunk in &manifest.chunks {
            let file = dir.join(&chunk.path);
            let size = std::fs::metadata(&file).map(|m| m.len()).map_err(|e| {
                Error::BadWeights(format!(
                    "chunk {} cannot be read ({e}): the model is incomplete; download or convert it again",
                    file.display()
                ))
            })?;
            if size != chunk.size {
                return Err(Error::BadWeights(format!(
                    "chunk {} has {size} bytes, the manifest lists {}: the file is truncated or corrupted; download or convert it again",
                    file.display(),
                    chunk.size
                )));
            }
        }
        let index = manifest.tensors.iter().enumerate().map(|(i, t)| (t.full_name(), i)).collect();
        Ok(ConvertedModel { dir: dir.to_path_buf(), manifest: Arc::new(manifest), index: Arc::new(index) })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `len` bytes at `offset` of chunk `chunk`.
    fn read_bytes(&self, chunk: usize, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let path = self.dir.join(&self.manifest.chunks[chunk].path);
        let io = |e: std::io::Error| Error::Io(format!("cannot read {}: {e}", path.display()));
        let mut file = File::open(&path).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut bytes = vec![0; len as usize];
        file.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }

    /// A tensor's values as f32 (dequantized), all parts joined.
    pub fn read_tensor(&self, tensor: &TensorEntry) -> Result<Vec<f32>, Error> {
        read_tensor(tensor, |part| self.read_bytes(part.chunk, part.offset, part.length))
    }

    /// The weights of one component (`text_encoder`, `unet`, `vae`), by diffusers name.
    pub fn component(&self, component: &str) -> ComponentWeights {
        ComponentWeights { model: self.clone(), component: component.to_string() }
    }
}

/// One component's weights in a converted model.
pub struct ComponentWeights {
    model: ConvertedModel,
    component: String,
}

impl WeightSource for ComponentWeights {
    fn get(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>, Error> {
        let Some(&i) = self.model.index.get(&format!("{}/{name}", self.component)) else {
            return Ok(None);
        };
        let tensor = &self.model.manifest.tensors[i];
        Ok(Some((tensor.shape.clone(), self.model.read_tensor(tensor)?)))
    }
}

impl ModelFiles for ConvertedModel {
    /// Configs come from the manifest, other files from the directory (checked against their
    /// sha256).
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        if let Some(config) = self.manifest.configs.get(path) {
            return Ok(Some(serde_json::to_vec_pretty(config).expect("JSON values serialize")));
        }
        let Some(entry) = self.manifest.files.iter().find(|f| f.path == path) else {
            return Ok(None);
        };
        let full = self.dir.join(path);
        let bytes = std::fs::read(&full).map_err(|e| Error::Io(format!("cannot read {}: {e}", full.display())))?;
        if bytes.len() as u64 != entry.size || sha256_hex(&bytes) != entry.sha256 {
            return Err(Error::BadWeights(format!(
                "{} does not match its sha256 in the manifest: the file is corrupted; download or convert the model again",
                full.display()
            )));
        }
        Ok(Some(bytes))
    }

    fn describe(&self, path: &str) -> String {
        self.dir.join(path).display().to_string()
    }

    fn weights(&self, component: &str) -> Result<Option<Arc<dyn WeightSource>>, Error> {
        Ok(Some(Arc::new(self.component(component))))
    }
}
