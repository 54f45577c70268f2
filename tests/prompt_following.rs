//! The built-in model (`www/models/shapes`, trained by `weights-tools/train/train_shapes.py`)
//! draws what it is asked: the same check as `weights-tools/train/eval_shapes.py` runs in
//! Python, here on the converted (q8) model through our own pipeline.
//!
//! - Text to image: 48 prompts covering every shape, colour, background colour and size
//!   ([`prompts`]) × seeds 0 and 1, 64×64, the model's default steps, guidance and scheduler
//!   (`_sd_webgpu_defaults` in its scheduler config). The shape's colour is the nearest of
//!   the 8 named colours to the mean of the central 8×8 pixels, the background's that of the
//!   4-pixel border ring: the first must be right in ≥ 85 % of the images, the second in
//!   ≥ 90 %.
//! - Inpainting (4-channel, as diffusers' `StableDiffusionInpaintPipeline` with a plain
//!   UNet): each seed-0 image, in 8 bits, gets its central 32×32 square repainted with the
//!   prompt naming another colour ([`repaint_colour`]); the centre must come out in that
//!   colour in ≥ 80 % of the cases.
//! - Inpainting keeps what is outside the mask: the same repaint with a prompt that also
//!   names another background ([`other_background`]); the border ring must keep the init
//!   image's colour in ≥ 60 % of the cases. Measured 66.7 % (32/48; the misses are borders in a
//!   neighbouring colour, green and black or yellow and orange swapped); a pipeline that ignores the mask or the init image draws the background asked
//!   for and scores 2 % (1/48, measured with text to image of the same prompts).
//!
//! The first three are issue 8's targets ([`FLOORS`]).
//!
//! The CPU tier runs all of it (96 + 96 generations, 30 to 60 s on two cores). The wgpu
//! tier runs the same pipeline on GPU kernels, where lavapipe takes 5 to 16 s per
//! generation depending on the machine: it draws a subset ([`WGPU`]: 4 prompts with seed
//! 0 and 2 inpaintings of each kind) and each image must equal the CPU's image of the same
//! case within [`GPU_TOL`], which catches a wrong kernel far better than colour shares of a
//! few images (and so the colours are the CPU's, whose shares the CPU tier holds).
//!
//! The model is compiled in and loaded through the streaming loader, as the browser loads it.

// Native tiers only: on SwiftShader even 12 generations did not finish in 450 s, past the
// browser tier's budget. The same pipeline code is checked in the browser by
// tests/pipeline.rs against diffusers' images.
#![cfg(not(target_arch = "wasm32"))]

use sd_webgpu::Device;
use sd_webgpu::format::Manifest;
use sd_webgpu::format::stream::StreamingLoader;
use sd_webgpu::model::{LoadOptions, StableDiffusion};
use sd_webgpu::pipeline::{GenerateParams, Image, Mask};

macro_rules! shapes_file {
    ($path:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../www/models/shapes/",
            $path
        ))
        .as_slice()
    };
}

/// Loads the converted model from its compiled-in files.
fn load(device: &Device) -> Result<StableDiffusion, String> {
    let manifest = std::str::from_utf8(shapes_file!("manifest.json")).map_err(|e| e.to_string())?;
    let manifest = Manifest::from_json(manifest).map_err(|e| e.to_string())?;
    if manifest.chunks.len() != 6 {
        return Err(format!(
            "the test compiles in six chunks; the model has {}",
            manifest.chunks.len()
        ));
    }
    let mut loader = StreamingLoader::new(manifest, device).map_err(|e| e.to_string())?;
    let files: [(&str, &[u8]); 4] = [
        ("tokenizer/vocab.json", shapes_file!("tokenizer/vocab.json")),
        ("tokenizer/merges.txt", shapes_file!("tokenizer/merges.txt")),
        (
            "tokenizer/special_tokens_map.json",
            shapes_file!("tokenizer/special_tokens_map.json"),
        ),
        (
            "tokenizer/tokenizer_config.json",
            shapes_file!("tokenizer/tokenizer_config.json"),
        ),
    ];
    for (path, bytes) in files {
        loader
            .add_file(path, bytes.to_vec())
            .map_err(|e| e.to_string())?;
    }
    let chunks = [
        shapes_file!("chunk-000.bin"),
        shapes_file!("chunk-001.bin"),
        shapes_file!("chunk-002.bin"),
        shapes_file!("chunk-003.bin"),
        shapes_file!("chunk-004.bin"),
        shapes_file!("chunk-005.bin"),
    ];
    for (i, chunk) in chunks.iter().enumerate() {
        loader.add_chunk(i, chunk).map_err(|e| e.to_string())?;
    }
    let files = loader.finish().map_err(|e| e.to_string())?;
    StableDiffusion::load(&files, device, LoadOptions::default()).map_err(|e| e.to_string())
}

