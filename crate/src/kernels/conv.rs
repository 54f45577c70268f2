//! 2-D convolution read straight from NCHW (no im2col buffer, no layout copies), each unit
//! computing a register block of `rows` output channels × `cols` output pixels:
//! `out[co, n] = bias[co] + Σ_k weight[co, k] · patch[k, n]`, with `k = (ci, ky, kx)` and
//! `n = (b, oy, ox)` — the GEMM lowering of Chellapilla et al. 2006, walked without staging.
//!
//! Why this shape: every unit of a workgroup shares its output channels, so a weight read has
//! the same address in every unit (one broadcast load: a scalar load on CPU-side drivers such
//! as lavapipe and SwiftShader, an L1 broadcast on GPUs), while neighbouring units read
//! neighbouring pixels (coalesced). No workgroup memory and no barriers, which CPU-side
//! drivers run slowly (a workgroup-memory-tiled GEMM measured 1.6× slower than burn's direct
//! kernel on lavapipe). Each input value loaded feeds `rows` multiply-adds, each weight `cols`.
//!
//! Maps too small to give every unit its own pixels (the UNet's 4×4 level at 256²) swap the
//! roles (`by_channel`): units take output channels and share one block of pixels.

use burn_cubecl::cubecl;
use cubecl::prelude::*;

/// Units per workgroup.
pub const UNITS: usize = 64;

/// How to launch a conv with `c_out` channels over `n` output pixels: `(by_channel, rows,
/// cols, workgroups along pixels, workgroups along channels)`. Pixels per unit with a 16 × 8
/// block where the work is large (measured best on lavapipe among 4–32 × 2–16), smaller
/// blocks where it is not; under 128 pixels, channels per unit (4 × up to 16), since pixels
/// per unit would leave most units idle.
pub fn plan(c_out: usize, n: usize) -> (bool, usize, usize, usize, usize) {
    if n < UNITS * 2 {
        let (rows, cols) = (4, n.min(16));
        return (
            true,
            rows,
            cols,
            n.div_ceil(cols),
            c_out.div_ceil(UNITS * rows),
        );
    }
    let cols = [8, 4, 2, 1]
        .into_iter()
        .find(|&c| UNITS * c <= n)
        .unwrap_or(1);
    let rows = if c_out >= 128 { 16 } else { 4 };
    (
        false,
        rows,
        cols,
        n.div_ceil(UNITS * cols),
        c_out.div_ceil(rows),
    )
}

/// `input [b, c_in, h, w]`, `weight [c_out, c_in·k·k]`, `bias [c_out]` →
/// `output [b, c_out, ho, wo]`, plus `residual` (same shape as the output) when
/// `add_residual` (otherwise any other buffer, unread). Each unit computes `rows` channels ×
/// `cols` pixels; launch with `CubeDim (UNITS)` and the grid [`plan`] gives.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn conv2d_blocked(
    input: &Tensor<f32>,
    weight: &Tensor<f32>,
    bias: &Tensor<f32>,
    residual: &Tensor<f32>,
    output: &mut Tensor<f32>,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    ho: usize,
    wo: usize,
    #[comptime] k: usize,
    #[comptime] stride: usize,
    #[comptime] pad: usize,
    #[comptime] rows: usize,
    #[comptime] cols: usize,
    #[comptime] by_channel: bool,
    #[comptime] add_residual: bool,
) {
    let kk = k * k;
    let k_total = c_in * kk;
    let pixels = ho * wo;
    let n_total = output.len() / c_out;
    let plane = h * w;
    // First output channel and first pixel of this unit, and the step between its pixels.
    // Pixels per unit: channels uniform across the workgroup, pixels `UNITS` apart. Channels
    // per unit: one block of consecutive pixels shared by the workgroup.
    let mut co0 = CUBE_POS_Y as usize * rows;
    let mut first = CUBE_POS_X as usize * (UNITS * cols) + UNIT_POS_X as usize;
    let step = comptime![if by_channel { 1 } else { UNITS }];
    if by_channel {
        co0 = (CUBE_POS_Y as usize * UNITS + UNIT_POS_X as usize) * rows;
        first = CUBE_POS_X as usize * cols;
    }

    // Per pixel: where its image starts and its top-left tap in padded coordinates.
    let mut base = Array::<usize>::new(cols);
    let mut y0 = Array::<usize>::new(cols);
    let mut x0 = Array::<usize>::new(cols);
    #[unroll]
    for j in 0..cols {
        let n = first + j * step;
        let nc = select(n < n_total, n, 0);
        let p = nc % pixels;
        base[j] = (nc / pixels) * c_in * plane;
        y0[j] = (p / wo) * stride;
        x0[j] = (p % wo) * stride;
    }
    // Channels past c_out read the last one (in bounds) and are not written.
    let last_row = c_out - 1;

    let mut acc = Array::<f32>::new(rows * cols);
    #[unroll]
    for i in 0..rows * cols {
        acc[i] = 0.0;
    }
    let mut at = Array::<usize>::new(cols);
    let mut inside = Array::<bool>::new(cols);
    let mut v = Array::<f32>::new(cols);
    // Taps outside, channels inside: which pixels a tap reads does not depend on the channel.
    #[unroll]
    for ky in 0..k {
        #[unroll]
        for kx in 0..k {
            #[unroll]
            for j in 0..cols {
                // In padded coordinates; `- pad` wraps below zero, so one unsigned compare
                // per axis tests both sides.
                let iy = y0[j] + ky - pad;
                let ix = x0[j] + kx - pad;
                inside[j] = iy < h && ix < w;
                // Outside the image, read the image's first pixel (in bounds) and use 0.
                at[j] = base[j] + select(inside[j], iy * w + ix, 0);
            }
            let tap = ky * k + kx;
            for ci in 0..c_in {
                let kidx = ci * kk + tap;
                #[unroll]
                for j in 0..cols {
                    let a = at[j];
                    let ok = inside[j];
                    v[j] = select(ok, input[a + ci * plane], 0.0);
                }
                #[unroll]
                for r in 0..rows {
                    let wv = weight[min(co0 + r, last_row) * k_total + kidx];
                    #[unroll]
                    for j in 0..cols {
                        acc[r * cols + j] += wv * v[j];
                    }
                }
            }
        }
    }

    #[unroll]
    for r in 0..rows {
        let co = co0 + r;
        #[unroll]
        for j in 0..cols {
            let n = first + j * step;
            if co < c_out && n < n_total {
                let at = ((n / pixels) * c_out + co) * pixels + n % pixels;
                let mut y = acc[r * cols + j] + bias[co];
                if add_residual {
                    y += residual[at];
                }
                output[at] = y;
            }
        }
    }
}
