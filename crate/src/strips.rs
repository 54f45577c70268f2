//! Feature maps held as horizontal strips, so the VAE's full-resolution layers never need a
//! GPU buffer over WebGPU's 128 MiB binding limit.
//!
//! SD's VAE decoder at 512×512 makes `[1, 256, 512, 512]` activations: 256 MiB in f32. Here
//! such a map is a list of `[b, c, rows_i, w]` tensors, top to bottom, and each layer runs
//! strip by strip with results equal to running it on the whole map:
//!
//! - 3×3 convolutions see one row of each neighbour strip (the halo) and drop the rows
//!   computed from it; zero padding applies only at the image's top and bottom;
//! - group norm takes its mean and variance over all strips (two passes, like
//!   [`crate::kernels::group_norm`]) before normalising each;
//! - pointwise layers, 1×1 convolutions and nearest upsampling run per strip; the VAE
//!   encoder's stride-2 downsampling takes the next strip's first row as its halo.
//!
//! Strip boundaries sit on latent rows, so they stay aligned through every up- and
//! downsampling. With one strip every operation is the plain one.

use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::ops::PadMode;

use crate::nn::{Conv2d, GroupNorm};
use crate::resnet::{Downsample2D, ResnetBlock2D, Upsample2D, upsample_nearest_2x};

/// The most bytes one strip of an activation may hold. Convolutions keep a few copies of
/// their input and output strip alive (the halo'd input, burn's NHWC transposes), so this
/// stays well below the 128 MiB binding limit.
pub const STRIP_BYTES: usize = 32 << 20;

/// A `[b, c, h, w]` feature map as strips of rows, top to bottom.
#[derive(Clone, Debug)]
pub struct Strips(pub Vec<Tensor<4>>);

/// How to cut `rows` rows into strips so that an activation of `bytes_per_row` bytes per
/// row (at this resolution) stays within `budget` bytes per strip, with boundaries on
/// multiples of `align` rows. Returns the row count of each strip.
pub fn plan(rows: usize, align: usize, bytes_per_row: usize, budget: usize) -> Vec<usize> {
    let units = rows / align.max(1);
    if units <= 1 || rows % align != 0 {
        return vec![rows];
    }
    let per_unit = (bytes_per_row * align).max(1);
    let units_per_strip = (budget / per_unit).max(1);
    let count = units.div_ceil(units_per_strip);
    // Spread the units evenly: the first `units % count` strips get one more.
    (0..count)
        .map(|i| (units / count + usize::from(i < units % count)) * align)
        .collect()
}

impl Strips {
    /// Cuts `x` into strips of the given row counts (which must sum to its height).
    pub fn split(x: Tensor<4>, rows: &[usize]) -> Self {
        let mut start = 0;
        let strips = rows
            .iter()
            .map(|&n| {
                let strip = x.clone().narrow(2, start, n); // [b, c, n, w]
                start += n;
                strip
            })
            .collect();
        Strips(strips)
    }

    /// The whole map again: `[b, c, h, w]`.
    pub fn cat(self) -> Tensor<4> {
        let mut strips = self.0;
        if strips.len() == 1 {
            strips.pop().expect("one strip")
        } else {
            Tensor::cat(strips, 2)
        }
    }

    /// Applies a per-pixel (or per-column) function to every strip.
    pub fn map(self, f: impl Fn(Tensor<4>) -> Tensor<4>) -> Self {
        Strips(self.0.into_iter().map(f).collect())
    }

    pub fn add(self, other: Strips) -> Self {
        Strips(
            self.0
                .into_iter()
                .zip(other.0)
                .map(|(a, b)| a + b)
                .collect(),
        )
    }

    /// A stride-1 convolution: 1×1 per strip, 3×3 (padding 1) with a one-row halo.
    pub fn conv(self, conv: &Conv2d) -> Self {
        let n = self.0.len();
        let kernel = conv.kernel;
        if n == 1 || kernel == 1 {
            return self.map(|x| conv.forward(x));
        }
        assert!(
            kernel == 3 && conv.padding == 1 && conv.stride == 1,
            "strips: only 1×1 and 3×3/pad 1 convolutions"
        );
        let out = (0..n)
            .map(|i| {
                let strip = &self.0[i];
                let rows = strip.dims()[2];
                let mut parts = Vec::with_capacity(3);
                if i > 0 {
                    let prev = &self.0[i - 1];
                    parts.push(prev.clone().narrow(2, prev.dims()[2] - 1, 1)); // [b, c, 1, w]
                }
                parts.push(strip.clone());
                if i + 1 < n {
                    parts.push(self.0[i + 1].clone().narrow(2, 0, 1)); // [b, c, 1, w]
                }
                let top = usize::from(i > 0);
                conv.forward(Tensor::cat(parts, 2)).narrow(2, top, rows) // [b, c_out, rows, w]
            })
            .collect();
        Strips(out)
    }