const SHAPES: [&str; 3] = ["circle", "square", "triangle"];
const SIZES: [&str; 3] = ["", "small", "large"];
/// The named colours (RGB 0-255), as `weights-tools/train/shapes.py` draws them.
const COLOURS: [(&str, [f32; 3]); 8] = [
    ("red", [220.0, 30.0, 30.0]),
    ("green", [30.0, 170.0, 50.0]),
    ("blue", [30.0, 60.0, 220.0]),
    ("yellow", [245.0, 220.0, 30.0]),
    ("white", [245.0, 245.0, 245.0]),
    ("black", [15.0, 15.0, 15.0]),
    ("orange", [245.0, 140.0, 20.0]),
    ("purple", [140.0, 40.0, 180.0]),
];

#[derive(Clone, Copy, Debug)]
struct Prompt {
    shape: usize,
    colour: usize,
    background: usize,
    size: usize,
}

/// `shapes.eval_prompts()`: prompt i has shape i % 3, colour i % 8, background
/// (i % 8 + 1 + (i / 8) % 7) % 8 (never the shape's colour), size (i / 3) % 3.
fn prompts() -> Vec<Prompt> {
    (0..48)
        .map(|i| {
            let colour = i % 8;
            Prompt {
                shape: i % 3,
                colour,
                background: (colour + 1 + (i / 8) % 7) % 8,
                size: (i / 3) % 3,
            }
        })
        .collect()
}

/// "an" before a vowel.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// `shapes.caption()`: "a [small |large ]<colour> <shape> on a <background> background".
fn caption(p: &Prompt, colour: usize) -> String {
    let (size, colour, bg) = (SIZES[p.size], COLOURS[colour].0, COLOURS[p.background].0);
    let first = if size.is_empty() { colour } else { size };
    let size = if size.is_empty() {
        String::new()
    } else {
        format!("{size} ")
    };
    format!(
        "{} {size}{colour} {} on {} {bg} background",
        article(first),
        SHAPES[p.shape],
        article(bg)
    )
}

/// `shapes.repaint_colour()`: the first of colour + 3, + 4, ... (cyclically) that is neither
/// the shape's nor the background's colour.
fn repaint_colour(p: &Prompt) -> usize {
    (3..11)
        .map(|k| (p.colour + k) % 8)
        .find(|&c| c != p.colour && c != p.background)
        .unwrap()
}

/// A background colour for the same repaint that is neither the init image's background nor
/// the repaint colour: the first of background + 4, + 5, ... (cyclically).
fn other_background(p: &Prompt, colour: usize) -> usize {
    (4..12)
        .map(|k| (p.background + k) % 8)
        .find(|&c| c != p.background && c != colour)
        .unwrap()
}

/// The nearest named colour to a mean RGB in [0, 1].
fn nearest(rgb: [f32; 3]) -> usize {
    let dist = |c: &[f32; 3]| (0..3).map(|k| (rgb[k] * 255.0 - c[k]).powi(2)).sum::<f32>();
    (0..8)
        .min_by(|&a, &b| dist(&COLOURS[a].1).total_cmp(&dist(&COLOURS[b].1)))
        .unwrap()
}

/// Mean colour of the pixels `inside(x, y)` of a 64×64 image.
fn mean(img: &Image, inside: impl Fn(usize, usize) -> bool) -> [f32; 3] {
    let (mut sum, mut n) = ([0f64; 3], 0usize);
    for y in 0..img.height {
        for x in 0..img.width {
            if inside(x, y) {
                for k in 0..3 {
                    sum[k] += img.rgb[(y * img.width + x) * 3 + k] as f64;
                }
                n += 1;
            }
        }
    }
    sum.map(|s| (s / n as f64) as f32)
}

/// Colour of the central 8×8 pixels.
fn centre(img: &Image) -> usize {
    nearest(mean(img, |x, y| {
        (28..36).contains(&x) && (28..36).contains(&y)
    }))
}

