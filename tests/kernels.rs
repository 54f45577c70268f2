//! The GPU kernels Stable Diffusion's UNet leans on, at shapes from SD 1.5's UNet (a 256×256
//! image: 32×32 latents, 320 channels, 8 heads of 40, CFG batch 2), compared with the plain
//! reference in `common/reference.rs`. Runs on burn's CPU backend and natively on wgpu
//! (tiers a and b), and in headless Chromium on WebGPU (tier c).

mod common;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use common::{Rng, check_close, reference, tensor};
use sd_webgpu::{Device, ops, read_f32};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// The tolerance the golden tests use: 1e-4 of the output's scale.
const TOL: f64 = 1e-4;

/// An attention projection: `[2, 1024, 320] x [320, 320]` (to_q in the first down block).
async fn matmul(device: &Device) -> Result<(), String> {
    let (b, m, k, n) = (2, 1024, 320, 320);
    let mut rng = Rng::new(1);
    let a = rng.uniform(b * m * k, 1.0);
    let w = rng.uniform(k * n, 0.05);
    let got = tensor(&a, [b, m, k], device).matmul(tensor(&w, [1, k, n], device));
    let got = read_f32(got).await.map_err(|e| e.to_string())?;
    check_close("matmul", &got, &reference::matmul(&a, &w, b, m, k, n), TOL)
}

/// A ResNet conv: 320 -> 320 channels, 3×3, padding 1, on 32×32.
async fn conv(device: &Device) -> Result<(), String> {
    let shape = [1, 320, 32, 32];
    let (c_out, kernel) = (320, 3);
    let mut rng = Rng::new(2);
    let x = rng.uniform(shape.iter().product(), 1.0);
    let w = rng.uniform(c_out * shape[1] * kernel * kernel, 0.02);
    let bias = rng.uniform(c_out, 0.1);
    let got = conv2d(
        tensor(&x, shape, device),
        tensor(&w, [c_out, shape[1], kernel, kernel], device),
        Some(tensor(&bias, [c_out], device)),
        ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
    );
    let got = read_f32(got).await.map_err(|e| e.to_string())?;
    check_close(
        "conv2d",
        &got,
        &reference::conv2d(&x, &w, &bias, shape, c_out, kernel, 1),
        TOL,
    )
}

/// GroupNorm(32, 320) on `[2, 320, 32, 32]` with an offset mean, as activations have.
async fn group_norm(device: &Device) -> Result<(), String> {
    let shape = [2, 320, 32, 32];
    let mut rng = Rng::new(3);
    let x: Vec<f32> = rng
        .uniform(shape.iter().product(), 2.0)
        .iter()
        .map(|v| v + 3.0)
        .collect();
    let weight = rng.uniform(320, 1.0);
    let bias = rng.uniform(320, 1.0);
    let got = ops::group_norm(
        tensor(&x, shape, device),
        32,
        1e-5,
        tensor(&weight, [320], device),
        tensor(&bias, [320], device),
    );
    let got = read_f32(got).await.map_err(|e| e.to_string())?;
    check_close(
        "group_norm",
        &got,
        &reference::group_norm(&x, shape, 32, 1e-5, &weight, &bias),
        TOL,
    )
}

async fn attention_case(
    device: &Device,
    what: &str,
    [b, h, n, m, d]: [usize; 5],
    seed: u64,
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let q = rng.uniform(b * h * n * d, 1.5);
    let k = rng.uniform(b * h * m * d, 1.5);
    let v = rng.uniform(b * h * m * d, 1.0);
    let got = ops::attention(
        tensor(&q, [b, h, n, d], device),
        tensor(&k, [b, h, m, d], device),
        tensor(&v, [b, h, m, d], device),
    );
    let got = read_f32(got).await.map_err(|e| e.to_string())?;
    let want = reference::attention(&q, &k, &v, [b * h, n, m, d], (d as f64).powf(-0.5));
    check_close(what, &got, &want, TOL)
}

/// Self-attention over 1024 tokens and cross-attention to 77 text tokens, 8 heads of 40.
async fn attention(device: &Device) -> Result<(), String> {
    attention_case(device, "self-attention", [2, 8, 1024, 1024, 40], 4).await?;
    attention_case(device, "cross-attention", [2, 8, 1024, 77, 40], 5).await
}

