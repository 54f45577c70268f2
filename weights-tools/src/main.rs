//! `sd-weights`: the native companion of sd-webgpu.

mod bench;
mod convert;
mod generate;
mod inspect;
mod progress;
mod specs;
mod synth;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sd_webgpu::device;

#[derive(Parser)]
#[command(
    name = "sd-weights",
    version,
    about = "Stable Diffusion weights for sd-webgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that each compute backend (CPU, GPU through wgpu) works on this machine.
    Devices,
    /// Generate an image from a prompt with a diffusers model folder or a converted model
    /// directory (.png or .npy output).
    Generate(generate::GenerateArgs),
    /// Convert a diffusers folder or a single-file .safetensors checkpoint to sd-webgpu's
    /// chunked format (f32, f16, q8 or q4).
    Convert(convert::ConvertArgs),
    /// Show a converted model: components, tensor counts, bytes per precision.
    Inspect {
        /// A converted model directory.
        dir: std::path::PathBuf,
    },
    /// Check every chunk's size and sha256 and every tensor's place in its chunk.
    Verify {
        /// A converted model directory.
        dir: std::path::PathBuf,
    },
    /// Write a full-size model with random weights (diffusers layout), for size and speed tests.
    Synth(synth::SynthArgs),
    /// Time the text encoder, one UNet call and the VAE decoder on a backend: milliseconds,
    /// achieved TFLOP/s, GPU dispatches, weight bytes and GPU memory.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Devices => devices(),
        Command::Generate(args) => finish(generate::run(args)),
        Command::Convert(args) => finish(convert::run(args)),
        Command::Inspect { dir } => finish(inspect::inspect(&dir)),
        Command::Verify { dir } => finish(inspect::verify(&dir)),
        Command::Synth(args) => finish(synth::run(args)),
        Command::Bench(args) => finish(bench::run(args)),
    }
}

fn finish(result: Result<(), sd_webgpu::Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn devices() -> ExitCode {
    let mut ok = true;
    let cpu = device::cpu();
    ok &= report("cpu", pollster::block_on(device::self_check(&cpu)));
    let gpu = pollster::block_on(async {
        let device = device::gpu().await?;
        device::self_check(&device).await
    });
    ok &= report("wgpu", gpu);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn report(name: &str, result: Result<f64, sd_webgpu::Error>) -> bool {
    match result {
        Ok(err) if err < 1e-3 => {
            println!("{name}: ok (max error {err:.1e})");
            true
        }
        Ok(err) => {
            println!("{name}: computes wrong results (max error {err:.1e})");
            false
        }
        Err(e) => {
            println!("{name}: unavailable: {e}");
            false
        }
    }
}
