//! q8 / q4 weights kept quantized on the device (burn `QFloat`, dequantized inside the
//! matmul) against the same weights expanded to f32 on upload: the same image within 1/255,
//! at the stored size on GPUs. The model is the converted q8 fixture, and a q4 copy of it
//! re-encoded here. On the CPU backend q8 weights stay quantized and q4 ones are expanded
//! (burn's CPU matmul is wrong for transposed q4 weights), so there the q4 case checks the
//! expansion only.
//!
//! Native tiers only for now: in headless Chromium this test stalls the renderer past
//! ChromeDriver's 30 s limit (not yet understood). Quantized weights on WebGPU are checked
//! in the browser by `tests/web_api.rs` (q8 and q4 models streamed and kept quantized give
//! the native CPU images within 1/255).

#![cfg(not(target_arch = "wasm32"))]

mod common;

use sd_webgpu::Device;
use sd_webgpu::format::{self, ALIGN, Dtype, FileEntry, Manifest, stream::StreamingLoader};
use sd_webgpu::model::{LoadOptions, StableDiffusion};
use sd_webgpu::pipeline::{GenerateParams, Image};

/// The converted fixture: manifest, its other files, its chunks.
fn fixture_model() -> (Manifest, Vec<(&'static str, &'static [u8])>, Vec<Vec<u8>>) {
    let manifest = std::str::from_utf8(fixture!("converted/sd15-tiny-q8/manifest.json")).unwrap();
    let files = vec![
        (
            "tokenizer/merges.txt",
            fixture!("converted/sd15-tiny-q8/tokenizer/merges.txt"),
        ),
        (
            "tokenizer/special_tokens_map.json",
            fixture!("converted/sd15-tiny-q8/tokenizer/special_tokens_map.json"),
        ),
        (
            "tokenizer/tokenizer_config.json",
            fixture!("converted/sd15-tiny-q8/tokenizer/tokenizer_config.json"),
        ),
        (
            "tokenizer/vocab.json",
            fixture!("converted/sd15-tiny-q8/tokenizer/vocab.json"),
        ),
    ];
    let chunks = [
        fixture!("converted/sd15-tiny-q8/chunk-000.bin"),
        fixture!("converted/sd15-tiny-q8/chunk-001.bin"),
        fixture!("converted/sd15-tiny-q8/chunk-002.bin"),
        fixture!("converted/sd15-tiny-q8/chunk-003.bin"),
        fixture!("converted/sd15-tiny-q8/chunk-004.bin"),
    ];
    (
        Manifest::from_json(manifest).unwrap(),
        files,
        chunks.iter().map(|c| c.to_vec()).collect(),
    )
}

/// The model with every q8 tensor re-encoded at q4, in one chunk.
fn to_q4(manifest: &Manifest, chunks: &[Vec<u8>]) -> (Manifest, Vec<Vec<u8>>) {
    let mut out = manifest.clone();
    out.quantization = Dtype::Q4;
    let mut chunk = Vec::new();
    for t in &mut out.tensors {
        assert!(t.parts.is_none(), "the fixture has no split tensors");
        let (c, o, l) = (
            t.chunk.unwrap(),
            t.offset.unwrap() as usize,
            t.length.unwrap() as usize,
        );
        let mut stored = chunks[c][o..o + l].to_vec();
        if t.dtype == Dtype::Q8 {
            let values = format::decode(Dtype::Q8, &stored, t.numel()).unwrap();
            stored = format::encode(Dtype::Q4, &values).unwrap();
            t.dtype = Dtype::Q4;
        }
        while chunk.len() as u64 % ALIGN != 0 {
            chunk.push(0);
        }
        (t.chunk, t.offset, t.length) =
            (Some(0), Some(chunk.len() as u64), Some(stored.len() as u64));
        chunk.extend_from_slice(&stored);
    }
    out.chunk_size = chunk.len() as u64;
    out.chunks = vec![FileEntry {
        path: "chunk-000.bin".into(),
        size: chunk.len() as u64,
        sha256: format::sha256_hex(&chunk),
    }];
    out.validate().unwrap();
    (out, vec![chunk])
}

