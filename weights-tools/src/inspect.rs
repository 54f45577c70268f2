//! `sd-weights inspect DIR` and `sd-weights verify DIR`.

use std::collections::BTreeMap;
use std::path::Path;

use sd_webgpu::Error;
use sd_webgpu::format::source::{file_sha256, read_manifest as load};
use sd_webgpu::format::{COMPONENTS, Dtype, FileEntry};

use crate::progress::Progress;

/// Components, tensor counts and bytes per precision.
pub fn inspect(dir: &Path) -> Result<(), Error> {
    let m = load(dir)?;
    let total: u64 = m.chunks.iter().map(|c| c.size).sum();
    println!(
        "{}: {} v{}, family {}, converted at {}",
        dir.display(),
        m.format,
        m.version,
        m.family,
        m.quantization.name()
    );
    println!(
        "{} chunks of up to {} MiB, {:.1} MB in all; {} other files",
        m.chunks.len(),
        m.chunk_size >> 20,
        total as f64 / 1e6,
        m.files.len()
    );
    println!();
    println!(
        "{:<14}{:>8}{:>12}  bytes by precision",
        "component", "tensors", "params"
    );
    let mut all: BTreeMap<Dtype, (usize, u64)> = BTreeMap::new();
    for component in COMPONENTS {
        let tensors: Vec<_> = m
            .tensors
            .iter()
            .filter(|t| t.component == component)
            .collect();
        let params: usize = tensors.iter().map(|t| t.numel()).sum();
        let mut by: BTreeMap<Dtype, (usize, u64)> = BTreeMap::new();
        for t in &tensors {
            let e = by.entry(t.dtype).or_default();
            e.0 += 1;
            e.1 += t.stored_bytes();
            let a = all.entry(t.dtype).or_default();
            a.0 += 1;
            a.1 += t.stored_bytes();
        }
        let detail: Vec<String> = by
            .iter()
            .map(|(d, (n, b))| format!("{}: {n} tensors {:.1} MB", d.name(), *b as f64 / 1e6))
            .collect();
        println!(
            "{component:<14}{:>8}{:>11.1}M  {}",
            tensors.len(),
            params as f64 / 1e6,
            detail.join(", ")
        );
    }
    let detail: Vec<String> = all
        .iter()
        .map(|(d, (n, b))| format!("{}: {n} tensors {:.1} MB", d.name(), *b as f64 / 1e6))
        .collect();
    let params: usize = m.tensors.iter().map(|t| t.numel()).sum();
    println!(
        "{:<14}{:>8}{:>11.1}M  {}",
        "total",
        m.tensors.len(),
        params as f64 / 1e6,
        detail.join(", ")
    );
    Ok(())
}

fn check_file(dir: &Path, entry: &FileEntry, what: &str) -> Result<u64, Error> {
    let path = dir.join(&entry.path);
    let bad = |why: String| {
        Error::BadWeights(format!(
            "{what} {}: {why}; download or convert the model again",
            entry.path
        ))
    };
    let size = std::fs::metadata(&path)
        .map_err(|e| bad(format!("cannot be read ({e})")))?
        .len();
    if size != entry.size {
        return Err(bad(format!(
            "has {size} bytes, the manifest lists {} (truncated or corrupted)",
            entry.size
        )));
    }
    let (_, sha256) = file_sha256(&path).map_err(|e| bad(format!("cannot be read ({e})")))?;
    if sha256 != entry.sha256 {
        return Err(bad(
            "sha256 does not match the manifest (corrupted or modified)".into(),
        ));
    }
    Ok(size)
}

/// Every chunk's and file's size and hash; every tensor inside its chunk (manifest validation).
pub fn verify(dir: &Path) -> Result<(), Error> {
    let m = load(dir)?;
    let total: u64 = m.chunks.iter().map(|c| c.size).sum();
    let mut progress = Progress::new("verifying", total);
    for chunk in &m.chunks {
        check_file(dir, chunk, "chunk")?;
        progress.advance(chunk.size);
    }
    progress.finish();
    for file in &m.files {
        check_file(dir, file, "file")?;
    }
    println!(
        "{}: ok ({} chunks, {} files, {} tensors)",
        dir.display(),
        m.chunks.len(),
        m.files.len(),
        m.tensors.len()
    );
    Ok(())
}
