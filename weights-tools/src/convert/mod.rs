//! `sd-weights convert`: a diffusers folder or a single-file checkpoint → the chunked format
//! of [`sd_webgpu::format`].
//!
//! The conversion itself is [`sd_webgpu::convert`]'s; this is its file-system driver: it reads
//! headers and then each tensor's bytes as the converter asks (one tensor at a time, so peak
//! memory is about one tensor plus one chunk, whatever the model size) and writes the chunks
//! it hands back. Everything is written into a temporary directory beside the output,
//! `manifest.json` last, and renamed into place at the end: an interrupted or failed convert
//! never leaves a directory that looks like a model.

pub mod files;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use sd_webgpu::Error;
use sd_webgpu::convert::{Chunk, Converter, Input, Range, input};
use sd_webgpu::format::{DEFAULT_CHUNK_BYTES, Dtype, MANIFEST, MAX_CHUNK_BYTES, Manifest};

use crate::progress::Progress;
use files::RangeReader;

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
    input::refuse_pickle(&files::label(&args.input))?;
    let (input, paths) = if args.input.is_dir() {
        if args.prediction_type.is_some() || args.config.is_some() {
            return Err(Error::BadInput(
                "--prediction-type and --config apply to single-file checkpoints; a diffusers folder has its own configs".into(),
            ));
        }
        files::diffusers_folder(&args.input)?
    } else if args.input.is_file() {
        let input = files::single_file(
            &args.input,
            args.config.as_deref(),
            args.prediction_type.map(|p| p == Prediction::VPrediction),
        )?;
        (input, vec![args.input.clone()])
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
    match write_model(input, paths, &tmp, args.quant.dtype(), args.chunk_mb << 20) {
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

/// The most bytes read at once.
const PIECE_BYTES: u64 = 16 << 20;

/// Converts `input` (its safetensors files at `paths`, in [`Input::files`]' order) and writes
/// chunks, tokenizer files and (last) the manifest into `dir`.
pub fn write_model(
    input: Input,
    paths: Vec<PathBuf>,
    dir: &Path,
    want: Dtype,
    chunk_size: u64,
) -> Result<Manifest, Error> {
    let mut converter = Converter::new(input, want, chunk_size)?;
    let mut reader = RangeReader::new(paths);
    let mut progress = Progress::new("converting", converter.total_bytes());
    while let Some(range) = converter.next_range() {
        // In pieces: memory holds a tensor's values, never also all its stored bytes.
        let piece = Range {
            len: range.len.min(PIECE_BYTES),
            ..range
        };
        let bytes = reader.read(piece)?;
        for chunk in converter.push(&bytes)? {
            write_chunk(dir, &chunk)?;
        }
        progress.advance(piece.len);
    }
    progress.finish();
    let done = converter.finish()?;
    for chunk in &done.chunks {
        write_chunk(dir, chunk)?;
    }
    for kept in &done.kept {
        eprintln!("{kept}");
    }
    for (path, bytes) in &done.files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Io(format!("cannot create {}: {e}", full.display())))?;
        }
        std::fs::write(&full, bytes)
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", full.display())))?;
    }
    // Written beside and renamed: a run killed mid-write leaves no half manifest.
    let path = dir.join(MANIFEST);
    let partial = dir.join(format!("{MANIFEST}.partial"));
    let mut file = File::create(&partial)
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", partial.display())))?;
    file.write_all(done.manifest.to_json().as_bytes())
        .and_then(|_| file.sync_all())
        .and_then(|_| std::fs::rename(&partial, &path))
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(done.manifest)
}

/// Writes one finished chunk, synced to disk before the manifest can name it.
fn write_chunk(dir: &Path, chunk: &Chunk) -> Result<(), Error> {
    let path = dir.join(&chunk.path);
    let io = |e: std::io::Error| Error::Io(format!("cannot write {}: {e}", path.display()));
    let mut file = File::create(&path).map_err(io)?;
    file.write_all(&chunk.bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests;
