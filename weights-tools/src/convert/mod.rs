//! `sd-weights convert`: a diffusers folder or a single-file checkpoint → the chunked format
//! of [`sd_webgpu::format`].
//!
//! Tensors are streamed: read, encoded and written one at a time, so peak memory is about one
//! tensor plus buffers, whatever the model size. Everything is written into a temporary
//! directory beside the output, `manifest.json` last, and renamed into place at the end:
//! an interrupted or failed convert never leaves a directory that looks like a model.

pub mod encode;
pub mod input;
pub mod ldm;
pub mod policy;
pub mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use sd_webgpu::Error;
use sd_webgpu::format::{
    COMPONENTS, DEFAULT_CHUNK_BYTES, Dtype, FORMAT_NAME, FORMAT_VERSION, FileEntry, MANIFEST,
    MAX_CHUNK_BYTES, MAX_TENSOR_BYTES, Manifest, Part, TensorEntry, sha256_hex,
};

use crate::progress::Progress;
use encode::encode_parallel as encode;
use input::{Input, InputTensor};
use writer::ChunkWriter;

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum Quant {
    F32,
    F16,
    Q8,
    Q4,
}

impl Quant {
    fn dtype(self) -> Dtype {
        match self {
            Quant::F32 => Dtype::F32,
            Quant::F16 => Dtype::F16,
            Quant::Q8 => Dtype::Q8,
            Quant::Q4 => Dtype::Q4,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum Prediction {
    Epsilon,
    #[value(name = "v_prediction", alias = "v-prediction")]
    VPrediction,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// A diffusers folder (safetensors), or a single-file SD 1.x / 2.x .safetensors checkpoint.
    pub input: PathBuf,
    /// The directory to create (must not exist yet).
    pub output: PathBuf,
    /// Precision: f32, f16, q8 (8-bit blocks) or q4 (4-bit blocks). Norms, biases, embeddings
    /// and small tensors stay f16 when quantizing; tensors with values beyond the precision's
    /// range (f16's 65504, or an f16 block scale) stay f32.
    #[arg(long, value_enum, default_value_t = Quant::F16)]
    pub quant: Quant,
    /// Chunk size in MiB (1 to 256): the unit of download and caching.
    #[arg(long, default_value_t = 32)]
    pub chunk_mb: u64,
    /// Single-file input only: the scheduler's prediction type (default: v_prediction for
    /// SD 2.x non-inpainting checkpoints, epsilon otherwise).
    #[arg(long, value_enum)]
    pub prediction_type: Option<Prediction>,
    /// Single-file input only: take configs and tokenizer from this diffusers folder instead
    /// of the built-in SD 1.5 / SD 2.1 ones.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: ConvertArgs) -> Result<(), Error> {
    if !(1..=MAX_CHUNK_BYTES >> 20).contains(&args.chunk_mb) {
        return Err(Error::BadInput(format!(
            "--chunk-mb {}: must be between 1 and {} (default {})",
            args.chunk_mb,
            MAX_CHUNK_BYTES >> 20,
            DEFAULT_CHUNK_BYTES >> 20
        )));
    }
    input::refuse_pickle(&args.input)?;
    let input = if args.input.is_dir() {
        if args.prediction_type.is_some() || args.config.is_some() {
            return Err(Error::BadInput(
                "--prediction-type and --config apply to single-file checkpoints; a diffusers folder has its own configs".into(),
            ));
        }
        input::diffusers_folder(&args.input)?
    } else if args.input.is_file() {
        ldm::single_file(
            &args.input,
            args.config.as_deref(),
            args.prediction_type.map(|p| p == Prediction::VPrediction),
        )?
    } else {
        return Err(Error::Io(format!(
            "{} does not exist: give a diffusers model folder or a .safetensors checkpoint",
            args.input.display()
        )));
    };
    if args.output.exists() {
        return Err(Error::BadInput(format!(
            "{} already exists: choose a new output directory, or delete it first",
            args.output.display()
        )));
    }
    let parent = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::Io(format!(
            "{}: folder {} does not exist",
            args.output.display(),
            parent.display()
        )));
    }
    let file_name = args
        .output
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model");
    let tmp = parent.join(format!(".{file_name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp)
        .map_err(|e| Error::Io(format!("cannot create {}: {e}", tmp.display())))?;
    for note in &input.notes {
        eprintln!("note: {note}");
    }
    match write_model(&input, &tmp, args.quant.dtype(), args.chunk_mb << 20) {
        Ok(manifest) => {
            std::fs::rename(&tmp, &args.output).map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                Error::Io(format!(
                    "cannot rename {} to {}: {e}",
                    tmp.display(),
                    args.output.display()
                ))
            })?;
            let total: u64 = manifest.chunks.iter().map(|c| c.size).sum();
            println!(
                "wrote {}: {} tensors in {} chunks, {:.1} MB",
                args.output.display(),
                manifest.tensors.len(),
                manifest.chunks.len(),
                total as f64 / 1e6
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Writes chunks, tokenizer files and (last) the manifest into `dir`.
pub fn write_model(
    input: &Input,
    dir: &Path,
    want: Dtype,
    chunk_size: u64,
) -> Result<Manifest, Error> {
    let mut order: Vec<&InputTensor> = input.tensors.iter().collect();
    let rank = |c: &str| {
        COMPONENTS
            .iter()
            .position(|x| *x == c)
            .unwrap_or(COMPONENTS.len())
    };
    order.sort_by_key(|t| (rank(t.component), t.file, t.start));

    let mut writer = ChunkWriter::new(dir, chunk_size);
    let mut tensors = Vec::with_capacity(order.len());
    let mut files: Vec<Option<File>> = input.files.iter().map(|_| None).collect();
    let mut reasons: BTreeMap<(&'static str, Dtype), (usize, u64)> = BTreeMap::new();
    let total: u64 = order.iter().map(|t| t.len).sum();
    let mut progress = Progress::new("converting", total);
    for t in order {
        let values = input::read_values(&mut files, &input.files, t)?;
        let (mut dtype, mut reason) = policy::choose(t.component, &t.name, &t.shape, want);
        if let Some((wider, why)) = policy::widen_for_range(dtype, &values) {
            (dtype, reason) = (wider, Some(why));
        }
        if let Some(reason) = reason {
            let entry = reasons.entry((reason, dtype)).or_default();
            entry.0 += 1;
            entry.1 += t.shape.iter().product::<usize>() as u64;
        }
        tensors.push(store(&mut writer, t, dtype, &values, MAX_TENSOR_BYTES)?);
        progress.advance(t.len);
    }
    progress.finish();
    let chunks = writer.finish()?;
    for ((reason, dtype), (count, values)) in &reasons {
        eprintln!(
            "{count} tensors ({:.2} M values) at {} instead of {}: {reason}",
            *values as f64 / 1e6,
            dtype.name(),
            want.name()
        );
    }

    let mut file_entries = Vec::new();
    for (path, bytes) in &input.tokenizer {
        let full = dir.join(path);
        std::fs::create_dir_all(full.parent().unwrap())
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", full.display())))?;
        std::fs::write(&full, bytes)
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", full.display())))?;
        file_entries.push(FileEntry {
            path: path.clone(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        });
    }
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        family: input.family.clone(),
        quantization: want,
        chunk_size,
        configs: input.configs.clone(),
        files: file_entries,
        chunks,
        tensors,
    };
    manifest.validate()?;
    // Written beside and renamed: a run killed mid-write leaves no half manifest.
    let path = dir.join(MANIFEST);
    let partial = dir.join(format!("{MANIFEST}.partial"));
    let mut file = File::create(&partial)
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", partial.display())))?;
    file.write_all(manifest.to_json().as_bytes())
        .and_then(|_| file.sync_all())
        .and_then(|_| std::fs::rename(&partial, &path))
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(manifest)
}

/// Encodes one tensor (split along its first dimension when bigger than `max` bytes, which is
/// [`MAX_TENSOR_BYTES`] but for tests) and writes it.
fn store(
    writer: &mut ChunkWriter,
    t: &InputTensor,
    dtype: Dtype,
    values: &[f32],
    max: u64,
) -> Result<TensorEntry, Error> {
    let rows = t.shape.first().copied().unwrap_or(1).max(1);
    let inner = values.len() / rows;
    let mut entry = TensorEntry {
        component: t.component.to_string(),
        name: t.name.clone(),
        shape: t.shape.clone(),
        dtype,
        chunk: None,
        offset: None,
        length: None,
        parts: None,
    };
    if dtype.stored_len(values.len()) as u64 <= max {
        let bytes = encode(dtype, values)?;
        let (chunk, offset) = writer.add(&bytes)?;
        (entry.chunk, entry.offset, entry.length) =
            (Some(chunk), Some(offset), Some(bytes.len() as u64));
        return Ok(entry);
    }
    let mut per_part = rows;
    while per_part > 1 && dtype.stored_len(per_part * inner) as u64 > max {
        per_part = per_part.div_ceil(2);
    }
    if dtype.stored_len(per_part * inner) as u64 > max {
        return Err(Error::BadWeights(format!(
            "tensor {}/{}: one row of {inner} values is over the {max}-byte limit",
            t.component, t.name
        )));
    }
    let mut parts = Vec::new();
    for start in (0..rows).step_by(per_part) {
        let n = per_part.min(rows - start);
        let bytes = encode(dtype, &values[start * inner..(start + n) * inner])?;
        let (chunk, offset) = writer.add(&bytes)?;
        parts.push(Part {
            rows: n,
            chunk,
            offset,
            length: bytes.len() as u64,
        });
    }
    entry.parts = Some(parts);
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sd_webgpu::format::decode;

    /// A tensor over the size limit is split along its first dimension; parts decode back.
    #[test]
    fn big_tensors_are_split() {
        let dir = std::env::temp_dir().join(format!("sd-weights-split-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let values: Vec<f32> = (0..10 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let t = InputTensor {
            component: "unet",
            name: "w".into(),
            shape: vec![10, 64],
            dtype: sd_webgpu::safetensors::Dtype::F32,
            file: 0,
            start: 0,
            len: 0,
        };
        let mut writer = ChunkWriter::new(&dir, 1 << 20);
        // 3 rows of q8 = 192 values = 204 bytes fit in 250; 4 rows do not.
        let entry = store(&mut writer, &t, Dtype::Q8, &values, 250).unwrap();
        let chunks = writer.finish().unwrap();
        let parts = entry.parts.clone().unwrap();
        assert_eq!(
            parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
        let data = std::fs::read(dir.join(&chunks[0].path)).unwrap();
        let mut back = Vec::new();
        for p in &parts {
            assert_eq!(p.offset % 16, 0);
            back.extend(
                decode(
                    Dtype::Q8,
                    &data[p.offset as usize..(p.offset + p.length) as usize],
                    p.rows * 64,
                )
                .unwrap(),
            );
        }
        assert!(sd_webgpu::format::quant::relative_rms_error(&values, &back) < 0.01);
        let mut writer = ChunkWriter::new(&dir, 1 << 20);
        assert!(
            store(&mut writer, &t, Dtype::F32, &values, 100).is_err(),
            "a row over the limit"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
