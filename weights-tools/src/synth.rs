//! `sd-weights synth`: a full-size model of a given architecture with random weights, in
//! diffusers' folder layout, for size, memory and speed tests (real weights cannot be
//! downloaded in CI). Weights are f16: N(0, 0.02) from a seeded generator, norm weights 1 and
//! norm biases 0. Tensors are streamed to disk; memory stays small.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use half::f16;
use sd_webgpu::Error;

use crate::progress::Progress;
use crate::specs;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Architecture: sd15, sd21, turbo, sd15-inpaint, or sd15-quarter (SD 1.5 with a
    /// quarter-width UNet, for benchmarks).
    #[arg(long)]
    pub family: String,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The diffusers folder to create (must not exist yet).
    pub output: PathBuf,
}

/// splitmix64 + Box-Muller: deterministic, fast, good enough for random weights.
struct Gaussian(u64);

impl Gaussian {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pair(&mut self) -> (f32, f32) {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let a = std::f64::consts::TAU * v;
        ((r * a.cos()) as f32, (r * a.sin()) as f32)
    }
}

fn is_norm(name: &str) -> bool {
    let layer = name.rsplit_once('.').map(|(l, _)| l).unwrap_or(name);
    let last = layer.rsplit('.').next().unwrap_or(layer);
    last.contains("norm") || last.starts_with("ln_")
}

fn write_safetensors(
    path: &Path,
    tensors: &[(&str, Vec<usize>)],
    rng: &mut Gaussian,
    progress: &mut Progress,
) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Io(format!("cannot write {}: {e}", path.display()));
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 2;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut json = serde_json::to_string(&header).unwrap();
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(' ');
    }
    let mut file = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io)?);
    file.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    file.write_all(json.as_bytes()).map_err(io)?;
    let mut buf = Vec::new();
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        buf.clear();
        if is_norm(name) && shape.len() == 1 {
            let v = if name.ends_with(".weight") {
                f16::ONE
            } else {
                f16::ZERO
            };
            buf.extend((0..n).flat_map(|_| v.to_le_bytes()));
        } else {
            for _ in 0..n.div_ceil(2) {
                let (a, b) = rng.pair();
                buf.extend_from_slice(&f16::from_f32(a * 0.02).to_le_bytes());
                buf.extend_from_slice(&f16::from_f32(b * 0.02).to_le_bytes());
            }
            buf.truncate(n * 2);
        }
        file.write_all(&buf).map_err(io)?;
        progress.advance(n as u64 * 2);
    }
    file.flush().map_err(io)?;
    Ok(())
}

pub fn run(args: SynthArgs) -> Result<(), Error> {
    let spec = specs::spec(&args.family).ok_or_else(|| {
        Error::BadInput(format!(
            "--family {}: unknown; use one of {}",
            args.family,
            specs::FAMILIES.join(", ")
        ))
    })?;
    if args.output.exists() {
        return Err(Error::BadInput(format!(
            "{} already exists: choose a new output directory",
            args.output.display()
        )));
    }
    let parent = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = args
        .output
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model");
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let result = write_all(&spec, &tmp, args.seed).and_then(|()| {
        std::fs::rename(&tmp, &args.output).map_err(|e| {
            Error::Io(format!(
                "cannot rename {} to {}: {e}",
                tmp.display(),
                args.output.display()
            ))
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    println!(
        "wrote {} ({} random weights, diffusers layout)",
        args.output.display(),
        spec.family
    );
    Ok(())
}

fn write_all(spec: &specs::Spec, dir: &Path, seed: u64) -> Result<(), Error> {
    let write = |rel: &str, bytes: &[u8]| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap())
            .and_then(|()| std::fs::write(&path, bytes))
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
    };
    for (path, text) in spec.configs {
        write(path, text.as_bytes())?;
    }
    for (path, bytes) in spec.tokenizer() {
        write(&path, &bytes)?;
    }
    let list = spec.tensor_list();
    let total: u64 = list
        .iter()
        .map(|(_, _, s)| s.iter().product::<usize>() as u64 * 2)
        .sum();
    let mut progress = Progress::new("writing", total);
    let mut rng = Gaussian(seed ^ 0x5D_5EED);
    for (component, file) in [
        ("text_encoder", "model.safetensors"),
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.safetensors"),
    ] {
        let tensors: Vec<(&str, Vec<usize>)> = list
            .iter()
            .filter(|(c, _, _)| c == component)
            .map(|(_, n, s)| (n.as_str(), s.clone()))
            .collect();
        write_safetensors(
            &dir.join(component).join(file),
            &tensors,
            &mut rng,
            &mut progress,
        )?;
    }
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn norms() {
        assert!(super::is_norm("down_blocks.0.resnets.0.norm1.weight"));
        assert!(super::is_norm("text_model.final_layer_norm.bias"));
        assert!(super::is_norm("mid_block.attentions.0.group_norm.weight"));
        assert!(!super::is_norm("down_blocks.0.resnets.0.conv1.bias"));
        assert!(!super::is_norm(
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
        ));
    }
}
