//! `sd-weights generate`: text to image, image to image (`--init-image`) and inpainting
//! (`--init-image` + `--mask`) from a diffusers model folder, natively.
//!
//! Output by extension: `.png` (8-bit RGB with an A1111-style `parameters` text chunk) or
//! `.npy` (float32 H×W×3 in [0, 1]). The file is written to a temporary name beside the
//! output and renamed into place, so a failed run leaves no partial file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use sd_webgpu::model::{LoadOptions, StableDiffusion};
use sd_webgpu::pipeline::{GenerateParams, Image, Mask, Progress};
use sd_webgpu::scheduler::{SchedulerKind, TimestepSpacing};
use sd_webgpu::{Error, device, npy};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Backend {
    /// burn's CPU backend: slow, always available.
    Cpu,
    /// The GPU through wgpu (Vulkan / Metal).
    Wgpu,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A diffusers model folder (model_index.json, tokenizer/, text_encoder/, unet/, vae/, scheduler/).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Denoising steps, at least 1 (default: the model's own, else 20).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; 1 or less turns guidance off (default: the model's
    /// own, else 7.5).
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    #[arg(long, help = scheduler_help())]
    pub scheduler: Option<String>,
    /// Override the scheduler config's timestep_spacing: leading, trailing or linspace
    /// (trailing for SD-Turbo-style few-step sampling).
    #[arg(long)]
    pub timestep_spacing: Option<String>,
    /// Seed of the initial noise and of the sampler's noise (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Initial latents instead of seeded noise: a float32 .npy of shape [1, 4, height/8, width/8].
    #[arg(long, conflicts_with = "seed")]
    pub latents: Option<PathBuf>,
    /// Image width in pixels (default: the init image's or the latents' width, else the
    /// model's: what it records, else its UNet's sample_size × 8, e.g. 768 for SD 2.1-v).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels (default: the init image's or the latents' height, else the
    /// model's, as for --width).
    #[arg(long)]
    pub height: Option<usize>,
    /// CLIP skip, A1111's meaning: 1 = the last layer.
    #[arg(long, default_value_t = 1)]
    pub clip_skip: usize,
    /// DDIM's eta in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Image to image: start from this PNG (its size is the output size).
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// How much of the init image to redo, 0 to 1 (default 0.8; 1 with --mask).
    #[arg(long, requires = "init_image")]
    pub strength: Option<f64>,
    /// Inpainting: a PNG the size of the init image; white is repainted, black kept.
    #[arg(long, requires = "init_image")]
    pub mask: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// Expand q8 / q4 weights of a converted model to f32 on the GPU instead of keeping
    /// them quantized (4–8× the GPU memory; for speed comparisons).
    #[arg(long)]
    pub expand_weights: bool,
    /// The image to write: .png or .npy.
    #[arg(long)]
    pub output: PathBuf,
}

/// `--scheduler`'s help, naming the schedulers as [`SchedulerKind`] lists them.
fn scheduler_help() -> String {
    let names: Vec<&str> = SchedulerKind::ALL.iter().map(|k| k.name()).collect();
    format!("Sampler: {} (default: the model's own)", names.join(", "))
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Png,
    Npy,
}

fn format_of(path: &Path) -> Result<Format, Error> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => Ok(Format::Png),
        Some("npy") => Ok(Format::Npy),
        _ => Err(Error::BadInput(format!(
            "--output {}: unknown image format; the file name must end in .png or .npy",
            path.display()
        ))),
    }
}

