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
    /// From 8-bit pixels with `channels` 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), each
    /// value `v / 255` in float32 as diffusers' image processor computes it. Alpha is
    /// flattened onto white, as AUTOMATIC1111 does with an init image
    /// (`images.flatten(img, opts.img2img_background_color)`, white by default): a transparent
    /// pixel is white, not the black its hidden RGB usually holds; an opaque one is unchanged.
    pub fn from_rgb8(
        width: usize,
        height: usize,
        pixels: &[u8],
        channels: usize,
    ) -> Result<Self, Error> {
        check_len("image", width, height, pixels.len(), channels)?;
        if !(1..=4).contains(&channels) {
            return Err(Error::BadInput(format!(
                "image: {channels} channels per pixel; expected 1 to 4 (grey, grey + alpha, RGB, RGBA)"
            )));
        }
        let colour = if channels < 3 { 1 } else { 3 };
        let has_alpha = channels == 2 || channels == 4;
        let mut rgb = Vec::with_capacity(width * height * 3);
        for p in pixels.chunks_exact(channels) {
            for k in 0..3 {
                let v = p[k.min(colour - 1)] as f32;
                rgb.push(match has_alpha {
                    // c·a + white·(1 − a), in 8-bit units first: exact where a is 255 or 0.
                    true => {
                        (v * p[channels - 1] as f32 + 255.0 * (255 - p[channels - 1]) as f32)
                            / 255.0
                            / 255.0
                    }
                    false => v / 255.0,
                });
            }
        }
        Ok(Image { width, height, rgb })
    }

    /// 8-bit RGB, rounding as `(x * 255).round()` (diffusers' `numpy_to_pil`).
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.rgb
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect()
    }

    /// Checks the size and the values (finite, in `[0, 1]`); `what` names the image in errors.
    pub fn check(&self, what: &str) -> Result<(), Error> {
        check_len(what, self.width, self.height, self.rgb.len(), 3)?;
        if self.rgb.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::BadInput(format!(
                "{what}: values must be in [0, 1] (NaN or out of range found)"
            )));
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
    /// colour is turned grey as PIL's `convert("L")` does (ITU-R 601-2 luma). Where the alpha
    /// channel varies, the alpha is the mask (opaque = repainted) and the colour is ignored:
    /// a mask painted on a transparent layer is white (or any colour) everywhere, its shape
    /// only in alpha. AUTOMATIC1111's `create_binary_mask` does the same (RGBA whose alpha is
    /// not all 255 → the alpha channel).
    pub fn from_pixels8(
        width: usize,
        height: usize,
        pixels: &[u8],
        channels: usize,
    ) -> Result<Self, Error> {
        check_len("mask", width, height, pixels.len(), channels)?;
        if !(1..=4).contains(&channels) {
            return Err(Error::BadInput(format!(
                "mask: {channels} channels per pixel; expected 1 to 4"
            )));
        }
        let alpha_varies = (channels == 2 || channels == 4)
            && pixels
                .chunks_exact(channels)
                .any(|p| p[channels - 1] != 255);
        let grey = |p: &[u8]| -> u8 {
            match channels {
                _ if alpha_varies => p[channels - 1],
                1 | 2 => p[0],
                // PIL: L = (R·299 + G·587 + B·114 + 500) / 1000, in integers.
                _ => {
                    ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114 + 500) / 1000) as u8
                }
            }
        };
        let values = pixels
            .chunks_exact(channels)
            .map(|p| grey(p) as f32 / 255.0)
            .collect();
        Ok(Mask {
            width,
            height,
            values,
        })
    }

    /// Whether pixel `i` is repainted.
    pub fn repaint(&self, i: usize) -> bool {
        self.values[i] >= 0.5
    }

    pub fn check(&self) -> Result<(), Error> {
        check_len("mask", self.width, self.height, self.values.len(), 1)?;
        if self.values.iter().any(|v| !v.is_finite()) {
            return Err(Error::BadInput(
                "mask: contains NaN or infinite values".into(),
            ));
        }
        Ok(())
    }
}

fn check_len(
    what: &str,
    width: usize,
    height: usize,
    len: usize,
    channels: usize,
) -> Result<(), Error> {
    if width == 0 || height == 0 {
        return Err(Error::BadInput(format!(
            "{what}: {width}×{height} is empty"
        )));
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
        let img = Image::from_rgb8(2, 1, &[0, 128, 255, 255, 10, 11, 12, 255], 4).unwrap();
        assert_eq!(
            img.rgb,
            [
                0.0,
                128.0 / 255.0,
                1.0,
                10.0 / 255.0,
                11.0 / 255.0,
                12.0 / 255.0
            ]
        );
        assert_eq!(img.to_rgb8()[..3], [0, 128, 255]);
        assert!(Image::from_rgb8(2, 2, &[0; 11], 3).is_err());
        // PIL's luma: pure red is 76, white 255.
        let mask = Mask::from_pixels8(2, 1, &[255, 0, 0, 255, 255, 255], 3).unwrap();
        assert_eq!(mask.values, [76.0 / 255.0, 1.0]);
        assert!(!mask.repaint(0) && mask.repaint(1));
    }

    /// An RGBA init image's transparent pixels are white (its hidden RGB is black), half
    /// transparent ones half way; grey + alpha the same; opaque pixels keep their colour.
    #[test]
    fn transparent_init_image_pixels_are_white() {
        let img = Image::from_rgb8(3, 1, &[0, 0, 0, 0, 255, 0, 0, 255, 0, 0, 0, 128], 4).unwrap();
        let half = 127.0 / 255.0;
        assert_eq!(img.rgb[..6], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert!(
            img.rgb[6..].iter().all(|v| (v - half).abs() < 1e-6),
            "{:?}",
            &img.rgb[6..]
        );
        let grey = Image::from_rgb8(2, 1, &[0, 0, 10, 255], 2).unwrap();
        assert_eq!(
            grey.rgb,
            [1.0, 1.0, 1.0, 10.0 / 255.0, 10.0 / 255.0, 10.0 / 255.0]
        );
        assert_eq!(
            Image::from_rgb8(1, 1, &[7], 1).unwrap().rgb,
            [7.0 / 255.0; 3]
        );
    }

    /// A mask whose alpha varies is its alpha (white RGB everywhere, the shape in alpha); an
    /// all-opaque RGBA mask is its colour.
    #[test]
    fn mask_alpha_is_the_mask_where_it_varies() {
        let shape_in_alpha =
            Mask::from_pixels8(2, 1, &[255, 255, 255, 0, 255, 255, 255, 255], 4).unwrap();
        assert!(!shape_in_alpha.repaint(0) && shape_in_alpha.repaint(1));
        let opaque = Mask::from_pixels8(2, 1, &[0, 0, 0, 255, 255, 255, 255, 255], 4).unwrap();
        assert!(!opaque.repaint(0) && opaque.repaint(1));
        let grey_alpha = Mask::from_pixels8(2, 1, &[255, 0, 255, 200], 2).unwrap();
        assert!(!grey_alpha.repaint(0) && grey_alpha.repaint(1));
    }
}