/// Colour of the 4-pixel border ring.
fn border(img: &Image) -> usize {
    nearest(mean(img, |x, y| x < 4 || y < 4 || x >= 60 || y >= 60))
}

fn log(msg: &str) {
    eprintln!("{msg}");
}

/// Shares required of right shape colours, background colours and inpainted colours (issue
/// 8's targets), and of inpaintings that keep the init image's border colour.
const FLOORS: [f64; 4] = [0.85, 0.90, 0.80, 0.60];

/// How much of the check a tier runs.
struct Scope {
    prompts: usize,
    seeds: &'static [u64],
    inpaint: usize,
}

const FULL: Scope = Scope {
    prompts: 48,
    seeds: &[0, 1],
    inpaint: 48,
};
/// Prompts 0..4 cover every shape and four colours (`prompts()` cycles them); the kernels'
/// agreement with diffusers is the pipeline goldens' job, so a few images suffice here.
const WGPU: Scope = Scope {
    prompts: 4,
    seeds: &[0],
    inpaint: 2,
};

/// The wgpu tier's images against the CPU's (max channel difference, in [0, 1]): the same
/// 8-bit image. Measured on lavapipe: 0.01/255.
const GPU_TOL: f64 = 0.5 / 255.0;

/// At least `share` of `total`, rounded up.
fn needed(share: f64, total: usize) -> usize {
    (share * total as f64 - 1e-9).ceil() as usize
}

/// What a scope drew: the images of the first seed, then the inpainted ones (both kinds of
/// each case in turn), and whether the shares reach [`FLOORS`].
struct Drawn {
    images: Vec<Image>,
    floors_met: Result<(), String>,
}

/// Draws the scope's images and counts the shares.
async fn draw(device: &Device, scope: Scope) -> Result<Drawn, String> {
    let model = load(device)?;
    // The model's own settings (its recorded `_sd_webgpu_defaults`: steps, guidance, 64×64).
    let defaults = model.info().defaults;
    let (steps, guidance_scale) = (defaults.steps, defaults.guidance_scale);
    let base = GenerateParams {
        steps,
        guidance_scale,
        width: defaults.width,
        height: defaults.height,
        ..Default::default()
    };
    let prompts = &prompts()[..scope.prompts];

    let (mut images, mut misses) = (Vec::new(), Vec::new());
    let (mut shape_ok, mut bg_ok) = (0, 0);
    for &seed in scope.seeds {
        for p in prompts {
            let prompt = caption(p, p.colour);
            let params = GenerateParams {
                prompt: prompt.clone(),
                seed,
                ..base.clone()
            };
            let img = model
                .generate(&params, |_| true)
                .await
                .map_err(|e| format!("{prompt:?}: {e}"))?;
            let (c, b) = (centre(&img), border(&img));
            shape_ok += usize::from(c == p.colour);
            bg_ok += usize::from(b == p.background);
            if c != p.colour || b != p.background {
                misses.push(format!(
                    "seed {seed} {prompt:?}: centre {}, border {}",
                    COLOURS[c].0, COLOURS[b].0
                ));
            }
            if seed == scope.seeds[0] {
                images.push(img);
            }
        }
    }
    let total = prompts.len() * scope.seeds.len();

    let mut mask = vec![0f32; 64 * 64];
    for y in 16..48 {
        mask[y * 64 + 16..y * 64 + 48].fill(1.0);
    }
    let mut inpaint_ok = 0;
    let mut kept_ok = 0;
    let mut inpainted = Vec::new();
    for (i, (p, img)) in prompts.iter().zip(&images).take(scope.inpaint).enumerate() {
        let colour = repaint_colour(p);
        let prompt = caption(p, colour);
        let init = Image::from_rgb8(64, 64, &img.to_rgb8(), 3).map_err(|e| e.to_string())?;
        let params = GenerateParams {
            prompt: prompt.clone(),
            seed: 100 + i as u64,
            init_image: Some(init.clone()),
            mask: Some(Mask {
                width: 64,
                height: 64,
                values: mask.clone(),
            }),
            ..base.clone()
        };
        let out = model
            .generate(&params, |_| true)
            .await
            .map_err(|e| format!("inpaint {prompt:?}: {e}"))?;
        let c = centre(&out);
        inpaint_ok += usize::from(c == colour);
        if c != colour {
            misses.push(format!("inpaint {prompt:?}: centre {}", COLOURS[c].0));
        }
        // The same repaint asking for another background: away from the mask the init
        // image must stay (its border colour), where a pipeline that ignores the mask or
        // the init image draws the background asked for.
        let elsewhere = Prompt {
            background: other_background(p, colour),
            ..*p
        };
        let params = GenerateParams {
            prompt: caption(&elsewhere, colour),
            ..params
        };
        let out2 = model
            .generate(&params, |_| true)
            .await
            .map_err(|e| format!("inpaint {:?}: {e}", params.prompt))?;
        let (want, got) = (border(&init), border(&out2));
        kept_ok += usize::from(got == want);
        if got != want {
            misses.push(format!(
                "inpaint {:?}: border {} where the init image's is {}",
                params.prompt, COLOURS[got].0, COLOURS[want].0
            ));
        }
        inpainted.extend([out, out2]);
    }
    let cases = scope.inpaint.min(images.len());

    for m in &misses {
        log(&format!("  miss: {m}"));
    }
    let summary = format!(
        "shape colour {shape_ok}/{total} ({:.1} %), background colour {bg_ok}/{total} ({:.1} %), inpainted colour {inpaint_ok}/{cases} ({:.1} %), border kept {kept_ok}/{cases} ({:.1} %); {steps} steps, guidance {guidance_scale}",
        100.0 * shape_ok as f64 / total as f64,
        100.0 * bg_ok as f64 / total as f64,
        100.0 * inpaint_ok as f64 / cases as f64,
        100.0 * kept_ok as f64 / cases as f64,
    );
    log(&summary);
    let [shape, bg, inpaint, kept] = FLOORS;
    let met = shape_ok >= needed(shape, total)
        && bg_ok >= needed(bg, total)
        && inpaint_ok >= needed(inpaint, cases)
        && kept_ok >= needed(kept, cases);
    let floors_met = if met {
        Ok(())
    } else {
        Err(format!("prompt following below {FLOORS:?}: {summary}"))
    };
    Ok(Drawn {
        images: images.into_iter().chain(inpainted).collect(),
        floors_met,
    })
}

