//! A full-size SD 1.5 with random weights (`synth`), converted at q4 and q8: the size budgets
//! of the chunked format, and the host memory of streaming the q8 model onto the GPU (the
//! browser's wasm heap holds what the host holds here). About two minutes on two cores;
//! needs ~4 GB of temporary disk and ~1.5 GB of (software) GPU memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sd_webgpu::format::source::ConvertedModel;
use sd_webgpu::format::{Dtype, MAX_TENSOR_BYTES};
use sd_webgpu::model::{LoadOptions, StableDiffusion};

/// Counts the bytes this test process has allocated, and the peak.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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

fn total(dir: &Path) -> u64 {
    ConvertedModel::open(dir)
        .unwrap()
        .manifest()
        .chunks
        .iter()
        .map(|c| c.size)
        .sum()
}

#[test]
fn sd15_fits_the_size_budgets() {
    let dir = std::env::temp_dir().join(format!("sd-weights-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (synth, q4, q8) = (dir.join("sd15"), dir.join("q4"), dir.join("q8"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let t = Instant::now();
    sd_weights(&["synth", "--family", "sd15", &s(&synth)]);
    let t_synth = t.elapsed();
    sd_weights(&["convert", &s(&synth), &s(&q4), "--quant", "q4"]);
    let t_q4 = t.elapsed() - t_synth;
    sd_weights(&["convert", &s(&synth), &s(&q8), "--quant", "q8"]);
    let t_q8 = t.elapsed() - t_synth - t_q4;
    std::fs::remove_dir_all(&synth).unwrap();
    sd_weights(&["verify", &s(&q4)]);
    let (q4_bytes, q8_bytes) = (total(&q4), total(&q8));
    eprintln!(
        "synth {t_synth:.1?}, convert q4 {t_q4:.1?}, q8 {t_q8:.1?}; q4 {:.1} MB, q8 {:.1} MB",
        q4_bytes as f64 / 1e6,
        q8_bytes as f64 / 1e6
    );
    assert!(q4_bytes <= 800_000_000, "q4: {q4_bytes} bytes");
    assert!(q8_bytes <= 1_300_000_000, "q8: {q8_bytes} bytes");
    let model = ConvertedModel::open(&q4).unwrap();
    let m = model.manifest();
    assert_eq!((m.family.as_str(), m.tensors.len()), ("sd1", 1130));
    assert!(
        m.tensors
            .iter()
            .all(|t| t.stored_bytes() <= MAX_TENSOR_BYTES)
    );
    for (i, chunk) in m.chunks.iter().enumerate() {
        let inside = m
            .tensors
            .iter()
            .filter(|t| t.parts().iter().any(|p| p.chunk == i))
            .count();
        assert!(
            chunk.size <= 32 << 20 || inside == 1,
            "{} has {} bytes and {inside} tensors",
            chunk.path,
            chunk.size
        );
    }
    let q4_params: usize = m
        .tensors
        .iter()
        .filter(|t| t.dtype == Dtype::Q4)
        .map(|t| t.numel())
        .sum();
    assert!(q4_params > 900_000_000, "only {q4_params} values at q4");
    std::fs::remove_dir_all(&q4).unwrap();

    // Streaming q8 onto the GPU: the host holds about one chunk at a time.
    let device = pollster::block_on(sd_webgpu::device::gpu()).unwrap();
    let (base, t) = (CURRENT.load(Ordering::Relaxed), Instant::now());
    PEAK.store(base, Ordering::Relaxed);
    let model = StableDiffusion::load(&q8, &device, LoadOptions::default()).unwrap();
    device.sync().unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let on_gpu = model.weight_bytes();
    // q8 tensors at a byte per weight plus a scale per 32 (f16 where the device has
    // shader-f16, else f32); f16 embedding tables as f16 on such devices; the rest as f32.
    let f16 = device.supports_dtype(sd_webgpu::DType::F16);
    let converted = ConvertedModel::open(&q8).unwrap();
    let tensors = &converted.manifest().tensors;
    let size = |t: &sd_webgpu::format::TensorEntry| {
        let n = t.numel() as u64;
        match t.dtype {
            Dtype::Q8 => n + n / 32 * if f16 { 2 } else { 4 },
            Dtype::F16 if f16 && t.name.contains("embeddings.") => n * 2,
            _ => n * 4,
        }
    };
    let kept: u64 = tensors.iter().map(size).sum();
    let expanded: u64 = tensors.iter().map(|t| t.numel() as u64 * 4).sum();
    eprintln!(
        "q8 streamed onto the GPU in {:.1?}: host peak {:.1} MiB; weights on the GPU {:.1} MB (expanded to f32: {:.1} MB)",
        t.elapsed(),
        peak as f64 / (1 << 20) as f64,
        on_gpu as f64 / 1e6,
        expanded as f64 / 1e6
    );
    assert!(peak < 256 << 20, "loading took {peak} bytes of host memory");
    assert_eq!(on_gpu, kept, "weights on the GPU: not kept quantized?");
    drop(model);
    let _ = std::fs::remove_dir_all(&dir);
}
