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
    Command::new(env!("CARGO_BIN_EXE_sd-weights"))
        .arg("generate")
        .args(args)
        .output()
        .unwrap()
}

fn model() -> String {
    fixtures().join("sd15-tiny").display().to_string()
}

#[test]
fn png_is_written_with_its_parameters() {
    let dir = scratch("png");
    let out = dir.join("cube.png");
    let result = run(&[
        "--model",
        &model(),
        "--prompt",
        "a red cube",
        "--negative-prompt",
        "blurry",
        "--steps",
        "2",
        "--seed",
        "5",
        "--width",
        "32",
        "--height",
        "32",
        "--scheduler",
        "euler",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(String::from_utf8_lossy(&result.stderr).contains("step 2/2"));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!(
        (info.width, info.height, info.color_type),
        (32, 32, png::ColorType::Rgb)
    );
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .expect("a parameters chunk");
    assert_eq!(
        text,
        "a red cube\nNegative prompt: blurry\nSteps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 5, Size: 32x32, Model: sd15-tiny"
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
        "--model",
        &model(),
        "--prompt",
        "a photo of a cat",
        "--steps",
        "4",
        "--scheduler",
        "ddim",
        "--latents",
        latents.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let (shape, got) = sd_webgpu::npy::read_f32(&std::fs::read(&out).unwrap(), "output").unwrap();
    let want_bytes = std::fs::read(fixtures().join("pipeline/sd15_ddim_image.npy")).unwrap();
    let (want_shape, want) = sd_webgpu::npy::read_f32(&want_bytes, "golden").unwrap();
    assert_eq!(shape, want_shape);
    let worst = sd_webgpu::compare::max_abs_diff(&got, &want);
    assert!(worst <= 0.5 / 255.0, "max abs error {worst}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes an 8-bit PNG (`channels` 1 = grey, 2 = grey + alpha, 3 = RGB, 4 = RGBA).
fn write_png(path: &Path, width: usize, height: usize, pixels: &[u8], channels: usize) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut encoder = png::Encoder::new(file, width as u32, height as u32);
    let colour = [
        png::ColorType::Grayscale,
        png::ColorType::GrayscaleAlpha,
        png::ColorType::Rgb,
        png::ColorType::Rgba,
    ];
    encoder.set_color(colour[channels - 1]);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(pixels)
        .unwrap();
}

/// A pipeline fixture's float image (`[H, W, C]` or `[H, W]`, values v/255 or 0/1) as a PNG.
fn fixture_png(name: &str, path: &Path) {
    let (shape, values) = sd_webgpu::npy::read_f32(
        &std::fs::read(fixtures().join("pipeline").join(name)).unwrap(),
        name,
    )
    .unwrap();
    let pixels: Vec<u8> = values.iter().map(|v| (v * 255.0).round() as u8).collect();
    write_png(
        path,
        shape[1],
        shape[0],
        &pixels,
        shape.get(2).copied().unwrap_or(1),
    );
}

fn max_error(out: &Path, golden: &str) -> f64 {
    let (shape, got) = sd_webgpu::npy::read_f32(&std::fs::read(out).unwrap(), "output").unwrap();
    let want_bytes = std::fs::read(fixtures().join("pipeline").join(golden)).unwrap();
    let (want_shape, want) = sd_webgpu::npy::read_f32(&want_bytes, "golden").unwrap();
    assert_eq!(shape, want_shape);
    sd_webgpu::compare::max_abs_diff(&got, &want)
}

/// `--init-image` + `--mask` from PNGs with a seed give diffusers' inpainting image
/// (the `inpaint9_ddim_cfg` golden), and `--init-image` + `--strength` its img2img one.
#[test]
fn inpaint_and_img2img_from_pngs_match_diffusers() {
    let dir = scratch("inpaint");
    let (init, mask, out) = (
        dir.join("init.png"),
        dir.join("mask.png"),
        dir.join("out.npy"),
    );
    fixture_png("inpaint9_ddim_cfg_init.npy", &init);
    fixture_png("inpaint9_ddim_cfg_mask.npy", &mask);
    let inpaint_model = fixtures().join("sd15-inpaint-tiny").display().to_string();
    let result = run(&[
        "--model",
        &inpaint_model,
        "--prompt",
        "a red cube on a table",
        "--negative-prompt",
        "blurry",
        "--steps",
        "4",
        "--guidance",
        "7.5",
        "--seed",
        "18",
        "--init-image",
        init.to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let worst = max_error(&out, "inpaint9_ddim_cfg_image.npy");
    assert!(worst <= 0.5 / 255.0, "inpainting: max abs error {worst}");

    fixture_png("img2img_sd15_pndm_init.npy", &init);
    let result = run(&[
        "--model",
        &model(),
        "--prompt",
        "a watercolor landscape",
        "--steps",
        "5",
        "--guidance",
        "7.5",
        "--seed",
        "15",
        "--init-image",
        init.to_str().unwrap(),
        "--strength",
        "0.6",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    // 5 steps at strength 0.6 skip the first 2 of PNDM's 6 timesteps (PLMS repeats one), as
    // diffusers' get_timesteps does.
    assert!(String::from_utf8_lossy(&result.stderr).contains("step 4/4"));
    let worst = max_error(&out, "img2img_sd15_pndm_image.npy");
    assert!(worst <= 0.5 / 255.0, "img2img: max abs error {worst}");

    // The PNG's parameters record the strength.
    let png_out = dir.join("out.png");
    let result = run(&[
        "--model",
        &model(),
        "--prompt",
        "x",
        "--steps",
        "2",
        "--seed",
        "3",
        "--scheduler",
        "dpmpp-2m-karras",
        "--init-image",
        init.to_str().unwrap(),
        "--strength",
        "0.5",
        "--output",
        png_out.to_str().unwrap(),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let reader = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_out).unwrap(),
    ))
    .read_info()
    .unwrap();
    let text = &reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .unwrap()
        .text;
    assert!(text.ends_with("Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3, Size: 32x32, Model: sd15-tiny, Denoising strength: 0.5"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Transparency, as the tools people know treat it: an RGBA init image's transparent half
/// (its hidden RGB black) is white, so it gives the image of the same picture flattened onto
/// white; an RGBA mask whose shape is only in its alpha (white RGB everywhere) repaints that
/// shape, as the same mask in grey does, not everything.
#[test]
fn transparent_init_images_and_alpha_masks() {
    let dir = scratch("alpha");
    let (w, h) = (32, 32);
    let path = |name: &str| dir.join(name).display().to_string();
    // Left half an opaque gradient, right half transparent black.
    let mut rgba = Vec::new();
    let mut white = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let c = [(x * 8) as u8, (y * 8) as u8, 128];
            let opaque = x < w / 2;
            rgba.extend_from_slice(&if opaque {
                [c[0], c[1], c[2], 255]
            } else {
                [0, 0, 0, 0]
            });
            white.extend_from_slice(&if opaque { c } else { [255; 3] });
        }
    }
    write_png(&dir.join("rgba.png"), w, h, &rgba, 4);
    write_png(&dir.join("white.png"), w, h, &white, 3);
    // The mask: rows 8..24 repainted, in alpha (white RGB everywhere) and in grey.
    let repaint = |i: usize| (8..24).contains(&(i / w));
    let alpha_mask: Vec<u8> = (0..w * h)
        .flat_map(|i| [255, 255, 255, if repaint(i) { 255 } else { 0 }])
        .collect();
    let grey_mask: Vec<u8> = (0..w * h)
        .map(|i| if repaint(i) { 255 } else { 0 })
        .collect();
    write_png(&dir.join("alpha-mask.png"), w, h, &alpha_mask, 4);
    write_png(&dir.join("grey-mask.png"), w, h, &grey_mask, 1);

    let generate = |model: &str, init: &str, mask: Option<&str>, out: &str| {
        let (init, out, mask) = (path(init), path(out), mask.map(path));
        let mut args = vec![
            "--model",
            model,
            "--prompt",
            "a cube",
            "--steps",
            "2",
            "--seed",
            "4",
            "--init-image",
            &init,
        ];
        match &mask {
            Some(m) => args.extend(["--mask", m.as_str()]),
            None => args.extend(["--strength", "0.5"]),
        }
        args.extend(["--output", &out]);
        let result = run(&args);
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        sd_webgpu::npy::read_f32(&std::fs::read(&out).unwrap(), "output")
            .unwrap()
            .1
    };
    let (tiny, inpaint) = (
        model(),
        fixtures().join("sd15-inpaint-tiny").display().to_string(),
    );
    let (a, b) = (
        generate(&tiny, "rgba.png", None, "a.npy"),
        generate(&tiny, "white.png", None, "b.npy"),
    );
    assert_eq!(
        sd_webgpu::compare::max_abs_diff(&a, &b),
        0.0,
        "img2img: RGBA init vs flattened onto white"
    );
    let a = generate(&inpaint, "white.png", Some("alpha-mask.png"), "a.npy");
    let b = generate(&inpaint, "white.png", Some("grey-mask.png"), "b.npy");
    assert_eq!(
        sd_webgpu::compare::max_abs_diff(&a, &b),
        0.0,
        "inpainting: alpha mask vs grey mask"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `parameters` text of a PNG written by generate.
fn parameters(path: &Path) -> String {
    let reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()))
        .read_info()
        .unwrap();
    let info = reader.info();
    let latin1 = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone());
    let utf8 = info
        .utf8_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.get_text().unwrap());
    latin1.or(utf8).expect("a parameters chunk")
}

/// Every tiny fixture model generates a PNG whose parameters read back: text to image on
/// the SD 1.x- and SD 2.x-like models (a non-Latin-1 prompt goes to an iTXt chunk),
/// inpainting on the 9-channel model.
#[test]
fn each_tiny_model_writes_a_png_with_parameters() {
    let dir = scratch("each");
    let (init, mask) = (dir.join("init.png"), dir.join("mask.png"));
    fixture_png("inpaint9_ddim_cfg_init.npy", &init);
    fixture_png("inpaint9_ddim_cfg_mask.npy", &mask);
    let (init, mask) = (init.display().to_string(), mask.display().to_string());
    for (model, extra, prompt, want) in [
        (
            "sd15-tiny",
            vec![],
            "a red cube",
            "Sampler: PLMS, CFG scale: 7.5, Seed: 9, Size: 32x32, Model: sd15-tiny",
        ),
        (
            "sd2-tiny",
            vec!["--scheduler", "euler-a", "--clip-skip", "2"],
            "ein Würfel → 立方体",
            "Sampler: Euler a, CFG scale: 7.5, Seed: 9, Size: 32x32, Model: sd2-tiny, Clip skip: 2",
        ),
        (
            "sd15-inpaint-tiny",
            vec!["--init-image", &init, "--mask", &mask],
            "a cube",
            "Sampler: DDIM, CFG scale: 7.5, Seed: 9, Size: 32x32, Model: sd15-inpaint-tiny, Denoising strength: 1",
        ),
    ] {
        let out = dir.join(format!("{model}.png"));
        let m = fixtures().join(model).display().to_string();
        let mut args = vec![
            "--model",
            &m,
            "--prompt",
            prompt,
            "--steps",
            "2",
            "--seed",
            "9",
            "--output",
            out.to_str().unwrap(),
        ];
        if extra.is_empty() || model == "sd2-tiny" {
            args.extend(["--width", "32", "--height", "32"]);
        }
        args.extend(extra);
        let result = run(&args);
        assert!(
            result.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let text = parameters(&out);
        assert!(
            text.starts_with(&format!("{prompt}\nSteps: 2, ")),
            "{model}: {text}"
        );
        assert!(text.ends_with(want), "{model}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A model folder with a file missing is refused naming the file, with no output.
#[test]
fn incomplete_model_folder_is_named() {
    let dir = scratch("incomplete");
    let model = dir.join("model");
    for sub in ["tokenizer", "text_encoder", "unet", "vae", "scheduler"] {
        std::fs::create_dir_all(model.join(sub)).unwrap();
    }
    let src = fixtures().join("sd15-tiny");
    for file in [
        "model_index.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "unet/config.json",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ] {
        std::fs::copy(src.join(file), model.join(file)).unwrap();
    }
    let out = dir.join("out.png");
    let result = run(&[
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "x",
        "--width",
        "32",
        "--height",
        "32",
        "--output",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        stderr.contains("unet/diffusion_pytorch_model.safetensors"),
        "{stderr}"
    );
    assert!(!out.exists());
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
    let inpaint = fixtures().join("sd15-inpaint-tiny").display().to_string();
    let images = scratch("bad-images");
    let (init32, mask16) = (images.join("init.png"), images.join("mask.png"));
    write_png(&init32, 32, 32, &[128; 32 * 32 * 3], 3);
    write_png(&mask16, 16, 16, &[255; 16 * 16], 1);
    let (init32, mask16) = (init32.display().to_string(), mask16.display().to_string());
    let no_image = images.join("no-such.png").display().to_string();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "scheduler",
            vec!["--model", &m, "--scheduler", "warp-drive"],
            "unknown scheduler \"warp-drive\"",
        ),
        ("steps", vec!["--model", &m, "--steps", "0"], "steps = 0"),
        (
            "guidance",
            vec!["--model", &m, "--guidance", "NaN"],
            "guidance_scale = NaN",
        ),
        ("width", vec!["--model", &m, "--width", "63"], "width = 63"),
        (
            "latents",
            vec![
                "--model",
                &m,
                "--latents",
                latents,
                "--width",
                "64",
                "--height",
                "64",
            ],
            "--latents",
        ),
        ("model", vec!["--model", &missing], "no-such-model"),
        (
            "spacing",
            vec!["--model", &m, "--timestep-spacing", "sideways"],
            "--timestep-spacing",
        ),
        (
            "strength",
            vec!["--model", &m, "--init-image", &init32, "--strength", "1.5"],
            "strength = 1.5",
        ),
        (
            "few-steps",
            vec![
                "--model",
                &m,
                "--init-image",
                &init32,
                "--strength",
                "0.1",
                "--steps",
                "4",
            ],
            "no denoising step",
        ),
        (
            "mask-size",
            vec!["--model", &m, "--init-image", &init32, "--mask", &mask16],
            "mask: 16×16 differs",
        ),
        (
            "image-size",
            vec![
                "--model",
                &m,
                "--init-image",
                &init32,
                "--width",
                "64",
                "--height",
                "64",
            ],
            "init image: 32×32 differs",
        ),
        (
            "not-png",
            vec!["--model", &m, "--init-image", latents],
            "not a readable PNG",
        ),
        (
            "no-image",
            vec!["--model", &m, "--init-image", &no_image],
            "no-such.png",
        ),
        (
            "strength-alone",
            vec!["--model", &m, "--strength", "0.5"],
            "--init-image",
        ),
        (
            "inpaint-model",
            vec!["--model", &inpaint],
            "inpainting model",
        ),
        (
            "inpaint-no-mask",
            vec!["--model", &inpaint, "--init-image", &init32],
            "give a mask",
        ),
    ];
    for (name, mut args, want) in cases {
        let out = dir.join(format!("{name}.png"));
        let out_s = out.to_str().unwrap().to_string();
        args.extend(["--prompt", "x", "--seed", "1", "--output", &out_s]);
        if !args.contains(&"--width")
            && !args.contains(&"--latents")
            && !args.contains(&"--init-image")
        {
            args.extend(["--width", "32", "--height", "32"]);
        }
        let result = run(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{name}: succeeded");
        assert!(
            stderr.contains(want),
            "{name}: stderr does not say {want:?}: {stderr}"
        );
        assert!(!out.exists(), "{name}: left an output file");
    }
    // An unknown output extension.
    let out = dir.join("image.bmp");
    let result = run(&[
        "--model",
        &m,
        "--prompt",
        "x",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains(".png or .npy"));
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "files left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&images);
}

/// The committed converted fixtures (tests/fixtures/make_converted_fixtures.sh) still give
/// the committed images: the browser's load tests compare with those images.
#[test]
fn converted_fixture_images_are_current() {
    let dir = scratch("converted");
    for q in ["q8", "q4"] {
        let out = dir.join(format!("{q}.npy"));
        let model = fixtures()
            .join(format!("converted/sd15-tiny-{q}"))
            .display()
            .to_string();
        let result = run(&[
            "--model",
            &model,
            "--prompt",
            "a red cube on a table",
            "--steps",
            "3",
            "--scheduler",
            "euler-a",
            "--seed",
            "5",
            "--width",
            "32",
            "--height",
            "32",
            "--backend",
            "cpu",
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        let worst = max_error(&out, &format!("../converted/sd15-tiny-{q}_image.npy"));
        assert!(
            worst <= 0.5 / 255.0,
            "{q}: max abs error {worst}: re-run tests/fixtures/make_converted_fixtures.sh"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without --steps, --guidance or a size, the CLI uses the settings the model records
/// (`_sd_webgpu_defaults`: the built-in model's 20 steps, guidance 3, 64×64), as the page
/// does, and draws what the prompt asks.
#[test]
fn built_in_model_uses_its_own_defaults() {
    let dir = scratch("shapes");
    let out = dir.join("shapes.png");
    let shapes = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../www/models/shapes")
        .display()
        .to_string();
    let result = run(&[
        "--model",
        &shapes,
        "--prompt",
        "a red circle on a blue background",
        "--seed",
        "1",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        parameters(&out),
        "a red circle on a blue background\nSteps: 20, Sampler: Euler, CFG scale: 3, Seed: 1, Size: 64x64, Model: shapes"
    );
    let mut reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()))
        .read_info()
        .unwrap();
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut rgb).unwrap();
    let px = |x: usize, y: usize| [0, 1, 2].map(|k| rgb[(y * 64 + x) * 3 + k]);
    // Red (220, 30, 30) in the centre, blue (30, 60, 220) in the corner.
    let [r, g, b] = px(32, 32);
    assert!(r > 150 && g < 100 && b < 100, "centre {:?}", px(32, 32));
    let [r, g, b] = px(1, 1);
    assert!(b > 150 && r < 100 && g < 120, "corner {:?}", px(1, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without --width / --height the size is the model's: its UNet's `sample_size` × the VAE's
/// factor, as diffusers does (the tiny fixtures: 8 latent pixels × 8), `[height, width]`
/// lists included; not 512×512 whatever the model.
#[test]
fn default_size_is_the_models_own() {
    let dir = scratch("size");
    // sd15-tiny with its UNet's sample_size made [4, 8] (h, w): the other files linked, not copied.
    let (tiny, model) = (fixtures().join("sd15-tiny"), dir.join("model"));
    std::fs::create_dir_all(model.join("unet")).unwrap();
    for name in [
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "vae",
        "unet/diffusion_pytorch_model.safetensors",
    ] {
        std::os::unix::fs::symlink(tiny.join(name), model.join(name)).unwrap();
    }
    let config = std::fs::read_to_string(tiny.join("unet/config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["sample_size"], 8);
    config["sample_size"] = serde_json::json!([4, 8]);
    std::fs::write(model.join("unet/config.json"), config.to_string()).unwrap();
    for (m, want) in [
        (self::model(), (64, 64)),
        (model.display().to_string(), (64, 32)),
    ] {
        let out = dir.join("out.png");
        let result = run(&[
            "--model",
            &m,
            "--prompt",
            "a cube",
            "--steps",
            "1",
            "--seed",
            "1",
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(
            result.status.success(),
            "{m}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let (w, h, _) = png_rgb(&out);
        assert_eq!((w, h), want, "{m}: width × height");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pixels of an 8-bit RGB PNG.
fn png_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()))
        .read_info()
        .unwrap();
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut rgb).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    (info.width, info.height, rgb)
}

/// The committed page fixtures (tests/fixtures/make_page_fixtures.sh, with the same
/// settings) still are what the CLI makes from the built-in model: the page tests compare
/// the page's images with them.
#[test]
fn page_fixture_images_are_current() {
    let dir = scratch("page");
    let page = fixtures().join("page");
    let shapes = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../www/models/shapes")
        .display()
        .to_string();
    let init = page.join("text2img.png").display().to_string();
    let mask = page.join("mask.png").display().to_string();
    // The settings the page tests enter (see make_page_fixtures.sh)...
    let entered = [
        "--negative-prompt",
        "blurry",
        "--guidance",
        "3",
        "--scheduler",
        "euler-a",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "1234",
    ];
    let cases: [(&str, Vec<&str>); 4] = [
        (
            "text2img.png",
            [
                &entered[..],
                &["--prompt", "a red circle on a blue background"],
            ]
            .concat(),
        ),
        (
            "inpaint.png",
            [
                &entered[..],
                &[
                    "--prompt",
                    "a yellow square on a blue background",
                    "--init-image",
                    &init,
                    "--mask",
                    &mask,
                    "--strength",
                    "1",
                ],
            ]
            .concat(),
        ),
        (
            "img2img.png",
            [
                &entered[..],
                &[
                    "--prompt",
                    "a green circle on a blue background",
                    "--init-image",
                    &init,
                    "--strength",
                    "0.75",
                ],
            ]
            .concat(),
        ),
        // ... and the model's own defaults (steps, guidance, scheduler, size from its manifest).
        (
            "defaults.png",
            vec![
                "--prompt",
                "a red circle on a blue background",
                "--seed",
                "1",
            ],
        ),
    ];
    for (name, args) in cases {
        let out = dir.join(name);
        let mut all = vec!["--model", &shapes, "--backend", "cpu"];
        all.extend(args);
        all.extend(["--output", out.to_str().unwrap()]);
        let result = run(&all);
        assert!(
            result.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let (got, want) = (png_rgb(&out), png_rgb(&page.join(name)));
        assert_eq!((got.0, got.1), (want.0, want.1), "{name}: size");
        // 8-bit values: a rounding that lands the other way on another CPU moves one by 1.
        let worst = got
            .2
            .iter()
            .zip(&want.2)
            .map(|(g, w)| g.abs_diff(*w))
            .max()
            .unwrap_or(u8::MAX);
        assert!(
            worst <= 1,
            "{name}: a channel differs by {worst}/255: re-run tests/fixtures/make_page_fixtures.sh"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
