//! Quantization quality on trained weights: the built-in shapes model (f16 checkpoint in
//! tests/fixtures/shapes/model) converted at f16, q8 and q4, each generating from the
//! latents diffusers used with the f32 weights; PSNR of our image against diffusers' f32
//! image. Fixtures by weights-tools/train/make_quality_fixtures.py.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/shapes")
}

fn sd_weights(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_sd-weights")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn read(path: &Path) -> Vec<f32> {
    sd_webgpu::npy::read_f32(&std::fs::read(path).unwrap(), "image").unwrap().1
}

/// Peak signal-to-noise ratio of `a` against `b`, both in [0, 1].
fn psnr(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len() as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (1.0 / mse).log10() }
}

#[test]
fn quantized_images_stay_close_to_f32() {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("quality.json")).unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("sd-weights-quality-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (steps, guidance) = (meta["steps"].to_string(), meta["guidance"].to_string());
    let mut report = Vec::new();
    for (quant, bound) in [("f16", 40.0), ("q8", 35.0), ("q4", 25.0)] {
        let model = dir.join(quant);
        sd_weights(&["convert", &s(&fixtures().join("model")), &s(&model), "--quant", quant]);
        let mut figures = Vec::new();
        for case in meta["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let out = dir.join(format!("{quant}_{name}.npy"));
            let latents = fixtures().join(format!("{name}_latents.npy"));
            sd_weights(&[
                "generate", "--model", &s(&model), "--prompt", case["prompt"].as_str().unwrap(), "--steps", &steps,
                "--guidance", &guidance, "--scheduler", meta["scheduler"].as_str().unwrap(), "--latents", &s(&latents), "--output", &s(&out),
            ]);
            figures.push(psnr(&read(&out), &read(&fixtures().join(format!("{name}_image.npy")))));
        }
        let worst = figures.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = figures.iter().sum::<f64>() / figures.len() as f64;
        report.push(format!("{quant}: PSNR mean {mean:.1} dB, worst {worst:.1} dB (bound {bound} dB)"));
        eprintln!("{}", report.last().unwrap());
        assert!(worst >= bound, "{quant}: an image is only {worst:.1} dB from diffusers' f32 image: {figures:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
