//! `sd-weights bench`: how fast a model's networks run on a backend, phase by phase, so that
//! every change to the kernels is measured.
//!
//! Each phase runs once to warm up (kernel compilation, memory pools growing), then
//! `--steps` times, each run timed from the call until one value of its output has been read
//! back: only then has the GPU finished it (the GPU runs behind the host, so a time without
//! the read-back would measure only the queueing). The phases, as the pipeline runs them:
//!
//! - text encoder: the prompt, and with classifier-free guidance the negative prompt too;
//! - UNet call: one denoising step's call, on a batch of 2 with guidance (> 1, and not an
//!   LCM-style UNet), else 1; seeded noise as the sample and as the context (the text
//!   encoder's output shape), timestep 500;
//! - VAE decode: one image from seeded latents.
//!
//! Reported per phase: median, min and first (warm-up) milliseconds, FLOPs (counted from the
//! configs as torch counts them, [`sd_webgpu::flops`]) and the achieved TFLOP/s at the median;
//! on the wgpu backend also GPU dispatches per run (kernel launches, counted with
//! [`device::DispatchCounter`]). Then the weights' bytes on the device and, on the wgpu
//! backend, the most GPU memory the pools held, sampled after every run
//! ([`device::memory_usage`]; cubecl keeps no high-water mark in bytes).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use sd_webgpu::model::StableDiffusion;
use sd_webgpu::pipeline::{GenerateParams, Noise, guidance_scale_embedding};
use sd_webgpu::{Device, Error, Tensor, TensorData, device, flops, read_f32};
use serde_json::{Value, json};

use crate::generate::Backend;

/// The numeric precision of the computation.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum Precision {
    /// f32 everywhere: today's path, the one every parity test checks.
    F32,
    /// f16 activations and weights with f32 accumulation (not yet implemented).
    F16,
}

/// One of the pipeline's networks, as the bench times it.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum BenchPhase {
    /// The text encoder.
    Text,
    /// One UNet call.
    Unet,
    /// One VAE decode.
    Vae,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A converted model directory (`sd-weights convert`) or a diffusers model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Image width in pixels (default: the model's, as `generate` takes it).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels (default: the model's).
    #[arg(long)]
    pub height: Option<usize>,
    /// Timed runs of each phase, after one warm-up run.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Classifier-free guidance scale: above 1 the UNet runs on a batch of 2, as in the
    /// pipeline (default: the model's own, else 7.5).
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// Computation precision; only f32 exists today.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// The phases to run, comma-separated (the others are left out of the report: a
    /// profile of the UNet alone, say).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchPhase::Text, BenchPhase::Unet, BenchPhase::Vae])]
    pub phases: Vec<BenchPhase>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The largest image side we bench: far beyond what SD runs at, and small enough that FLOP
/// counts stay well inside `u64`.
const MAX_SIDE: usize = 8192;

/// The prompt the text encoder runs on (any prompt is padded to the same 77 tokens).
const PROMPT: &str = "a red circle on a blue background";

/// One phase's measurements.
struct Phase {
    /// Milliseconds of each timed run.
    times_ms: Vec<f64>,
    /// Milliseconds of the warm-up run.
    first_ms: f64,
    /// Kernel launches of the last timed run (`None` on the CPU backend).
    dispatches: Option<u64>,
    /// The last timed run's launches by kernel, most first.
    kernels: Vec<(String, u64)>,
    flops: u64,
}

impl Phase {
    fn median_ms(&self) -> f64 {
        let mut t = self.times_ms.clone();
        t.sort_by(f64::total_cmp);
        let n = t.len();
        if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2.0
        }
    }

    fn min_ms(&self) -> f64 {
        self.times_ms.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// Achieved TFLOP/s at the median time.
    fn tflops(&self) -> f64 {
        self.flops as f64 / (self.median_ms() * 1e-3) / 1e12
    }

    fn to_json(&self) -> Value {
        json!({
            "ms_median": self.median_ms(),
            "ms_min": self.min_ms(),
            "ms_first": self.first_ms,
            "ms_runs": self.times_ms,
            "flops": self.flops,
            "tflops_per_s": self.tflops(),
            "dispatches": self.dispatches,
        })
    }
}

/// The most GPU memory seen in the pools, sampled after every run.
#[derive(Default)]
struct MemoryPeak {
    reserved: u64,
    in_use: u64,
    sampled: bool,
}

impl MemoryPeak {
    fn sample(&mut self, device: &Device) {
        if let Some((reserved, in_use)) = device::memory_usage(device) {
            self.reserved = self.reserved.max(reserved);
            self.in_use = self.in_use.max(in_use);
            self.sampled = true;
        }
    }
}

/// Waits until `tensor` is computed, by reading one value of it back.
fn finished<const D: usize>(tensor: Tensor<D>) -> Result<(), Error> {
    let one = tensor.reshape([-1]).narrow(0, 0, 1);
    pollster::block_on(read_f32(one)).map(|_| ())
}

