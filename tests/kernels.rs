//! The GPU kernels Stable Diffusion's UNet leans on, at shapes from SD 1.5's UNet (a 256×256
//! image: 32×32 latents, 320 channels, 8 heads of 40, CFG batch 2), compared with the plain
//! reference in `common/reference.rs`. Runs on burn's CPU backend and natively on wgpu
//! (tiers a and b), and in headless Chromium on WebGPU (tier c).

mod common;

use common::{Rng, check_close, reference, tensor};
use sd_webgpu::{Device, kernels, ops, read_f32};

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

/// One conv through `kernels::conv2d` against the reference: `shape` is the input
/// `[b, c_in, h, w]`; stride 2 is checked as every other pixel of the stride-1 result.
async fn conv_case(
    device: &Device,
    shape: [usize; 4],
    c_out: usize,
    kernel: usize,
    stride: usize,
    seed: u64,
) -> Result<(), String> {
    let pad = kernel / 2;
    let mut rng = Rng::new(seed);
    let x = rng.uniform(shape.iter().product(), 1.0);
    let w = rng.uniform(c_out * shape[1] * kernel * kernel, 0.02);
    let bias = rng.uniform(c_out, 0.1);
    let got = kernels::conv2d(
        tensor(&x, shape, device),
        tensor(&w, [c_out, shape[1], kernel, kernel], device),
        tensor(&bias, [c_out], device),
        stride,
        pad,
    );
    let got = read_f32(got).await.map_err(|e| e.to_string())?;
    let full = reference::conv2d(&x, &w, &bias, shape, c_out, kernel, pad);
    let [b, _, h, wd] = shape;
    let want: Vec<f32> = (0..b * c_out)
        .flat_map(|plane| {
            let full = &full[plane * h * wd..][..h * wd];
            (0..h)
                .step_by(stride)
                .flat_map(move |y| (0..wd).step_by(stride).map(move |x| full[y * wd + x]))
        })
        .collect();
    let name = format!("conv2d {shape:?} -> {c_out}, {kernel}x{kernel} stride {stride}");
    check_close(&name, &got, &want, TOL)
}

/// A ResNet conv (320 -> 320, 3×3 on 32×32), then shapes that leave every GEMM tile ragged:
/// few channels, odd sizes, a 1×1 shortcut, a stride-2 downsample, batch 2.
async fn conv(device: &Device) -> Result<(), String> {
    conv_case(device, [1, 320, 32, 32], 320, 3, 1, 2).await?;
    conv_case(device, [2, 5, 9, 11], 7, 3, 1, 21).await?;
    conv_case(device, [2, 40, 13, 5], 70, 1, 1, 22).await?;
    conv_case(device, [2, 24, 9, 9], 24, 3, 2, 23).await?;
    conv_case(device, [1, 3, 8, 8], 130, 3, 1, 24).await?;
    // With the residual added as the conv writes, on both kernels' shapes.
    for (seed, shape) in [(25, [2, 16, 12, 12]), (26, [2, 16, 4, 4])] {
        let mut rng = Rng::new(seed);
        let c_out = 24;
        let x = rng.uniform(shape.iter().product(), 1.0);
        let w = rng.uniform(c_out * shape[1] * 9, 0.05);
        let bias = rng.uniform(c_out, 0.1);
        let out_shape = [shape[0], c_out, shape[2], shape[3]];
        let res = rng.uniform(out_shape.iter().product(), 1.0);
        let got = kernels::conv2d_add(
            tensor(&x, shape, device),
            tensor(&w, [c_out, shape[1], 3, 3], device),
            tensor(&bias, [c_out], device),
            1,
            1,
            Some(tensor(&res, out_shape, device)),
        );
        let got = read_f32(got).await.map_err(|e| e.to_string())?;
        let want: Vec<f32> = reference::conv2d(&x, &w, &bias, shape, c_out, 3, 1)
            .iter()
            .zip(&res)
            .map(|(a, b)| a + b)
            .collect();
        check_close(&format!("conv2d_add {shape:?}"), &got, &want, TOL)?;
    }
    Ok(())
}

/// GroupNorm on `shape` with an offset mean, as activations have, then SiLU when `silu`.
async fn group_norm_case(
    device: &Device,
    shape: [usize; 4],
    groups: usize,
    silu: bool,
    seed: u64,
) -> Result<(), String> {
    let c = shape[1];
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = rng
        .uniform(shape.iter().product(), 2.0)
        .iter()
        .map(|v| v + 3.0)
        .collect();
    let weight = rng.uniform(c, 1.0);
    let bias = rng.uniform(c, 1.0);
    let got = kernels::group_norm(
        tensor(&x, shape, device),
        groups,
        1e-5,
        tensor(&weight, [c], device),
        tensor(&bias, [c], device),
        silu,
    );
    let got = read_f32(got).await.map_err(|e| e.to_string())?;
    let mut want = reference::group_norm(&x, shape, groups, 1e-5, &weight, &bias);
    if silu {
        want.iter_mut().for_each(|v| *v /= 1.0 + (-*v).exp());
    }
    check_close(
        &format!("group_norm {shape:?} / {groups}"),
        &got,
        &want,
        TOL,
    )
}

/// GroupNorm(32, 320) on `[2, 320, 32, 32]`; with SiLU; groups shorter than a workgroup
/// and not a power of two; one pixel.
async fn group_norm(device: &Device) -> Result<(), String> {
    group_norm_case(device, [2, 320, 32, 32], 32, false, 3).await?;
    group_norm_case(device, [2, 320, 32, 32], 32, true, 31).await?;
    group_norm_case(device, [1, 6, 5, 7], 3, true, 32).await?;
    group_norm_case(device, [2, 64, 1, 1], 32, false, 33).await
}

