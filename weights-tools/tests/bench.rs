//! `sd-weights bench` end to end, running the built binary on the built-in model
//! (`www/models/shapes`, 64×64, guidance 3: a UNet batch of 2) with one timed run per phase.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn built_in_model() -> String {
    root().join("www/models/shapes").display().to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sd-weights"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

/// `bench --json` on `backend`: one JSON object, every timing, FLOP count and rate finite
/// and positive. Returns it.
fn bench_json(backend: &str) -> Value {
    let out = run(&[
        "--model",
        &built_in_model(),
        "--steps",
        "1",
        "--json",
        "--backend",
        backend,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let positive = |v: &Value, what: &str| {
        let x = v
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: {v} is not a number"));
        assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    };
    assert_eq!(report["backend"], backend);
    assert_eq!(report["precision"], "f32");
    assert_eq!(
        (report["width"].as_u64(), report["height"].as_u64()),
        (Some(64), Some(64))
    );
    assert_eq!(
        report["unet_batch"], 2,
        "the model's guidance 3 runs the CFG batch"
    );
    assert_eq!(report["runs"], 1);
    for phase in ["text_encoder", "unet", "vae_decode"] {
        for field in ["ms_median", "ms_min", "ms_first", "flops", "tflops_per_s"] {
            positive(&report[phase][field], &format!("{phase}.{field}"));
        }
        assert_eq!(
            report[phase]["ms_runs"].as_array().map(Vec::len),
            Some(1),
            "{phase}"
        );
    }
    // The FLOPs the built-in model's configs give (sd_webgpu::flops, held to torch's counter
    // by its own tests): the UNet at batch 2 and the VAE at 64×64, the text encoder twice.
    assert_eq!(report["unet"]["flops"], 125_529_088u64);
    assert_eq!(report["vae_decode"]["flops"], 487_229_440u64);
    positive(&report["weight_bytes"], "weight_bytes");
    report
}

mod built_in_model {
    use super::*;

    /// On the CPU backend there are no GPU dispatches or GPU memory to report: null.
    #[test]
    fn cpu() {
        let report = bench_json("cpu");
        for phase in ["text_encoder", "unet", "vae_decode"] {
            assert!(
                report[phase]["dispatches"].is_null(),
                "{phase}: {}",
                report[phase]["dispatches"]
            );
        }
        assert!(report["gpu_memory_peak_reserved_bytes"].is_null());
        assert_eq!(report["unet_dispatches_by_kernel"], serde_json::json!([]));
        // Weights expanded to f32 on the CPU: 4 bytes per parameter (4.8 M parameters).
        let bytes = report["weight_bytes"].as_u64().unwrap();
        assert!((15_000_000..25_000_000).contains(&bytes), "{bytes}");
    }

    /// On the GPU: dispatches per run counted, and the GPU memory the pools held.
    #[test]
    fn wgpu() {
        let report = bench_json("wgpu");
        for phase in ["text_encoder", "unet", "vae_decode"] {
            let n = report[phase]["dispatches"]
                .as_u64()
                .unwrap_or_else(|| panic!("{phase}: no dispatch count"));
            assert!(n >= 10, "{phase}: {n} dispatches");
        }
        let by_kernel: u64 = report["unet_dispatches_by_kernel"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k[1].as_u64().unwrap())
            .sum();
        assert_eq!(by_kernel, report["unet"]["dispatches"].as_u64().unwrap());
        let reserved = report["gpu_memory_peak_reserved_bytes"].as_u64().unwrap();
        let in_use = report["gpu_memory_peak_in_use_bytes"].as_u64().unwrap();
        let weights = report["weight_bytes"].as_u64().unwrap();
        assert!(
            in_use >= weights && reserved >= in_use,
            "weights {weights}, in use {in_use}, reserved {reserved}"
        );
    }
}

/// The table names each phase; nothing but the table goes to stdout.
#[test]
fn table_by_default() {
    let out = run(&["--model", &built_in_model(), "--steps", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for line in [
        "text encoder (2 prompts)",
        "UNet call (batch 2)",
        "VAE decode (1 image)",
        "weights on the device",
    ] {
        assert!(table.contains(line), "{line} missing from:\n{table}");
    }
}

/// Bad input: a clear error naming the problem, exit status 1, no panic.
#[test]
fn bad_input_is_refused_clearly() {
    let model = built_in_model();
    let missing = root().join("no-such-model").display().to_string();
    let cases: [(&[&str], &str); 7] = [
        (&["--model", &missing], "does not exist"),
        (
            &["--model", &model, "--width", "60"],
            "width = 60: must be a positive multiple of 8",
        ),
        (
            &["--model", &model, "--height", "0"],
            "height = 0: must be a positive multiple of 8",
        ),
        (
            &["--model", &model, "--width", "8200"],
            "--width 8200: at most 8192",
        ),
        (
            &["--model", &model, "--guidance", "nan"],
            "guidance_scale = NaN: must be a finite number",
        ),
        (
            &["--model", &model, "--steps", "0"],
            "--steps 0: must be at least 1",
        ),
        (
            &["--model", &model, "--precision", "f16"],
            "--precision f16 is not yet supported",
        ),
    ];
    for (args, want) in cases {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(want),
            "{args:?}: wanted {want:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