/// Runs `work` once to warm up, then `runs` times timed, each until its output is read
/// back; counts the kernel launches of each timed run on GPUs, and samples GPU memory.
fn measure<const D: usize>(
    device: &Device,
    gpu: bool,
    runs: usize,
    flops: u64,
    memory: &mut MemoryPeak,
    mut work: impl FnMut() -> Result<Tensor<D>, Error>,
) -> Result<Phase, Error> {
    let started = Instant::now();
    finished(work()?)?;
    let first_ms = started.elapsed().as_secs_f64() * 1e3;
    memory.sample(device);
    let mut times_ms = Vec::with_capacity(runs);
    let (mut dispatches, mut kernels) = (None, Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        // Launches are issued as the work is called (burn runs without fusion); the
        // read-back's own copy, if any, is not counted.
        let counter = gpu.then(device::DispatchCounter::start);
        let output = work()?;
        if let Some(counter) = counter {
            dispatches = Some(counter.total());
            kernels = counter.by_kernel();
        }
        finished(output)?;
        times_ms.push(started.elapsed().as_secs_f64() * 1e3);
        memory.sample(device);
    }
    Ok(Phase {
        times_ms,
        first_ms,
        dispatches,
        kernels,
        flops,
    })
}

pub fn run(args: BenchArgs) -> Result<(), Error> {
    if args.steps == 0 {
        return Err(Error::BadInput(
            "--steps 0: must be at least 1 (timed runs of each phase, after one warm-up)".into(),
        ));
    }
    if args.precision == Precision::F16 {
        return Err(Error::BadInput(
            "--precision f16 is not yet supported: computation is f32 everywhere today; use --precision f32".into(),
        ));
    }
    let (gpu, device) = match args.backend {
        Backend::Cpu => (false, device::cpu()),
        Backend::Wgpu => (true, pollster::block_on(device::gpu())?),
    };
    eprintln!("loading {} ...", args.model.display());
    let model = StableDiffusion::load(&args.model, &device, Default::default())?;
    device
        .sync()
        .map_err(|e| Error::Gpu(format!("the GPU failed: {e:?}")))?;
    let own = model.info().defaults;
    let (width, height) = (
        args.width.unwrap_or(own.width),
        args.height.unwrap_or(own.height),
    );
    let guidance = args.guidance.unwrap_or(own.guidance_scale);
    // The size and guidance rules are generation's (`GenerateParams::validate`); the bench
    // only adds its cap on the side.
    GenerateParams {
        width,
        height,
        guidance_scale: guidance,
        ..GenerateParams::default()
    }
    .validate(&model)?;
    if let Some((name, v)) = [("--width", width), ("--height", height)]
        .into_iter()
        .find(|(_, v)| *v > MAX_SIDE)
    {
        return Err(Error::BadInput(format!("{name} {v}: at most {MAX_SIDE}")));
    }
    let f = model.vae_scale_factor();
    let (h, w) = (height / f, width / f);
    model.unet.check_latent_size(h, w)?;

    let cfg = model.uses_cfg(guidance);
    let batch = if cfg { 2 } else { 1 };
    let tokens = 77;
    let mut memory = MemoryPeak::default();
    memory.sample(&device);
    let run = |phase| args.phases.contains(&phase);
    let text = if run(BenchPhase::Text) {
        eprintln!("text encoder ...");
        let text_flops = flops::text_encoder(&model.text_encoder_config, batch as u64, tokens);
        Some(measure(
            &device,
            gpu,
            args.steps,
            text_flops,
            &mut memory,
            || model.encode_prompt(PROMPT, "", 1, cfg),
        )?)
    } else {
        None
    };

    let noise = Noise::new(0);
    let unet = if run(BenchPhase::Unet) {
        // The UNet's inputs, made once: seeded noise as the sample and as the context (the
        // text encoder's output has its shape; values do not change the time, and a profile
        // of this phase then holds the UNet's kernels alone).
        let (n, d) = (tokens as usize, model.text_encoder_config.hidden_size);
        let context = Tensor::<3>::from_data(
            TensorData::new(noise.normal(2, batch * n * d), [batch, n, d]),
            &device,
        ); // [b, 77, d]
        let c_in = model.unet.in_channels();
        let sample = Tensor::<4>::from_data(
            TensorData::new(noise.normal(0, batch * c_in * h * w), [batch, c_in, h, w]),
            &device,
        );
        let cond = model.unet_config.time_cond_proj_dim.map(|dim| {
            let emb = guidance_scale_embedding(guidance - 1.0, dim);
            Tensor::<2>::from_data(TensorData::new(emb, [1, dim]), &device) // [1, dim]
        });
        eprintln!("UNet ...");
        let unet_flops =
            flops::unet_call(&model.unet_config, batch as u64, h as u64, w as u64, tokens);
        Some(measure(
            &device,
            gpu,
            args.steps,
            unet_flops,
            &mut memory,
            || {
                model
                    .unet
                    .forward(sample.clone(), &[500.0], context.clone(), cond.clone())
            },
        )?)
    } else {
        None
    };

    let vae = if run(BenchPhase::Vae) {
        let c = model.latent_channels();
        let latents = Tensor::<4>::from_data(
            TensorData::new(noise.normal(1, c * h * w), [1, c, h, w]),
            &device,
        );
        eprintln!("VAE decoder ...");
        let vae_flops = flops::vae_decode(&model.vae_config, 1, h as u64, w as u64);
        Some(measure(
            &device,
            gpu,
            args.steps,
            vae_flops,
            &mut memory,
            || Ok(model.vae.decode(latents.clone())),
        )?)
    } else {
        None
    };

    let report = Report {
        model: args.model.display().to_string(),
        adapter: device::adapter_description(&device),
        backend: match args.backend {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
        },
        width,
        height,
        guidance,
        batch,
        runs: args.steps,
        text,
        unet,
        vae,
        weight_bytes: model.weight_bytes(),
        memory,
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

struct Report {
    model: String,
    /// The GPU adapter (wgpu backend only).
    adapter: Option<String>,
    backend: &'static str,
    width: usize,
    height: usize,
    guidance: f64,
    batch: usize,
    runs: usize,
    text: Option<Phase>,
    unet: Option<Phase>,
    vae: Option<Phase>,
    weight_bytes: u64,
    memory: MemoryPeak,
}

impl Report {
    fn unet_kernels(&self) -> &[(String, u64)] {
        self.unet.as_ref().map_or(&[], |p| &p.kernels)
    }

    fn to_json(&self) -> Value {
        let memory = |v: u64| if self.memory.sampled { Some(v) } else { None };
        json!({
            "model": self.model,
            "backend": self.backend,
            "adapter": self.adapter,
            "precision": "f32",
            "width": self.width,
            "height": self.height,
            "guidance": self.guidance,
            "unet_batch": self.batch,
            "runs": self.runs,
            "text_encoder": self.text.as_ref().map(Phase::to_json),
            "unet": self.unet.as_ref().map(Phase::to_json),
            "vae_decode": self.vae.as_ref().map(Phase::to_json),
            "unet_dispatches_by_kernel": self.unet_kernels().iter().map(|(k, n)| json!([k, n])).collect::<Vec<_>>(),
            "weight_bytes": self.weight_bytes,
            "gpu_memory_peak_reserved_bytes": memory(self.memory.reserved),
            "gpu_memory_peak_in_use_bytes": memory(self.memory.in_use),
        })
    }

    fn table(&self) -> String {
        let backend = match &self.adapter {
            Some(adapter) => format!("{} on {adapter}", self.backend),
            None => self.backend.to_string(),
        };
        let mut out = format!(
            "{}: {}×{}, guidance {} (UNet batch {}), {backend}, f32; {} timed run(s) per phase after one warm-up\n\n",
            self.model, self.width, self.height, self.guidance, self.batch, self.runs
        );
        out += &format!(
            "{:<26} {:>10} {:>10} {:>10} {:>10} {:>9} {:>11}\n",
            "phase", "median ms", "min ms", "first ms", "GFLOP", "TFLOP/s", "dispatches"
        );
        let prompts = if self.batch == 2 {
            "text encoder (2 prompts)"
        } else {
            "text encoder (1 prompt)"
        };
        let unet = format!("UNet call (batch {})", self.batch);
        for (name, p) in [
            (prompts, &self.text),
            (unet.as_str(), &self.unet),
            ("VAE decode (1 image)", &self.vae),
        ] {
            let Some(p) = p else { continue };
            let dispatches = p.dispatches.map_or("-".to_string(), |d| d.to_string());
            out += &format!(
                "{name:<26} {:>10.2} {:>10.2} {:>10.2} {:>10.3} {:>9.4} {dispatches:>11}\n",
                p.median_ms(),
                p.min_ms(),
                p.first_ms,
                p.flops as f64 / 1e9,
                p.tflops()
            );
        }
        out += &format!(
            "\nweights on the device: {:.1} MB\n",
            self.weight_bytes as f64 / 1e6
        );
        if self.memory.sampled {
            out += &format!(
                "GPU memory, most seen after a run: {:.1} MB reserved by the pools, {:.1} MB in use\n",
                self.memory.reserved as f64 / 1e6,
                self.memory.in_use as f64 / 1e6
            );
        }
        if !self.unet_kernels().is_empty() {
            out += "\nUNet call, launches by kernel (most first):\n";
            for (kernel, n) in self.unet_kernels().iter().take(12) {
                out += &format!("{n:>7}  {kernel}\n");
            }
        }
        out
    }
}
