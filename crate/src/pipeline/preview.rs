//! Cheap previews while sampling: the current estimate of the clean latents, turned into
//! RGB by a fixed linear map instead of the VAE decoder (A1111's "Approx cheap"), one
//! pixel per latent pixel. A few hundred bytes read back instead of a VAE run.

use burn::tensor::{Tensor, TensorData};

use super::Image;
use crate::{Error, read_f32};

/// Latent channel → RGB weights of SD 1.x / 2.x's VAE (the 4-channel KL-f8 autoencoder),
/// as A1111 uses them for its cheap approximation. `[latent channel][r, g, b]`.
const SD_LATENT_RGB: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// The preview of `x0` (`[1, 4, h, w]`, as diffused: scaled by the VAE's scaling factor),
/// an `w × h` image. Other latent widths have no preview (`None`).
pub async fn preview(x0: Tensor<4>) -> Result<Option<Image>, Error> {
    let [_, c, h, w] = x0.dims();
    if c != SD_LATENT_RGB.len() {
        return Ok(None);
    }
    let device = x0.device();
    let coefs: Vec<f32> = (0..3)
        .flat_map(|r| SD_LATENT_RGB.iter().map(move |row| row[r]))
        .collect();
    let coefs = Tensor::<2>::from_data(TensorData::new(coefs, [3, c]), &device); // [3, c]
    let x = x0.narrow(0, 0, 1).reshape([c, h * w]); // [c, h·w]
    let rgb = coefs
        .matmul(x)
        .add_scalar(1.0)
        .div_scalar(2.0)
        .clamp(0.0, 1.0); // [3, h·w]
    let rgb = rgb.reshape([3, h, w]).permute([1, 2, 0]); // [h, w, 3]
    Ok(Some(Image {
        width: w,
        height: h,
        rgb: read_f32(rgb).await?,
    }))
}
