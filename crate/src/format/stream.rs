//! Loading a converted model chunk by chunk, weights going to the device as each chunk
//! arrives: the host holds one chunk and one decoded tensor part at a time, never the
//! model. This is how the browser loads (chunks come from the network or IndexedDB, in any
//! order); natively `StableDiffusion::load` feeds it from a directory.
//!
//! ```text
//! let mut load = StreamingLoader::new(manifest, &device)?;
//! load.add_file("tokenizer/vocab.json", bytes)?;   // each of manifest.files
//! load.add_chunk(i, &chunk_bytes)?;                // each of manifest.chunks, any order
//! let files = load.finish()?;                      // the model's files, weights on the device
//! let model = StableDiffusion::load(&files, &device, LoadOptions::default())?;
//! ```
//!
//! Each tensor part is uploaded in blocks of whole rows, each at most [`BLOCK_BYTES`] once
//! expanded to f32, so no device buffer exceeds the browser's limit even when a layer
//! expands its weight. On GPUs q8 and q4 parts go up as stored (burn `QFloat` tensors, see
//! [`super::quant::burn_data`]): the device holds 8 or 4 bits per weight and matmuls
//! dequantize in the kernel. On the CPU backend they are expanded to f32 on upload, which
//! its matmul runs ~3.5× faster than q8 (the built-in model in Chromium: 37 against 131 ms a
//! step), unless the expanded weights would pass [`CPU_WEIGHT_BYTES`]: then q8 parts stay
//! quantized (the only width burn's CPU matmul gets right, see
//! [`crate::device::keeps_quantized`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use burn::tensor::{Tensor, TensorData};

use super::{Manifest, sha256_hex};
use crate::files::ModelFiles;
use crate::weights::WeightSource;
use crate::{Device, Error};

/// The largest block of one weight uploaded at once, in f32 bytes. Small enough that the
/// host's peak while loading (one chunk, one expanded block and burn's copy of it) stays
/// far below the 256 MiB wasm heap budget; big enough that few layers need several blocks.
pub const BLOCK_BYTES: usize = 32 << 20;

/// The most weight bytes the CPU backend expands a model to, and in the browser the most it
/// takes on at all: WebAssembly has 4 GiB of memory, and a generation needs room beside the
/// weights (activations, a chunk being read).
pub const CPU_WEIGHT_BYTES: u64 = 3 << 30;

/// One tensor on the device: its shape and, per stored part, its row blocks
/// `[rows, inner]` once arrived.
struct DeviceTensor {
    shape: Vec<usize>,
    parts: Vec<Option<Vec<Tensor<2>>>>,
}

/// Takes a converted model's manifest, files and chunks, uploading the weights as they
/// come, and gives the model's files ([`StreamedFiles`]) to build it from.
pub struct StreamingLoader {
    manifest: Manifest,
    device: Device,
    block_bytes: usize,
    keep_quantized: bool,
    /// Whether the device computes in f16 (shader-f16): quantization scales and f16
    /// tables then stay f16 on it.
    f16: bool,
    files: BTreeMap<String, Vec<u8>>,
    tensors: HashMap<String, DeviceTensor>,
    chunks_added: Vec<bool>,
}

/// What a model's weights take on the CPU backend: with `keep_q8`, q8 at a byte and an f16
/// scale per 32 values; everything else as f32.
fn cpu_weight_bytes(manifest: &Manifest, keep_q8: bool) -> u64 {
    let cpu = crate::device::cpu();
    manifest
        .tensors
        .iter()
        .map(|t| {
            let n = t.numel() as u64;
            let bits = t.dtype.bits();
            if keep_q8 && t.dtype.is_quantized() && crate::device::keeps_quantized(&cpu, bits) {
                n * u64::from(bits) / 8 + n / 32 * 2
            } else {
                n * 4
            }
        })
        .sum()
}

