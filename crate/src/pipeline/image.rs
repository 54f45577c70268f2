//! Images in and out of the pipeline: RGB in `[0, 1]` and inpainting masks.

use crate::Error;

/// An RGB image, values in `[0, 1]`, row-major H×W×3.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<f32>,
}

impl Image {
    /// From 8-bit RGB (`channels` 3) or RGBA (`channels` 4, alpha ignored) pixels, each value
    /// `v / 255` in float32 as diffusers' image processor computes it.
    pub fn from_rgb8(width: usize, height: usize, pixels: &[u8], channels: usize) -> Result<Self, Error> {
        check_len("image", width, height, pixels.len(), channels)?;
        if channels != 3 && channels != 4 {
            return Err(Error::BadInput(format!("image: {channels} channels per pixel; expected RGB (3) or RGBA (4)")));
        }
        let rgb = pixels.chunks_exact(channels).flat_map(|p| p[..3].iter().map(|&v| v as f32 / 255.0)).collect();
        Ok(Image { width, height, rgb })
    }

    /// 8-bit RGB, rounding as `(x * 255).round()` (diffusers' `numpy_to_pil`).
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.rgb.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }

    /// Checks the size and the values (finite, in `[0, 1]`); `what` names the image in errors.
    pub fn check(&self, what: &str) -> Result<(), Error> {
        check_len(what, self.width, self.height, self.rgb.len(), 3)?;
        if self.rgb.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::BadInput(format!("{what}: values must be in [0, 1] (NaN or out of range found)")));
        }
        Ok(())
    }
}

/// An inpainting mask, one value per pixel, row-major H×W: white (≥ 0.5) is repainted,
/// black kept. diffusers binarizes at 0.5 the same way.
#[derive(Clone, Debug, PartialEq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

impl Mask {
    /// From 8-bit pixels with `channels` 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA):
    /// colour is turned grey as PIL's `convert("L")` does (ITU-R 601-2 luma), alpha ignored.
    pub fn from_pixels8(width: usize, height: usize, pixels: &[u8], channels: usize) -> Result<Self, Error> {
        check_len("mask", width, height, pixels.len(), channels)?;
        let grey = |p: &[u8]| -> u8 {
            match channels {
                1 | 2 => p[0],
                // PIL: L = (R·299 + G·587 + B·114 + 500) / 1000, in integers.
                _ => ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114 + 500) / 1000) as u8,
            }
        };
        if !(1..=4).contains(&channels) {
            return Err(Error::BadInput(format!("mask: {channels} channels per pixel; expected 1 to 4")));
        }
        let values = pixels.chunks_exact(channels).map(|p| grey(p) as f32 / 255.0).collect();
        Ok(Mask { width, height, values })
    }

    /// Whether pixel `i` is repainted.
    pub fn repaint(&self, i: usize) -> bool {
        self.values[i] >= 0.5
    }

    pub fn check(&self) -> Result<(), Error> {
        check_len("mask", self.width, self.height, self.values.len(), 1)?;
        if self.values.iter().any(|v| !v.is_finite()) {
            return Err(Error::BadInput("mask: contains NaN or infinite values".into()));
        }
        Ok(())
    }
}

fn check_len(what: &str, width: usize, height: usize, len: usize, channels: usize) -> Result<(), Error> {
    if width == 0 || height == 0 {
        return Err(Error::BadInput(format!("{what}: {width}×{height} is empty")));
    }
    if len != width * height * channels {
        return Err(Error::BadInput(format!(
            "{what}: {len} values for {width}×{height} pixels of {channels} channels (needs {})",
            width * height * channels
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let img = Image::from_rgb8(2, 1, &[0, 128, 255, 9, 10, 11, 12, 13], 4).unwrap();
        assert_eq!(img.rgb, [0.0, 128.0 / 255.0, 1.0, 10.0 / 255.0, 11.0 / 255.0, 12.0 / 255.0]);
        assert_eq!(img.to_rgb8()[..3], [0, 128, 255]);
        assert!(Image::from_rgb8(2, 2, &[0; 11], 3).is_err());
        // PIL's luma: pure red is 76, white 255.
        let mask = Mask::from_pixels8(2, 1, &[255, 0, 0, 255, 255, 255], 3).unwrap();
        assert_eq!(mask.values, [76.0 / 255.0, 1.0]);
        assert!(!mask.repaint(0) && mask.repaint(1));
    }
}
