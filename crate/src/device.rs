//! Device selection: the only place where CPU, native GPU and browser GPU differ.

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuBackend;

use crate::{Error, Tensor, TensorData, read_f32};

/// burn's pure-Rust CPU backend. Slow, but exact and always there: the reference device
/// for native tests and the `--backend cpu` of the CLI.
#[cfg(not(target_arch = "wasm32"))]
pub fn cpu() -> Device {
    Device::flex()
}

/// The graphics API we ask wgpu for. Natively we pin it, since automatic selection can land
/// on OpenGL, which burn's kernels do not target well. In the browser there is only WebGPU.
fn graphics_api() -> WgpuBackend {
    if cfg!(target_arch = "wasm32") {
        WgpuBackend::Auto
    } else if cfg!(target_os = "macos") {
        WgpuBackend::Metal
    } else {
        WgpuBackend::Vulkan
    }
}

static GPU: async_lock::OnceCell<Device> = async_lock::OnceCell::new();

/// The GPU device: WebGPU in the browser, Vulkan (or Metal) natively.
///
/// burn's wgpu runtime can be initialised once per process, so the device is created on the
/// first call and shared afterwards; concurrent first calls wait for the one creating it.
/// Asynchronous because a browser hands out adapters only through promises.
pub async fn gpu() -> Result<Device, Error> {
    GPU.get_or_try_init(|| async {
        Device::wgpu_options()
            .graphics_api(graphics_api())
            .init_async()
            .await
            .map_err(|e| Error::NoGpu(no_gpu_advice(&e.to_string())))
    })
    .await
    .cloned()
}

fn no_gpu_advice(why: &str) -> String {
    if cfg!(target_arch = "wasm32") {
        format!(
            "{why}. Use a browser with WebGPU enabled (Chrome/Edge 113+, Safari 26+, Firefox 141+ on \
             Windows) and check that the GPU is not blocklisted (chrome://gpu)."
        )
    } else {
        format!(
            "{why}. Install a Vulkan driver (on Debian without a GPU: `apt-get install \
             mesa-vulkan-drivers libvulkan1` gives the lavapipe software driver)."
        )
    }
}

/// Runs one small matmul on `device` and compares it with the same product computed in
/// plain Rust. Returns the largest absolute difference: a quick check that a device
/// computes, for the page and for `sd-weights devices`.
pub async fn self_check(device: &Device) -> Result<f64, Error> {
    let (m, k, n) = (64usize, 96usize, 80usize);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
    let ta = Tensor::<2>::from_data(TensorData::new(a.clone(), [m, k]), device);
    let tb = Tensor::<2>::from_data(TensorData::new(b.clone(), [k, n]), device);
    let got = read_f32(ta.matmul(tb)).await?;
    let mut worst = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
            worst = worst.max((want - got[i * n + j] as f64).abs());
        }
    }
    Ok(worst)
}