    /// Group norm with statistics over the whole map, then SiLU when `then_silu`.
    pub fn group_norm(self, norm: &GroupNorm, then_silu: bool) -> Self {
        if self.0.len() == 1 {
            return match then_silu {
                true => self.map(|x| norm.forward_silu(x)),
                false => self.map(|x| norm.forward(x)),
            };
        }
        let [b, c, _, w] = self.0[0].dims();
        let g = norm.groups;
        let rows: usize = self.0.iter().map(|s| s.dims()[2]).sum();
        let count = ((c / g) * rows * w) as f64;
        let grouped = |x: &Tensor<4>| {
            let r = x.dims()[2];
            x.clone().reshape([b, g, (c / g) * r * w]) // [b, g, n_i]
        };
        // Sums a row at a time, then over the rows: one reduction per (b, group) would give a
        // big GPU b·g workgroups (32), each walking millions of values.
        let sum_rows = |t: Tensor<3>| {
            let n = t.dims()[2];
            t.reshape([b, g, n / w, w])
                .sum_dim(3)
                .sum_dim(2)
                .reshape([b, g, 1])
        };
        let total = |parts: Vec<Tensor<3>>| {
            parts
                .into_iter()
                .reduce(|a, b| a + b)
                .expect("strips are not empty")
        };
        // Each strip's share of the mean: partial sums of rows keep f32 digits.
        let mean = total(
            self.0
                .iter()
                .map(|x| sum_rows(grouped(x)).div_scalar(count))
                .collect(),
        ); // [b, g, 1]
        let var = total(
            self.0
                .iter()
                .map(|x| sum_rows((grouped(x) - mean.clone()).square()))
                .collect(),
        )
        .div_scalar(count); // [b, g, 1]
        let inv_std = var.add_scalar(norm.eps).sqrt().recip(); // [b, g, 1]
        let weight = norm.weight.val().reshape([1, c, 1, 1]);
        let bias = norm.bias.val().reshape([1, c, 1, 1]);
        self.map(|x| {
            let [_, _, r, _] = x.dims();
            let normed = ((grouped(&x) - mean.clone()) * inv_std.clone()).reshape([b, c, r, w]);
            let y = normed * weight.clone() + bias.clone(); // [b, c, r, w]
            if then_silu { silu(y) } else { y }
        })
    }

    /// `x + conv2(silu(norm2(conv1(silu(norm1(x))))))` (the VAE's resnets take no time
    /// embedding), with the 1×1 shortcut where channels change.
    pub fn resnet(self, block: &ResnetBlock2D) -> Self {
        let h = self
            .clone()
            .group_norm(&block.norm1, true)
            .conv(&block.conv1);
        let h = h.group_norm(&block.norm2, true).conv(&block.conv2);
        let shortcut = match &block.conv_shortcut {
            Some(conv) => self.conv(conv),
            None => self,
        };
        shortcut.add(h)
    }

    /// Nearest ×2, then the 3×3 conv.
    pub fn upsample(self, up: &Upsample2D) -> Self {
        self.map(upsample_nearest_2x).conv(&up.conv)
    }

    /// The VAE encoder's downsampling: zero pad right and bottom, 3×3 conv with stride 2.
    /// Each strip (an even row count) takes the next strip's first row as its bottom row.
    pub fn downsample(self, down: &Downsample2D) -> Self {
        let n = self.0.len();
        if n == 1 || !down.pad_right_bottom {
            return self.map(|x| down.forward(x));
        }
        let out = (0..n)
            .map(|i| {
                let strip = self.0[i].clone();
                let x = if i + 1 < n {
                    Tensor::cat(vec![strip, self.0[i + 1].clone().narrow(2, 0, 1)], 2) // [b, c, r + 1, w]
                } else {
                    strip.pad((0, 0, 0, 1), PadMode::Constant(0.0)) // [b, c, r + 1, w]
                };
                let x = x.pad((0, 1, 0, 0), PadMode::Constant(0.0)); // [b, c, r + 1, w + 1]
                down.conv.forward(x) // [b, c, r / 2, w / 2]
            })
            .collect();
        Strips(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_fit_the_budget_on_aligned_rows() {
        // SD's decoder at 512×512: 256 channels × 512 columns × 4 bytes per row, 512 rows,
        // boundaries on latent rows (8 pixels).
        let rows = plan(512, 8, 256 * 512 * 4, STRIP_BYTES);
        assert_eq!(rows.len(), 8);
        assert!(
            rows.iter()
                .all(|r| r % 8 == 0 && r * 256 * 512 * 4 <= STRIP_BYTES)
        );
        assert_eq!(rows.iter().sum::<usize>(), 512);
        // Small maps stay whole; uneven splits spread the remainder.
        assert_eq!(plan(32, 8, 1000, STRIP_BYTES), [32]);
        assert_eq!(plan(40, 8, 1 << 20, 17 << 20), [16, 16, 8]);
        assert_eq!(plan(40, 8, 1 << 20, 12 << 20), [8, 8, 8, 8, 8]);
        // Never finer than one aligned unit.
        assert_eq!(plan(24, 8, 1 << 30, 1), [8, 8, 8]);
        assert_eq!(plan(20, 8, 1 << 30, 1), [20]);
    }
}