/// LayerNorm over 320 (a transformer block's width) with an offset mean, and GEGLU on a
/// `[.., 2·160]` projection with and without its bias, each against burn's ops on the CPU (the path the goldens check).
async fn layer_norm_and_geglu(device: &Device) -> Result<(), String> {
    let cpu = sd_webgpu::device::cpu();
    let (shape, dim) = ([2, 77, 320], 320);
    let mut rng = Rng::new(6);
    let x: Vec<f32> = rng
        .uniform(2 * 77 * 320, 2.0)
        .iter()
        .map(|v| v + 1.0)
        .collect();
    let (weight, bias) = (rng.uniform(dim, 1.0), rng.uniform(dim, 1.0));
    let norm = |d: &Device| {
        kernels::layer_norm(
            tensor(&x, shape, d),
            tensor(&weight, [dim], d),
            tensor(&bias, [dim], d),
            1e-5,
        )
    };
    let got = read_f32(norm(device)).await.map_err(|e| e.to_string())?;
    let want = read_f32(norm(&cpu)).await.map_err(|e| e.to_string())?;
    check_close("layer_norm", &got, &want, TOL)?;

    // GEGLU alone, then with the projection's bias (added by the kernel on a GPU).
    let shape = [2, 61, 320];
    let x = rng.uniform(2 * 61 * 320, 3.0);
    let bias = rng.uniform(320, 1.0);
    for with_bias in [false, true] {
        let geglu = |d: &Device| {
            let bias = with_bias.then(|| tensor(&bias, [320], d));
            kernels::geglu(tensor(&x, shape, d), bias)
        };
        let got = read_f32(geglu(device)).await.map_err(|e| e.to_string())?;
        let want = read_f32(geglu(&cpu)).await.map_err(|e| e.to_string())?;
        check_close(&format!("geglu, bias {with_bias}"), &got, &want, TOL)?;
    }
    Ok(())
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

/// Flash attention in the projections' `[b, tokens, heads·d]` layout against the plain
/// attention on the CPU: SD 1.5's head sizes 40 and 80 and the quarter model's 10, query
/// counts that leave the last workgroup ragged, 77-token cross-attention, 5 keys. On devices
/// without the kernel it checks that
/// `flash_attention_supported` says so.
async fn flash_attention(device: &Device) -> Result<(), String> {
    let cpu = sd_webgpu::device::cpu();
    for (seed, [b, n, m, heads, d]) in [
        (12, [2, 100, 100, 8, 40]),
        (13, [2, 70, 77, 4, 80]),
        (14, [1, 33, 5, 2, 10]),
    ] {
        let mut rng = Rng::new(seed);
        let q = rng.uniform(b * n * heads * d, 1.5);
        let k = rng.uniform(b * m * heads * d, 1.5);
        let v = rng.uniform(b * m * heads * d, 1.0);
        let (qt, kt) = (
            tensor(&q, [b, n, heads * d], device),
            tensor(&k, [b, m, heads * d], device),
        );
        if !kernels::flash_attention_supported(&qt, &kt, heads) {
            return match matches!(device.as_dispatch(), burn::backend::DispatchDevice::Cube(_)) {
                true => Err("flash attention refused a GPU tensor".into()),
                false => Ok(()),
            };
        }
        let got = kernels::flash_attention(qt, kt, tensor(&v, [b, m, heads * d], device), heads);
        let got = read_f32(got).await.map_err(|e| e.to_string())?;
        let split = |x: &[f32], t: usize| {
            tensor(x, [b, t, heads, d], &cpu).swap_dims(1, 2) // [b, heads, t, d]
        };
        let want = ops::attention(split(&q, n), split(&k, m), split(&v, m))
            .swap_dims(1, 2)
            .reshape([b, n, heads * d]);
        let want = read_f32(want).await.map_err(|e| e.to_string())?;
        check_close(&format!("flash attention d={d}"), &got, &want, TOL)?;
    }
    Ok(())
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
    layer_norm_and_geglu => super::layer_norm_and_geglu;
    attention => super::attention;
    flash_attention => super::flash_attention;
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
    let got = kernels::conv2d(
        tensor(&x, shape, &device),
        tensor(&flipped, [8, 8, 3, 3], &device),
        tensor(&bias, [8], &device),
        1,
        1,
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
    let got = kernels::group_norm(
        tensor(&x, shape, &device),
        2,
        1e-5,
        tensor(&weight, [8], &device),
        tensor(&zero, [8], &device),
        false,
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

/// The kernels size their work by whether the adapter is a CPU-side one
/// (`device::is_software`, from the device's own adapter info); the page picks WebGPU or the
/// CPU engine by the same question asked of `navigator.gpu`'s adapter
/// (`AdapterDescription::is_software`). Both must agree: in CI's Chromium, SwiftShader is
/// software for both, so the browser runs the kernels' lavapipe-sized plan.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen_test::wasm_bindgen_test]
async fn kernels_see_the_adapter_as_the_page_does() {
    use sd_webgpu::device::{AdapterDescription, gpu, is_software};
    let info = sd_webgpu::web::adapter_info()
        .await
        .expect("a WebGPU adapter");
    let get = |key: &str| js_sys::Reflect::get(&info, &key.into()).unwrap_or_default();
    let page = AdapterDescription {
        text: ["vendor", "architecture", "description"]
            .map(|key| get(key).as_string().unwrap_or_default())
            .join(" "),
        is_fallback: get("isFallbackAdapter").as_bool(),
    };
    let device = gpu().await.expect("a WebGPU device");
    assert_eq!(is_software(&device), page.is_software(), "{}", page.text);
}