/// Attention computed in slices of query tokens (uneven: 300 rows in slices of 64) equals the
/// reference, as when the browser limit splits the 4096-token mid-block attention.
async fn sliced_attention(device: &Device) -> Result<(), String> {
    let (b, h, n, d) = (2, 1, 300, 32);
    let mut rng = Rng::new(11);
    let q = rng.uniform(b * h * n * d, 1.5);
    let k = rng.uniform(b * h * n * d, 1.5);
    let v = rng.uniform(b * h * n * d, 1.0);
    // Each query row of scores is b * h * n * 4 = 2400 bytes: 64 rows fit in 153600.
    let got = ops::sliced_attention_with_budget(
        tensor(&q, [b, h, n, d], device),
        tensor(&k, [b, h, n, d], device),
        tensor(&v, [b, h, n, d], device),
        64 * b * h * n * 4,
    );
    let got = read_f32(got).await.map_err(|e| e.to_string())?;
    let want = reference::attention(&q, &k, &v, [b * h, n, n, d], (d as f64).powf(-0.5));
    check_close("sliced attention", &got, &want, TOL)
}

on_every_device! {
    matmul => super::matmul;
    conv2d => super::conv;
    group_norm => super::group_norm;
    attention => super::attention;
    sliced_attention => super::sliced_attention;
}

/// The comparison must catch real kernel bugs, or the tests above prove nothing: a conv
/// with its kernel flipped, a group norm with the wrong group count, and attention without
/// the 1/√d scale all have to be rejected.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn typical_kernel_bugs_are_caught() {
    let device = sd_webgpu::device::cpu();
    let mut rng = Rng::new(9);

    let shape = [1, 8, 6, 6];
    let x = rng.uniform(shape.iter().product(), 1.0);
    let w = rng.uniform(8 * 8 * 9, 0.2);
    let bias = vec![0.0; 8];
    let flipped: Vec<f32> = w
        .chunks(9)
        .flat_map(|k| k.iter().rev().copied().collect::<Vec<_>>())
        .collect();
    let got = conv2d(
        tensor(&x, shape, &device),
        tensor(&flipped, [8, 8, 3, 3], &device),
        Some(tensor(&bias, [8], &device)),
        ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
    );
    let got = pollster::block_on(read_f32(got)).unwrap();
    assert!(
        check_close(
            "conv",
            &got,
            &reference::conv2d(&x, &w, &bias, shape, 8, 3, 1),
            TOL
        )
        .is_err()
    );

    let (weight, zero) = (vec![1.0; 8], vec![0.0; 8]);
    let got = ops::group_norm(
        tensor(&x, shape, &device),
        2,
        1e-5,
        tensor(&weight, [8], &device),
        tensor(&zero, [8], &device),
    );
    let got = pollster::block_on(read_f32(got)).unwrap();
    assert!(
        check_close(
            "gn",
            &got,
            &reference::group_norm(&x, shape, 4, 1e-5, &weight, &zero),
            TOL
        )
        .is_err()
    );

    let (n, d) = (16, 8);
    let q = rng.uniform(n * d, 2.0);
    let k = rng.uniform(n * d, 2.0);
    let v = rng.uniform(n * d, 1.0);
    let got = ops::attention(
        tensor(&q, [1, 1, n, d], &device),
        tensor(&k, [1, 1, n, d], &device),
        tensor(&v, [1, 1, n, d], &device),
    );
    let got = pollster::block_on(read_f32(got)).unwrap();
    assert!(
        check_close(
            "attn",
            &got,
            &reference::attention(&q, &k, &v, [1, n, n, d], 1.0),
            TOL
        )
        .is_err()
    );
    // ... while the correct scale passes, so the rejections above are about the bugs.
    assert!(
        check_close(
            "attn",
            &got,
            &reference::attention(&q, &k, &v, [1, n, n, d], (d as f64).powf(-0.5)),
            TOL
        )
        .is_ok()
    );
}

#[test]
#[cfg(not(target_arch = "wasm32"))]
fn check_close_rejects_nan_and_length_mismatch() {
    assert!(check_close("x", &[f32::NAN], &[1.0], TOL).is_err());
    assert!(check_close("x", &[1.0], &[1.0, 2.0], TOL).is_err());
    assert!(check_close("x", &[1.0, 2.00001], &[1.0, 2.0], TOL).is_ok());
}

/// The comparison every golden test uses fails on a NaN or an infinity, in the result or
/// in the expectation (a plain `f32::max` fold would drop a NaN and pass).
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn check_close_fails_non_finite_values() {
    assert!(check_close("same", &[1.0, -2.0], &[1.0, -2.0], TOL).is_ok());
    assert!(check_close("off", &[1.0, -1.0], &[1.0, -2.0], TOL).is_err());
    assert!(check_close("nan", &[f32::NAN, -2.0], &[1.0, -2.0], TOL).is_err());
    assert!(check_close("all nan", &[f32::NAN; 2], &[f32::NAN; 2], TOL).is_err());
    assert!(check_close("inf", &[f32::INFINITY, -2.0], &[1.0, -2.0], TOL).is_err());
}
