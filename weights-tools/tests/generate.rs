//! `sd-weights generate` end to end, running the built binary on the tiny sd15 fixture.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A fresh, empty scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-weights-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sd-weights")).arg("generate").args(args).output().unwrap()
}

fn model() -> String {
    fixtures().join("sd15-tiny").display().to_string()
}

#[test]
fn png_is_written_with_its_parameters() {
    let dir = scratch("png");
    let out = dir.join("cube.png");
    let result = run(&[
        "--model", &model(), "--prompt", "a red cube", "--negative-prompt", "blurry", "--steps", "2", "--seed", "5",
        "--width", "32", "--height", "32", "--scheduler", "euler", "--output", out.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert!(String::from_utf8_lossy(&result.stderr).contains("step 2/2"));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height, info.color_type), (32, 32, png::ColorType::Rgb));
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .expect("a parameters chunk");
    assert_eq!(
        text,
        "a red cube\nNegative prompt: blurry\nSteps: 2, Sampler: euler, CFG scale: 7.5, Seed: 5, Size: 32x32, Model: sd15-tiny"
    );
    // Only the image: no temporary file left beside it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With the pipeline fixture's latents, the .npy output is diffusers' image.
#[test]
fn npy_with_latents_matches_diffusers() {
    let dir = scratch("npy");
    let out = dir.join("cat.npy");
    let latents = fixtures().join("pipeline/sd15_ddim_latents.npy");
    let result = run(&[
        "--model", &model(), "--prompt", "a photo of a cat", "--steps", "4", "--scheduler", "ddim",
        "--latents", latents.to_str().unwrap(), "--output", out.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let (shape, got) = sd_webgpu::npy::read_f32(&std::fs::read(&out).unwrap(), "output").unwrap();
    let want_bytes = std::fs::read(fixtures().join("pipeline/sd15_ddim_image.npy")).unwrap();
    let (want_shape, want) = sd_webgpu::npy::read_f32(&want_bytes, "golden").unwrap();
    assert_eq!(shape, want_shape);
    let worst = got.iter().zip(&want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(worst <= 0.5 / 255.0, "max abs error {worst}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_inputs_fail_clearly_without_output() {
    let dir = scratch("bad");
    // Latents of the wrong shape: [1, 4, 4, 4] for a 64×64 image.
    let latents = fixtures().join("pipeline/sd15_ddim_latents.npy");
    let latents = latents.to_str().unwrap();
    let missing = fixtures().join("no-such-model").display().to_string();
    let m = model();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("scheduler", vec!["--model", &m, "--scheduler", "warp-drive"], "unknown scheduler \"warp-drive\""),
        ("steps", vec!["--model", &m, "--steps", "0"], "steps = 0"),
        ("guidance", vec!["--model", &m, "--guidance", "NaN"], "guidance_scale = NaN"),
        ("width", vec!["--model", &m, "--width", "63"], "width = 63"),
        ("latents", vec!["--model", &m, "--latents", latents, "--width", "64", "--height", "64"], "--latents"),
        ("model", vec!["--model", &missing], "no-such-model"),
        ("spacing", vec!["--model", &m, "--timestep-spacing", "sideways"], "--timestep-spacing"),
    ];
    for (name, mut args, want) in cases {
        let out = dir.join(format!("{name}.png"));
        let out_s = out.to_str().unwrap().to_string();
        args.extend(["--prompt", "x", "--seed", "1", "--output", &out_s]);
        if !args.contains(&"--width") && !args.contains(&"--latents") {
            args.extend(["--width", "32", "--height", "32"]);
        }
        let result = run(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{name}: succeeded");
        assert!(stderr.contains(want), "{name}: stderr does not say {want:?}: {stderr}");
        assert!(!out.exists(), "{name}: left an output file");
    }
    // An unknown output extension.
    let out = dir.join("image.bmp");
    let result = run(&["--model", &m, "--prompt", "x", "--output", out.to_str().unwrap()]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains(".png or .npy"));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "files left behind");
    let _ = std::fs::remove_dir_all(&dir);
}
