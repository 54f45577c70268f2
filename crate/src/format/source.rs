//! A converted model directory on disk, read on the CPU: its files and configs as
//! [`ModelFiles`], and its weights as a [`WeightSource`] that dequantizes
//! to f32. This is the reference the browser's streaming loader is checked against.
//!
//! Opening checks the manifest and that every chunk file has its listed size. A chunk's
//! sha256 is checked when a tensor is first read from it (reading the chunk once more, from
//! the page cache), a tokenizer file's on every read: a corrupted file is an error naming it,
//! never silently wrong weights.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{MANIFEST, MAX_MANIFEST_BYTES, Manifest, TensorEntry, hex, read_tensor, sha256_hex};
use crate::Error;
use crate::files::ModelFiles;
use crate::weights::WeightSource;

/// A converted model directory (see [`crate::format`]).
#[derive(Clone)]
pub struct ConvertedModel {
    dir: PathBuf,
    manifest: Arc<Manifest>,
    /// `component/name` → index into `manifest.tensors`.
    index: Arc<HashMap<String, usize>>,
    /// Per chunk: whether its sha256 was found right (on its first read).
    checked: Arc<Mutex<Vec<bool>>>,
}

/// What to do about a damaged chunk.
const GET_IT_AGAIN: &str = "the model is incomplete or corrupted; download or convert it again";

/// Reads and validates `dir/manifest.json` (at most [`MAX_MANIFEST_BYTES`]); errors name the
/// directory.
pub fn read_manifest(dir: &Path) -> Result<Manifest, Error> {
    let path = dir.join(MANIFEST);
    let cannot = |e: String| {
        Error::Io(format!(
            "cannot read {}: {e}; a converted model directory holds manifest.json and its chunks (made by sd-weights convert)",
            path.display()
        ))
    };
    let size = std::fs::metadata(&path)
        .map_err(|e| cannot(e.to_string()))?
        .len();
    if size > MAX_MANIFEST_BYTES {
        return Err(Error::BadWeights(format!(
            "{} has {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit: not a manifest written by sd-weights convert",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| cannot(e.to_string()))?;
    Manifest::from_json(&text).map_err(|e| match e {
        Error::BadWeights(why) => Error::BadWeights(format!("{}: {why}", dir.display())),
        other => other,
    })
}

/// Size and lowercase hex sha256 of a file, read in 1 MiB pieces.
pub fn file_sha256(path: &Path) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    let mut file = File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hex(&hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

impl ConvertedModel {
    /// Whether `dir` holds a converted model (has a `manifest.json`).
    pub fn is_converted(dir: &Path) -> bool {
        dir.join(MANIFEST).is_file()
    }

    /// Opens `dir`: reads and validates the manifest and checks the chunk files' sizes.
    pub fn open(dir: &Path) -> Result<ConvertedModel, Error> {
        let manifest = read_manifest(dir)?;
        for chunk in &manifest.chunks {
            let file = dir.join(&chunk.path);
            let size = std::fs::metadata(&file).map(|m| m.len()).map_err(|e| {
                Error::BadWeights(format!(
                    "chunk {} cannot be read ({e}): {GET_IT_AGAIN}",
                    file.display()
                ))
            })?;
            if size != chunk.size {
                return Err(Error::BadWeights(format!(
                    "chunk {} has {size} bytes, the manifest lists {}: the file is truncated or corrupted; download or convert the model again",
                    file.display(),
                    chunk.size
                )));
            }
        }
        let index = manifest
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.full_name(), i))
            .collect();
        let checked = Arc::new(Mutex::new(vec![false; manifest.chunks.len()]));
        Ok(ConvertedModel {
            dir: dir.to_path_buf(),
            manifest: Arc::new(manifest),
            index: Arc::new(index),
            checked,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks chunk `chunk`'s size and sha256 against the manifest, once.
    fn check_chunk(&self, chunk: usize) -> Result<(), Error> {
        let mut checked = self
            .checked
            .lock()
            .map_err(|_| Error::Io("chunk check lock poisoned".into()))?;
        if checked[chunk] {
            return Ok(());
        }
        let entry = &self.manifest.chunks[chunk];
        let path = self.dir.join(&entry.path);
        let (size, sha256) = file_sha256(&path).map_err(|e| {
            Error::BadWeights(format!(
                "chunk {} cannot be read ({e}): {GET_IT_AGAIN}",
                path.display()
            ))
        })?;
        if size != entry.size || sha256 != entry.sha256 {
            return Err(Error::BadWeights(format!(
                "chunk {} does not match its size and sha256 in the manifest: {GET_IT_AGAIN}",
                path.display()
            )));
        }
        checked[chunk] = true;
        Ok(())
    }

    /// Reads `len` bytes at `offset` of chunk `chunk` (indices and ranges come from the
    /// validated manifest).
    fn read_bytes(&self, chunk: usize, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.check_chunk(chunk)?;
        let path = self.dir.join(&self.manifest.chunks[chunk].path);
        let io = |e: std::io::Error| {
            Error::BadWeights(format!(
                "chunk {} cannot be read ({e}): {GET_IT_AGAIN}",
                path.display()
            ))
        };
        let mut file = File::open(&path).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut bytes = vec![0; len as usize];
        file.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }

    /// A tensor's values as f32 (dequantized), all parts joined.
    pub fn read_tensor(&self, tensor: &TensorEntry) -> Result<Vec<f32>, Error> {
        read_tensor(tensor, |part| {
            self.read_bytes(part.chunk, part.offset, part.length)
        })
    }

    /// The weights of one component (`text_encoder`, `unet`, `vae`), by diffusers name.
    pub fn component(&self, component: &str) -> ComponentWeights {
        ComponentWeights {
            model: self.clone(),
            component: component.to_string(),
        }
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
        Ok(Some((
            tensor.shape.clone(),
            self.model.read_tensor(tensor)?,
        )))
    }
}

impl ModelFiles for ConvertedModel {
    /// Configs come from the manifest, other files from the directory (checked against their
    /// sha256).
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        if let Some(config) = self.manifest.configs.get(path) {
            return Ok(Some(
                serde_json::to_vec_pretty(config).expect("JSON values serialize"),
            ));
        }
        let Some(entry) = self.manifest.files.iter().find(|f| f.path == path) else {
            return Ok(None);
        };
        let full = self.dir.join(path);
        let mismatch = || {
            Error::BadWeights(format!(
                "{} does not match its size and sha256 in the manifest: the file is corrupted; download or convert the model again",
                full.display()
            ))
        };
        let cannot = |e: std::io::Error| {
            Error::Io(format!(
                "cannot read {}: {e}; {GET_IT_AGAIN}",
                full.display()
            ))
        };
        // The size first: a huge file is never read.
        if std::fs::metadata(&full).map_err(cannot)?.len() != entry.size {
            return Err(mismatch());
        }
        let bytes = std::fs::read(&full).map_err(cannot)?;
        if bytes.len() as u64 != entry.size || sha256_hex(&bytes) != entry.sha256 {
            return Err(mismatch());
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