/// Refuses a model whose weights would take more than `limit` bytes on the CPU backend even
/// with q8 kept quantized, with what to do: a q8 copy, or the GPU engine. A
/// [`Error::BadInput`], not an out-of-memory error: nothing ran out, the model does not fit
/// the engine (a GPU's out-of-memory advice — smaller images, q4 — would mislead here).
pub fn fits_the_cpu_engine(manifest: &Manifest, limit: u64) -> Result<(), Error> {
    let bytes = cpu_weight_bytes(manifest, true);
    if bytes <= limit {
        return Ok(());
    }
    let gb = |b: u64| b as f64 / 1e9;
    Err(Error::BadInput(format!(
        "this model is too big for the CPU engine: its weights take {:.1} GB there (only q8 \
         weights stay quantized on the CPU; this model is {}), more than the {:.1} GB \
         WebAssembly can hold beside a generation. Use a q8 copy (import or convert it again \
         at q8: `sd-weights convert --quant q8`), or a GPU (the WebGPU engine)",
        gb(bytes),
        manifest.quantization.name(),
        gb(limit)
    )))
}

impl StreamingLoader {
    /// Fails when the manifest is not [valid](Manifest::validate): everything after relies on it.
    pub fn new(manifest: Manifest, device: &Device) -> Result<Self, Error> {
        Self::with_block_bytes(manifest, device, BLOCK_BYTES)
    }

    /// [`Self::new`] with another upload block size than [`BLOCK_BYTES`] (for tests: small
    /// blocks exercise the joining of blocks).
    pub fn with_block_bytes(
        manifest: Manifest,
        device: &Device,
        block_bytes: usize,
    ) -> Result<Self, Error> {
        manifest.validate()?;
        let on_cpu = *device == crate::device::cpu();
        let keep_quantized = !on_cpu || cpu_weight_bytes(&manifest, false) > CPU_WEIGHT_BYTES;
        if cfg!(target_arch = "wasm32") && on_cpu {
            fits_the_cpu_engine(&manifest, CPU_WEIGHT_BYTES)?;
        }
        let tensors = manifest
            .tensors
            .iter()
            .map(|t| {
                (
                    t.full_name(),
                    DeviceTensor {
                        shape: t.shape.clone(),
                        parts: vec![None; t.parts().len()],
                    },
                )
            })
            .collect();
        let chunks_added = vec![false; manifest.chunks.len()];
        let loader = StreamingLoader {
            manifest,
            device: device.clone(),
            block_bytes,
            keep_quantized: false,
            f16: false,
            files: BTreeMap::new(),
            tensors,
            chunks_added,
        };
        Ok(loader.keep_quantized(keep_quantized))
    }

    /// Whether q8 / q4 weights stay quantized on the device, where it can
    /// ([`crate::device::keeps_quantized`]), or are expanded to f32 on upload (faster layers,
    /// 4–8× the memory). The default: kept on GPUs; on the CPU expanded unless that passes
    /// [`CPU_WEIGHT_BYTES`].
    pub fn keep_quantized(mut self, keep: bool) -> Self {
        self.keep_quantized = keep;
        self.f16 = keep && self.device.supports_dtype(burn::tensor::DType::F16);
        self
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// A file listed in the manifest's `files` (the tokenizer's), checked against its size
    /// and sha256.
    pub fn add_file(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), Error> {
        let entry = self
            .manifest
            .files
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| Error::BadInput(format!("{path} is not a file of this model")))?;
        if bytes.len() as u64 != entry.size || sha256_hex(&bytes) != entry.sha256 {
            return Err(Error::BadWeights(format!(
                "{path} does not match its size and sha256 in the manifest: download it again, or convert the model again"
            )));
        }
        self.files.insert(path.to_string(), bytes);
        Ok(())
    }

