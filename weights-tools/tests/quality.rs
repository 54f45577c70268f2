//! Quantization quality on trained weights: the built-in model (its f16 checkpoint in
//! tests/fixtures/shapes/model, checked to be the committed `www/models/shapes`) converted at
//! f16, q8 and q4, each generating from the
//! latents diffusers used with the f32 weights; PSNR of our image against diffusers' f32
//! image. Fixtures by weights-tools/train/make_quality_fixtures.py.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/shapes")
}

fn sd_weights(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_sd-weights"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &Path) -> Vec<f32> {
    sd_webgpu::npy::read_f32(&std::fs::read(path).unwrap(), "image")
        .unwrap()
        .1
}

/// Peak signal-to-noise ratio of `a` against `b`, both in [0, 1]; minus infinity where a
/// value is not finite (so a NaN image fails every bound instead of dropping out of `min`).
fn psnr(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if !mse.is_finite() {
        f64::NEG_INFINITY
    } else if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (1.0 / mse).log10()
    }
}

#[test]
fn psnr_fails_non_finite_images() {
    assert_eq!(psnr(&[0.5, 0.5], &[0.5, 0.5]), f64::INFINITY);
    assert!((psnr(&[0.6, 0.5], &[0.5, 0.5]) - 23.0103).abs() < 1e-3);
    assert_eq!(psnr(&[f32::NAN, 0.5], &[0.5, 0.5]), f64::NEG_INFINITY);
    assert_eq!(psnr(&[f32::INFINITY, 0.5], &[0.5, 0.5]), f64::NEG_INFINITY);
}

/// Lowest PSNR each precision must reach on every case: the worst measured (75.3 / 61.5 /
/// 32.0 dB on this fixture, means 77.9 / 62.9 / 38.1) less about 4 dB, so a path that falls
/// to the next precision's quality (f16 to q8, q8 to q4) fails.
const BOUNDS: [(&str, f64); 3] = [("f16", 71.0), ("q8", 57.0), ("q4", 28.0)];

/// The dtypes a converted model stores: `--quant f16` stores every tensor as f16; q8 and q4
/// store their large matrices at that precision (the rest f16, VAE at q8 for q4: see
/// `convert::policy`) and nothing as f32.
fn check_dtypes(model: &Path, quant: &str) {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap())
            .unwrap();
    let dtypes: Vec<&str> = manifest["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["dtype"].as_str().unwrap())
        .collect();
    let count = |d: &str| dtypes.iter().filter(|&&x| x == d).count();
    assert_eq!(
        manifest["quantization"].as_str(),
        Some(quant),
        "{quant}: manifest quantization"
    );
    assert_eq!(count("f32"), 0, "{quant}: f32 tensors stored");
    match quant {
        "f16" => assert_eq!(
            count("f16"),
            dtypes.len(),
            "f16: not every tensor is f16: {dtypes:?}"
        ),
        "q8" => assert!(
            count("q8") > 0 && count("q4") == 0,
            "q8: stored dtypes {dtypes:?}"
        ),
        _ => assert!(count("q4") > 0, "q4: no q4 tensor stored"),
    }
}

/// The fixture is the committed built-in model: the same configs, and every tensor that
/// `www/models/shapes` stores at f16 has the same values in the fixture's f16 checkpoint (both
/// round the same f32 weights to nearest; the q8 ones cannot be compared exactly).
#[test]
fn fixture_is_the_built_in_model() {
    let built_in = fixtures().join("../../../www/models/shapes");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(built_in.join("manifest.json")).unwrap())
            .unwrap();
    for (file, config) in manifest["configs"].as_object().unwrap() {
        let mine: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("model").join(file)).unwrap(),
        )
        .unwrap();
        for key in [
            "scaling_factor",
            "block_out_channels",
            "_sd_webgpu_defaults",
            "hidden_size",
        ] {
            assert_eq!(mine.get(key), config.get(key), "{file}: {key}");
        }
    }
    let chunks: Vec<Vec<u8>> = manifest["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| std::fs::read(built_in.join(c["path"].as_str().unwrap())).unwrap())
        .collect();
    let mut files = std::collections::BTreeMap::new();
    let (mut same, mut close) = (0, 0);
    for t in manifest["tensors"].as_array().unwrap() {
        let component = t["component"].as_str().unwrap();
        let name = t["name"].as_str().unwrap();
        let file = files.entry(component.to_string()).or_insert_with(|| {
            let dir = fixtures().join("model").join(component);
            let path = ["model.safetensors", "diffusion_pytorch_model.safetensors"]
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.exists())
                .unwrap();
            sd_webgpu::safetensors::SafeTensors::from_bytes(std::fs::read(path).unwrap(), component)
                .unwrap()
        });
        // transformers 5 saves CLIPTextModel's tensors without the `text_model.` prefix.
        let stored = match file.info(name) {
            Some(_) => name,
            None => name.trim_start_matches("text_model."),
        };
        let (_, want) = file.get_f32(stored).unwrap_or_else(|e| panic!("{e}"));
        let n = |k: &str| t[k].as_u64().unwrap() as usize;
        let raw = &chunks[n("chunk")][n("offset")..n("offset") + n("length")];
        if t["dtype"] == "f16" {
            let got =
                sd_webgpu::safetensors::to_f32(sd_webgpu::safetensors::Dtype::F16, raw).unwrap();
            assert!(
                got == want,
                "{component}/{name}: the built-in model's f16 values differ from the fixture's"
            );
            same += 1;
        } else {
            close += 1;
        }
    }
    assert!(
        same > 400 && close > 100,
        "{same} f16 tensors compared, {close} quantized"
    );
}

#[test]
fn quantized_images_stay_close_to_f32() {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("quality.json")).unwrap())
            .unwrap();
    let dir = std::env::temp_dir().join(format!("sd-weights-quality-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (steps, guidance) = (meta["steps"].to_string(), meta["guidance"].to_string());
    let mut report = Vec::new();
    for (quant, bound) in BOUNDS {
        let model = dir.join(quant);
        sd_weights(&[
            "convert",
            &s(&fixtures().join("model")),
            &s(&model),
            "--quant",
            quant,
        ]);
        check_dtypes(&model, quant);
        let mut figures = Vec::new();
        for case in meta["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let out = dir.join(format!("{quant}_{name}.npy"));
            let latents = fixtures().join(format!("{name}_latents.npy"));
            sd_weights(&[
                "generate",
                "--model",
                &s(&model),
                "--prompt",
                case["prompt"].as_str().unwrap(),
                "--steps",
                &steps,
                "--guidance",
                &guidance,
                "--scheduler",
                meta["scheduler"].as_str().unwrap(),
                "--latents",
                &s(&latents),
                "--output",
                &s(&out),
            ]);
            figures.push(psnr(
                &read(&out),
                &read(&fixtures().join(format!("{name}_image.npy"))),
            ));
        }
        let worst = figures.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = figures.iter().sum::<f64>() / figures.len() as f64;
        report.push(format!(
            "{quant}: PSNR mean {mean:.1} dB, worst {worst:.1} dB (bound {bound} dB)"
        ));
        eprintln!("{}", report.last().unwrap());
        assert!(
            worst >= bound,
            "{quant}: an image is only {worst:.1} dB from diffusers' f32 image: {figures:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