mod prompt_following {
    use super::{FULL, GPU_TOL, WGPU, draw};

    #[test]
    fn cpu() {
        let drawn = pollster::block_on(draw(&sd_webgpu::device::cpu(), FULL))
            .unwrap_or_else(|e| panic!("{e}"));
        drawn.floors_met.unwrap_or_else(|e| panic!("{e}"));
    }

    /// GPU kernels give the CPU's images.
    #[test]
    fn wgpu() {
        let gpu = pollster::block_on(async {
            let device = sd_webgpu::device::gpu()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            draw(&device, WGPU).await.unwrap_or_else(|e| panic!("{e}"))
        });
        let cpu = pollster::block_on(draw(&sd_webgpu::device::cpu(), WGPU))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gpu.images.len(), cpu.images.len());
        for (i, (g, c)) in gpu.images.iter().zip(&cpu.images).enumerate() {
            assert_eq!((g.width, g.height), (c.width, c.height));
            let worst = sd_webgpu::compare::max_abs_diff(&g.rgb, &c.rgb);
            eprintln!(
                "image {i}: wgpu vs cpu, worst channel difference {:.2}/255",
                worst * 255.0
            );
            assert!(
                worst <= GPU_TOL,
                "image {i}: wgpu differs from the CPU by {:.2}/255 (max {:.0}/255)",
                worst * 255.0,
                GPU_TOL * 255.0
            );
        }
    }
}

/// Natively the converted folder loads through `StableDiffusion::load` from its path too, and
/// gives the streamed model's image.
#[test]
fn loading_the_folder_gives_the_streamed_image() {
    let device = sd_webgpu::device::cpu();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../www/models/shapes");
    let from_dir = StableDiffusion::load(&dir, &device, LoadOptions::default()).unwrap();
    let streamed = load(&device).unwrap();
    let params = GenerateParams {
        prompt: "a red circle on a blue background".into(),
        steps: 4,
        width: 64,
        height: 64,
        ..Default::default()
    };
    let a = pollster::block_on(from_dir.generate(&params, |_| true)).unwrap();
    let b = pollster::block_on(streamed.generate(&params, |_| true)).unwrap();
    assert_eq!(a, b);
}