fn load(
    manifest: &Manifest,
    files: &[(&str, &[u8])],
    chunks: &[Vec<u8>],
    device: &Device,
    keep: bool,
) -> StableDiffusion {
    let mut load = StreamingLoader::new(manifest.clone(), device)
        .unwrap()
        .keep_quantized(keep);
    for (path, bytes) in files {
        load.add_file(path, bytes.to_vec()).unwrap();
    }
    for (i, chunk) in chunks.iter().enumerate() {
        load.add_chunk(i, chunk).unwrap();
    }
    let files = load.finish().unwrap();
    StableDiffusion::load(&files, device, LoadOptions::default()).unwrap()
}

/// Device bytes of the weights: quantized tensors at 8 or 4 bits plus a scale per 32 values
/// when kept (`kept(bits)`; f16 scales on devices with f16, else f32), f16 embedding tables
/// at 2 bytes on such devices, everything else (and everything when expanded) as f32.
fn expected_bytes(manifest: &Manifest, kept: impl Fn(u32) -> bool, f16: bool) -> u64 {
    let scale = if f16 { 2 } else { 4 };
    manifest
        .tensors
        .iter()
        .map(|t| {
            let n = t.numel() as u64;
            let table = t.component == "text_encoder" && t.name.contains("embeddings.");
            match t.dtype {
                Dtype::Q8 if kept(8) => n + n / 32 * scale,
                Dtype::Q4 if kept(4) => n / 2 + n / 32 * scale,
                Dtype::F16 if f16 && table => n * 2,
                _ => n * 4,
            }
        })
        .sum()
}

/// Largest difference of the 8-bit values, in 1/255 (infinite for a NaN).
fn worst_difference(a: &Image, b: &Image) -> f64 {
    let eight_bit = |img: &Image| {
        img.rgb
            .iter()
            .map(|v| (v * 255.0).round())
            .collect::<Vec<f32>>()
    };
    sd_webgpu::compare::max_abs_diff(&eight_bit(a), &eight_bit(b))
}

async fn kept_equals_expanded(device: &Device) -> Result<(), String> {
    let (q8, files, q8_chunks) = fixture_model();
    let (q4, q4_chunks) = to_q4(&q8, &q8_chunks);
    let keeps = |bits| sd_webgpu::device::keeps_quantized(device, bits);
    let f16 = device.supports_dtype(sd_webgpu::DType::F16);
    println!(
        "weights kept quantized: q8 {}, q4 {}; f16 on the device: {f16}",
        keeps(8),
        keeps(4)
    );
    let params = GenerateParams {
        prompt: "a red cube on a table".into(),
        steps: 3,
        width: 32,
        height: 32,
        seed: 5,
        ..Default::default()
    };
    for (name, manifest, chunks) in [("q8", &q8, &q8_chunks), ("q4", &q4, &q4_chunks)] {
        let kept = load(manifest, &files, chunks, device, true);
        let expanded = load(manifest, &files, chunks, device, false);
        let (kept_bytes, expanded_bytes) = (kept.weight_bytes(), expanded.weight_bytes());
        let want = (
            expected_bytes(manifest, keeps, f16),
            expected_bytes(manifest, |_| false, false),
        );
        if (kept_bytes, expanded_bytes) != want {
            return Err(format!(
                "{name}: weights take {kept_bytes} bytes kept and {expanded_bytes} expanded, want {want:?}"
            ));
        }
        let a = kept
            .generate(&params, |_| true)
            .await
            .map_err(|e| e.to_string())?;
        let b = expanded
            .generate(&params, |_| true)
            .await
            .map_err(|e| e.to_string())?;
        let worst = worst_difference(&a, &b);
        println!(
            "{name}: weights {kept_bytes} bytes kept, {expanded_bytes} expanded; images differ by {worst}/255"
        );
        if worst > 1.0 {
            return Err(format!(
                "{name}: the image with quantized weights on the device differs by {worst}/255"
            ));
        }
    }
    Ok(())
}

on_every_device! {
    kept_quantized => crate::kept_equals_expanded;
}