    /// Chunk `index` of the manifest: checked against its size and sha256, then every tensor
    /// part stored in it is decoded and uploaded.
    pub fn add_chunk(&mut self, index: usize, bytes: &[u8]) -> Result<(), Error> {
        let entry = self.manifest.chunks.get(index).ok_or_else(|| {
            Error::BadInput(format!(
                "chunk {index} does not exist ({} chunks)",
                self.manifest.chunks.len()
            ))
        })?;
        if bytes.len() as u64 != entry.size || sha256_hex(bytes) != entry.sha256 {
            return Err(Error::BadWeights(format!(
                "chunk {} does not match its size and sha256 in the manifest: it is corrupted; download it again, or convert the model again",
                entry.path
            )));
        }
        for t in &self.manifest.tensors {
            let inner = t.numel() / t.shape.first().copied().unwrap_or(1).max(1);
            for (p, part) in t
                .parts()
                .iter()
                .enumerate()
                .filter(|(_, part)| part.chunk == index)
            {
                let start = part.offset as usize;
                let stored = &bytes[start..start + part.length as usize]; // in range: the manifest was validated
                let blocks = self
                    .upload(t.dtype, stored, part.rows, inner)
                    .map_err(|e| Error::BadWeights(format!("tensor {}: {e}", t.full_name())))?;
                let slot = self
                    .tensors
                    .get_mut(&t.full_name())
                    .expect("every tensor has a slot");
                slot.parts[p] = Some(blocks);
            }
        }
        self.chunks_added[index] = true;
        Ok(())
    }

    /// One stored part of `rows` rows as device row blocks, decoded (where it is) one block
    /// at a time.
    fn upload(
        &self,
        dtype: super::Dtype,
        stored: &[u8],
        rows: usize,
        inner: usize,
    ) -> Result<Vec<Tensor<2>>, Error> {
        let inner = inner.max(1);
        let rows_per_block = (self.block_bytes / (4 * inner)).max(1);
        let keep = self.keep_quantized
            && dtype.is_quantized()
            && crate::device::keeps_quantized(&self.device, dtype.bits());
        (0..rows)
            .step_by(rows_per_block)
            .map(|r| {
                let block = r..(r + rows_per_block).min(rows);
                let data = if keep {
                    super::quant::burn_data(dtype, stored, rows, inner, block, self.f16)?
                } else if dtype == super::Dtype::F16 && self.f16 {
                    // Kept f16: tables read row by row (embeddings) stay so; layers widen
                    // their weights to f32 when built (see `VarBuilder`).
                    let size = inner * 2;
                    let bytes = stored[block.start * size..block.end * size].to_vec();
                    TensorData::from_bytes_vec(
                        bytes,
                        [block.len(), inner],
                        burn::tensor::DType::F16,
                    )
                } else {
                    let n = block.len();
                    TensorData::new(
                        super::decode_rows(dtype, stored, rows, inner, block)?,
                        [n, inner],
                    )
                };
                let dtype = data.dtype(); // kept as stored: burn would widen f16 to its default f32
                let tensor = Tensor::<2>::from_data(data, (&self.device, dtype));
                // Hand the upload to the GPU now: queued, host copies of a big tensor's
                // blocks would pile up until the next submit.
                self.device
                    .flush()
                    .map_err(|e| Error::Gpu(format!("uploading weights: {e:?}")))?;
                Ok(tensor)
            })
            .collect()
    }

    /// The chunk and file paths not added yet.
    pub fn missing(&self) -> Vec<String> {
        let chunks = self
            .manifest
            .chunks
            .iter()
            .zip(&self.chunks_added)
            .filter(|(_, added)| !**added)
            .map(|(c, _)| c.path.clone());
        let files = self
            .manifest
            .files
            .iter()
            .filter(|f| !self.files.contains_key(&f.path))
            .map(|f| f.path.clone());
        chunks.chain(files).collect()
    }

    /// The model's files and its weights on the device, once every chunk and file is in
    /// (else an error naming what is missing). Whether each tensor is there with its shape
    /// is checked when the model is built from them.
    pub fn finish(self) -> Result<StreamedFiles, Error> {
        let missing = self.missing();
        if !missing.is_empty() {
            return Err(Error::BadInput(format!(
                "the model is incomplete: {} not loaded yet",
                missing.join(", ")
            )));
        }
        let mut components: HashMap<String, HashMap<String, DeviceTensor>> = HashMap::new();
        for (full, tensor) in self.tensors {
            let (component, name) = full.split_once('/').expect("full names are component/name");
            components
                .entry(component.to_string())
                .or_default()
                .insert(name.to_string(), tensor);
        }
        Ok(StreamedFiles {
            manifest: self.manifest,
            files: self.files,
            components: Mutex::new(components),
        })
    }
}