pub fn run(args: GenerateArgs) -> Result<(), Error> {
    let format = format_of(&args.output)?;
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(Error::Io(format!(
                "--output {}: folder {} does not exist",
                args.output.display(),
                parent.display()
            )));
        }
    }
    let scheduler = args
        .scheduler
        .as_deref()
        .map(SchedulerKind::parse)
        .transpose()?;
    let mut overrides = Vec::new();
    if let Some(spacing) = &args.timestep_spacing {
        if !TimestepSpacing::NAMES.contains(&spacing.as_str()) {
            let names = TimestepSpacing::NAMES.join(", ");
            return Err(Error::BadInput(format!(
                "--timestep-spacing {spacing}: must be one of {names}"
            )));
        }
        overrides.push(("timestep_spacing".to_string(), spacing.clone().into()));
    }

    // Latents: their shape gives the default size.
    let latents = match &args.latents {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::Io(format!("--latents {}: {e}", path.display())))?;
            let (shape, values) = npy::read_f32(&bytes, &format!("--latents {}", path.display()))?;
            if shape.len() != 4 || shape[0] != 1 {
                return Err(Error::BadInput(format!(
                    "--latents {}: shape {shape:?}, expected [1, channels, height/8, width/8]",
                    path.display()
                )));
            }
            Some((shape, values))
        }
    };

    let init_image = args.init_image.as_deref().map(read_image).transpose()?;
    let mask = args.mask.as_deref().map(read_mask).transpose()?;

    let device = match args.backend {
        Backend::Cpu => device::cpu(),
        Backend::Wgpu => pollster::block_on(device::gpu())?,
    };
    let started = Instant::now();
    let options = LoadOptions {
        expand_quantized: args.expand_weights,
    };
    let model = StableDiffusion::load(&args.model, &device, options)?;
    sync(&device)?;
    eprintln!(
        "loaded in {:.1} s; weights take {:.1} MB on the device",
        started.elapsed().as_secs_f64(),
        model.weight_bytes() as f64 / 1e6
    );
    let own = model.info().defaults;
    let steps = args.steps.unwrap_or(own.steps);
    let guidance = args.guidance.unwrap_or(own.guidance_scale);
    let f = model.vae_scale_factor();
    let (width, height) = match (&init_image, &latents) {
        (Some(image), _) => (
            args.width.unwrap_or(image.width),
            args.height.unwrap_or(image.height),
        ),
        (None, Some((shape, _))) => (
            args.width.unwrap_or(shape[3] * f),
            args.height.unwrap_or(shape[2] * f),
        ),
        (None, None) => (
            args.width.unwrap_or(own.width),
            args.height.unwrap_or(own.height),
        ),
    };
    if let Some((shape, _)) = &latents {
        let want = [
            1,
            model.latent_channels(),
            height / f.max(1),
            width / f.max(1),
        ];
        if shape[..] != want[..] || width % f != 0 || height % f != 0 {
            return Err(Error::BadInput(format!(
                "--latents: shape {shape:?} does not fit a {width}×{height} image, which needs {want:?}"
            )));
        }
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 & 0xFFFF_FFFF)
            .unwrap_or(0)
    });
    let params = GenerateParams {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        steps,
        guidance_scale: guidance,
        scheduler,
        scheduler_overrides: overrides,
        seed,
        latents: latents.map(|(_, v)| v),
        width,
        height,
        clip_skip: args.clip_skip,
        eta: args.eta,
        init_image,
        mask,
        strength: args.strength,
        preview_every: 0,
    };
    params.validate(&model)?;
    let sampler = params.build_scheduler(&model)?.kind();

    let mut stderr = std::io::stderr();
    // Step times: the GPU runs ahead of the host, so wait for it after each step. The first
    // step also compiles the kernels, so it is reported apart.
    let mut step_times = Vec::new();
    let mut last = Instant::now();
    let image = pollster::block_on(model.generate(&params, |p: Progress| {
        if sync(&device).is_err() {
            return false;
        }
        step_times.push(last.elapsed().as_secs_f64());
        last = Instant::now();
        let width = 30;
        let filled = p.step * width / p.total.max(1);
        let _ = write!(
            stderr,
            "\r[{}{}] step {}/{}",
            "#".repeat(filled),
            "-".repeat(width - filled),
            p.step,
            p.total
        );
        let _ = stderr.flush();
        true
    }));
    eprintln!();
    let image = image?;
    if let [first, rest @ ..] = &step_times[..] {
        let text = if rest.is_empty() {
            String::new()
        } else {
            format!(
                ", then {:.3} s per step",
                rest.iter().sum::<f64>() / rest.len() as f64
            )
        };
        eprintln!("first step {first:.3} s (with kernel compilation){text}");
    }

    let model_name = args
        .model
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| args.model.display().to_string());
    let text = params.a1111_parameters(sampler, Some(&model_name));

    let bytes = match format {
        Format::Png => png_bytes(&image, &text)?,
        Format::Npy => npy::write_f32(&[image.height, image.width, 3], &image.rgb),
    };
    write_atomically(&args.output, &bytes)?;
    eprintln!(
        "wrote {} ({width}x{height}, seed {seed})",
        args.output.display()
    );
    Ok(())
}

/// Waits for the device to finish its queued work.
fn sync(device: &sd_webgpu::Device) -> Result<(), Error> {
    device
        .sync()
        .map_err(|e| Error::Gpu(format!("the GPU failed: {e:?}")))
}

/// The 8-bit pixels of a PNG (any colour type, 16-bit reduced to 8) and its channel count.
fn read_png(path: &Path, what: &str) -> Result<(usize, usize, Vec<u8>, usize), Error> {
    let bad = |e: String| Error::BadInput(format!("{what} {}: {e}", path.display()));
    let file = std::fs::File::open(path)
        .map_err(|e| Error::Io(format!("{what} {}: {e}", path.display())))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| bad(format!("not a readable PNG ({e})")))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("the image is too large".into()))?;
    let mut pixels = vec![0; size];
    let info = reader
        .next_frame(&mut pixels)
        .map_err(|e| bad(format!("not a readable PNG ({e})")))?;
    pixels.truncate(info.buffer_size());
    let channels = info.color_type.samples();
    Ok((info.width as usize, info.height as usize, pixels, channels))
}

fn read_image(path: &Path) -> Result<Image, Error> {
    let (w, h, pixels, channels) = read_png(path, "--init-image")?;
    Image::from_rgb8(w, h, &pixels, channels)
}

fn read_mask(path: &Path) -> Result<Mask, Error> {
    let (w, h, pixels, channels) = read_png(path, "--mask")?;
    Mask::from_pixels8(w, h, &pixels, channels)
}

/// An 8-bit RGB PNG with `text` as its `parameters` chunk (tEXt when Latin-1, else iTXt).
fn png_bytes(image: &Image, text: &str) -> Result<Vec<u8>, Error> {
    let err = |e: png::EncodingError| Error::Io(format!("encoding the PNG failed: {e}"));
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width as u32, image.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if text.chars().all(|c| (c as u32) < 256) {
            encoder
                .add_text_chunk("parameters".into(), text.into())
                .map_err(err)?;
        } else {
            encoder
                .add_itxt_chunk("parameters".into(), text.into())
                .map_err(err)?;
        }
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(&image.to_rgb8()).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

/// Writes `path` through a temporary file in the same folder, renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io(format!("cannot write {}: {e}", path.display())));
    }
    Ok(())
}
