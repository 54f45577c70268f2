//! Shared helpers for the golden and kernel tests: deterministic inputs, plain-Rust
//! reference implementations, and the tolerance check. Used natively and in the browser.

#![allow(dead_code)]

pub mod reference;

use std::sync::Arc;

use sd_webgpu::safetensors::SafeTensors;
use sd_webgpu::weights::VarBuilder;
use sd_webgpu::{Device, Tensor, TensorData};

/// The bytes of a file under tests/fixtures, compiled into the test binary so the same test
/// runs natively and in the browser (which has no filesystem).
#[macro_export]
macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/",
            $path
        ))
        .as_slice()
    };
}

/// `fixture!` for a path built from parts (`fixture_at!("sd15-tiny", "/unet/config.json")`).
#[macro_export]
macro_rules! fixture_at {
    ($($part:expr),+) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/", $($part),+)).as_slice()
    };
}

/// Every file of a tiny fixture model folder, as `(path in the folder, bytes)`.
#[macro_export]
macro_rules! fixture_model {
    ($m:literal) => {
        [
            ("model_index.json", fixture_at!($m, "/model_index.json")),
            (
                "tokenizer/vocab.json",
                fixture_at!($m, "/tokenizer/vocab.json"),
            ),
            (
                "tokenizer/merges.txt",
                fixture_at!($m, "/tokenizer/merges.txt"),
            ),
            (
                "tokenizer/special_tokens_map.json",
                fixture_at!($m, "/tokenizer/special_tokens_map.json"),
            ),
            (
                "tokenizer/tokenizer_config.json",
                fixture_at!($m, "/tokenizer/tokenizer_config.json"),
            ),
            (
                "text_encoder/config.json",
                fixture_at!($m, "/text_encoder/config.json"),
            ),
            (
                "text_encoder/model.safetensors",
                fixture_at!($m, "/text_encoder/model.safetensors"),
            ),
            ("unet/config.json", fixture_at!($m, "/unet/config.json")),
            (
                "unet/diffusion_pytorch_model.safetensors",
                fixture_at!($m, "/unet/diffusion_pytorch_model.safetensors"),
            ),
            ("vae/config.json", fixture_at!($m, "/vae/config.json")),
            (
                "vae/diffusion_pytorch_model.safetensors",
                fixture_at!($m, "/vae/diffusion_pytorch_model.safetensors"),
            ),
            (
                "scheduler/scheduler_config.json",
                fixture_at!($m, "/scheduler/scheduler_config.json"),
            ),
        ]
    };
}

/// A float32 `.npy` fixture: its shape and values.
pub fn npy(bytes: &[u8]) -> (Vec<usize>, Vec<f32>) {
    sd_webgpu::npy::read_f32(bytes, "fixture").unwrap_or_else(|e| panic!("{e}"))
}

/// A `.npy` fixture as a tensor on `device`.
pub fn npy_tensor<const D: usize>(bytes: &[u8], device: &Device) -> Tensor<D> {
    let (shape, values) = npy(bytes);
    let shape: [usize; D] = shape
        .try_into()
        .unwrap_or_else(|s| panic!("fixture has rank {}, want {D}", Vec::len(&s)));
    tensor(&values, shape, device)
}

/// Weights from a safetensors fixture.
pub fn weights(bytes: &[u8], device: &Device) -> VarBuilder {
    let st = SafeTensors::from_bytes(bytes.to_vec(), "fixture").unwrap_or_else(|e| panic!("{e}"));
    VarBuilder::new(Arc::new(st), device)
}

/// A small deterministic generator (SplitMix64), so every tier and platform sees the same
/// inputs without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` values uniform in `[-scale, scale)`.
    pub fn uniform(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                (unit * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

pub fn tensor<const D: usize>(values: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// Max absolute error must stay within `rel_tol` times the output's scale (its largest
/// magnitude). Returns a message naming the worst element otherwise.
pub fn check_close(what: &str, got: &[f32], want: &[f32], rel_tol: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: got {} values, want {}",
            got.len(),
            want.len()
        ));
    }
    let scale = sd_webgpu::compare::max_abs(want).max(1e-12);
    let worst = sd_webgpu::compare::max_abs_diff(got, want);
    // Where the worst element is: the first that is not finite or differs by `worst`.
    let at = got
        .iter()
        .zip(want)
        .position(|(g, w)| !(((*g as f64 - *w as f64).abs()) < worst))
        .unwrap_or(0);
    if worst <= rel_tol * scale && scale.is_finite() {
        Ok(())
    } else {
        Err(format!(
            "{what}: max abs error {worst:.3e} at index {at} (got {}, want {}) exceeds {rel_tol:.0e} x scale {scale:.3e}",
            got[at], want[at]
        ))
    }
}

/// Runs an async check on each device of this tier: `cpu` and `wgpu` natively, `cpu` (flex
/// in wasm) and `webgpu` in the browser. A check returns `Err(message)` on mismatch.
#[macro_export]
macro_rules! on_every_device {
    ($($name:ident => $check:path;)+) => {$(
        mod $name {
            $crate::device_tests_but_browser_gpu!($check);

            #[cfg(target_arch = "wasm32")]
            #[wasm_bindgen_test::wasm_bindgen_test]
            async fn webgpu() {
                let device = sd_webgpu::device::gpu().await.unwrap_or_else(|e| panic!("{e}"));
                if let Err(e) = $check(&device).await {
                    panic!("{e}");
                }
            }
        }
    )+};
}

/// [`on_every_device`] but WebGPU in the browser (`cpu` and `wgpu` natively, `cpu` in the
/// browser): for checks whose GPU code the browser tier already runs in other cases, where
/// a software adapter's minutes (SwiftShader on machines without a GPU) buy nothing.
#[macro_export]
macro_rules! on_every_device_but_browser_gpu {
    ($($name:ident => $check:path;)+) => {$(
        mod $name {
            $crate::device_tests_but_browser_gpu!($check);
        }
    )+};
}

/// The test functions of [`on_every_device_but_browser_gpu`], inside a check's module.
#[macro_export]
macro_rules! device_tests_but_browser_gpu {
    ($check:path) => {
        #[cfg(not(target_arch = "wasm32"))]
        #[test]
        fn cpu() {
            let device = sd_webgpu::device::cpu();
            if let Err(e) = pollster::block_on($check(&device)) {
                panic!("{e}");
            }
        }

        #[cfg(target_arch = "wasm32")]
        #[wasm_bindgen_test::wasm_bindgen_test]
        async fn cpu() {
            if let Err(e) = $check(&sd_webgpu::device::cpu()).await {
                panic!("{e}");
            }
        }

        #[cfg(not(target_arch = "wasm32"))]
        #[test]
        fn wgpu() {
            pollster::block_on(async {
                let device = sd_webgpu::device::gpu()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                if let Err(e) = $check(&device).await {
                    panic!("{e}");
                }
            });
        }
    };
}