/// Loads a converted model directory natively the way the browser does: chunk by chunk,
/// each checked against its sha256, weights kept quantized as [`StreamingLoader`] keeps them
/// by default unless `keep_quantized` is false. The host holds one chunk at a time.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn load_dir(
    dir: &std::path::Path,
    device: &Device,
    keep_quantized: bool,
) -> Result<StreamedFiles, Error> {
    let model = super::source::ConvertedModel::open(dir)?; // validates the manifest, checks chunk sizes
    let manifest = model.manifest().clone();
    let read = |path: &str| {
        let file = dir.join(path);
        std::fs::read(&file).map_err(|e| {
            Error::Io(format!(
                "cannot read {}: {e}; the model is incomplete: download or convert it again",
                file.display()
            ))
        })
    };
    let mut load = StreamingLoader::new(manifest.clone(), device)?;
    if !keep_quantized {
        load = load.keep_quantized(false);
    }
    for f in &manifest.files {
        load.add_file(&f.path, read(&f.path)?)?;
    }
    for (i, chunk) in manifest.chunks.iter().enumerate() {
        load.add_chunk(i, &read(&chunk.path)?)?;
    }
    load.finish()
}

/// A streamed model's files, its configs from the manifest and its weights already on the
/// device, as `StableDiffusion::load` reads them ([`ModelFiles`]). Each component's weights
/// can be taken once: building the model moves them out.
pub struct StreamedFiles {
    manifest: Manifest,
    files: BTreeMap<String, Vec<u8>>,
    components: Mutex<HashMap<String, HashMap<String, DeviceTensor>>>,
}

impl ModelFiles for StreamedFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        if let Some(config) = self.manifest.configs.get(path) {
            return Ok(Some(
                serde_json::to_vec_pretty(config).expect("JSON values serialize"),
            ));
        }
        Ok(self.files.get(path).cloned())
    }

    fn weights(&self, component: &str) -> Result<Option<Arc<dyn WeightSource>>, Error> {
        let tensors = self
            .components
            .lock()
            .map_err(|_| Error::Gpu("weights lock poisoned".into()))?
            .remove(component)
            .unwrap_or_default();
        Ok(Some(Arc::new(DeviceWeights { tensors })))
    }
}

/// One component's weights, already on the device.
struct DeviceWeights {
    tensors: HashMap<String, DeviceTensor>,
}

impl WeightSource for DeviceWeights {
    fn get(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>, Error> {
        // Host copies are never kept; every module loads through `device_blocks`.
        if !self.tensors.contains_key(name) {
            return Ok(None);
        }
        Err(Error::BadWeights(format!(
            "tensor `{name}`: streamed weights live on the GPU only"
        )))
    }

    fn contains(&self, name: &str) -> Result<bool, Error> {
        Ok(self.tensors.contains_key(name))
    }

    fn device_blocks(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<Tensor<2>>)>, Error> {
        let Some(t) = self.tensors.get(name) else {
            return Ok(None);
        };
        let blocks = t.parts.iter().flatten().flatten().cloned().collect();
        Ok(Some((t.shape.clone(), blocks)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_engine_refuses_weights_past_its_limit() {
        let text = include_str!("../../../tests/fixtures/converted/sd15-tiny-q8/manifest.json");
        let q8 = Manifest::from_json(text).unwrap();
        // q8 kept: a byte per weight and an f16 scale per 32; the rest as f32.
        let want: u64 = q8
            .tensors
            .iter()
            .map(|t| match t.dtype {
                super::super::Dtype::Q8 => t.numel() as u64 + t.numel() as u64 / 32 * 2,
                _ => t.numel() as u64 * 4,
            })
            .sum();
        assert!(fits_the_cpu_engine(&q8, want).is_ok());
        let err = fits_the_cpu_engine(&q8, want - 1).unwrap_err();
        assert!(matches!(err, Error::BadInput(_)), "{err}");
        assert!(err.to_string().contains("at q8"), "{err}");
        // Small enough to expand: expanded by default on the CPU, kept on request.
        assert!(cpu_weight_bytes(&q8, false) < CPU_WEIGHT_BYTES);
    }
}
