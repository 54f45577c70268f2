//! sd-webgpu: Stable Diffusion on burn, for WebGPU in the browser and for native use.
//!
//! One code path for every device: the same modules run on burn's CPU backend, on wgpu
//! natively (Vulkan) and on WebGPU in the browser. Only device creation differs
//! (see [`device`]).

pub mod clip;
pub mod compare;
pub mod convert;
pub mod device;
pub mod error;
pub mod files;
pub mod flops;
pub mod format;
pub mod hub;
mod json;
pub mod kernels;
pub mod model;
pub mod model_info;
pub mod nn;
pub mod npy;
pub mod ops;
pub mod pipeline;
pub mod resnet;
pub mod safetensors;
pub mod scheduler;
pub mod strips;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use burn::tensor::{DType, Device, Tensor, TensorData};
pub use error::Error;

/// Reads a float tensor back to the host as `f32`s, without blocking: a synchronous read
/// panics in the browser, so every read in this crate goes through here.
///
/// Also where a GPU's error surfaces: once the device has reported one (out of memory, lost),
/// the values read are not to be trusted and the read returns that error instead.
pub async fn read_f32<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, Error> {
    let device = tensor.device();
    let data = tensor.into_data_async().await;
    let failure = if data.is_err() {
        device::failure_reported(&device).await
    } else {
        device::failure(&device)
    };
    if let Some(failure) = failure {
        return Err(failure);
    }
    let data = data.map_err(|e| Error::Gpu(format!("reading a tensor back failed: {e}")))?;
    data.try_into_vec_as::<f32>()
        .map_err(|e| Error::Gpu(format!("tensor data is not f32: {e:?}")))
}
