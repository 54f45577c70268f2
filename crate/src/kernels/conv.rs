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

use burn_cubecl::cubecl;
use cubecl::prelude::*;

/// Units per workgroup, along pixels.
pub const UNITS: usize = 64;

/// The register block `(rows, cols)` for a conv with `c_out` channels over `n` output pixels:
/// 16 × 8 where the work is large (measured best on lavapipe among 4–32 × 2–16), smaller
/// blocks where it is not, so that small maps still spread over many workgroups instead of
/// leaving most units idle.
pub fn block(c_out: usize, n: usize) -> (usize, usize) {
    let cols = [8, 4, 2, 1]
        .into_iter()
        .find(|&c| UNITS * c <= n)
        .unwrap_or(1);
    let rows = if c_out >= 128 { 16 } else { 4 };
    (rows, cols)
}

/// `input [b, c_in, h, w]`, `weight [c_out, c_in·k·k]`, `bias [c_out]` →
/// `output [b, c_out, ho, wo]`, plus `residual` (same shape as the output) when
/// `add_residual` (otherwise any other buffer, unread). Each unit computes `rows` channels × `cols` pixels. Launch with
/// `CubeDim (UNITS)` and `CubeCount (⌈b·ho·wo / (UNITS·cols)⌉, ⌈c_out / rows⌉)`.
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
    #[comptime] add_residual: bool,
) {
    let kk = k * k;
    let k_total = c_in * kk;
    let pixels = ho * wo;
    let n_total = output.len() / c_out;
    let plane = h * w;
    let co0 = CUBE_POS_Y as usize * rows; // uniform across the workgroup
    let first = CUBE_POS_X as usize * (UNITS * cols) + UNIT_POS_X as usize;

    // Per pixel: where its image starts and its top-left tap in padded coordinates.
    let mut base = Array::<usize>::new(cols);
    let mut y0 = Array::<usize>::new(cols);
    let mut x0 = Array::<usize>::new(cols);
    #[unroll]
    for j in 0..cols {
        let n = first + j * UNITS;
        let nc = select(n < n_total, n, 0);
        let p = nc % pixels;
        base[j] = (nc / pixels) * c_in * plane;
        y0[j] = (p / wo) * stride;
        x0[j] = (p % wo) * stride;
    }
    // Channels past c_out read the last one (uniform, in bounds) and are not written.
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
                    v[j] = select(ok, input[a], 0.0);
                    at[j] = a + plane;
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
            let n = first + j * UNITS;
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

/// The same convolution for maps too small to give every unit its own pixels (the UNet's
/// 8×8 and 4×4 levels): each unit takes `rows` output channels and all units of a workgroup
/// share a block of `cols` pixels (the same input reads in every unit). `output [b, c_out,
/// ho, wo]`; launch with `CubeDim (UNITS)` and `CubeCount (⌈b·ho·wo / cols⌉,
/// ⌈c_out / (UNITS·rows)⌉)`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn conv2d_by_channel(
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
    #[comptime] add_residual: bool,
) {
    let kk = k * k;
    let k_total = c_in * kk;
    let pixels = ho * wo;
    let n_total = output.len() / c_out;
    let plane = h * w;
    let co0 = (CUBE_POS_Y as usize * UNITS + UNIT_POS_X as usize) * rows;
    // Surplus channels read the last weight row and write nothing.
    let mut wrow = Array::<usize>::new(rows);
    #[unroll]
    for r in 0..rows {
        wrow[r] = min(co0 + r, c_out - 1) * k_total;
    }
    let first = CUBE_POS_X as usize * cols; // uniform across the workgroup

    let mut base = Array::<usize>::new(cols);
    let mut y0 = Array::<usize>::new(cols);
    let mut x0 = Array::<usize>::new(cols);
    #[unroll]
    for j in 0..cols {
        let n = first + j;
        let nc = select(n < n_total, n, 0);
        let p = nc % pixels;
        base[j] = (nc / pixels) * c_in * plane;
        y0[j] = (p / wo) * stride;
        x0[j] = (p % wo) * stride;
    }
    let mut acc = Array::<f32>::new(rows * cols);
    #[unroll]
    for i in 0..rows * cols {
        acc[i] = 0.0;
    }
    let mut at = Array::<usize>::new(cols);
    let mut inside = Array::<bool>::new(cols);
    let mut v = Array::<f32>::new(cols);
    #[unroll]
    for ky in 0..k {
        #[unroll]
        for kx in 0..k {
            #[unroll]
            for j in 0..cols {
                let iy = y0[j] + ky - pad;
                let ix = x0[j] + kx - pad;
                inside[j] = iy < h && ix < w;
                at[j] = base[j] + select(inside[j], iy * w + ix, 0);
            }
            let tap = ky * k + kx;
            for ci in 0..c_in {
                #[unroll]
                for j in 0..cols {
                    let a = at[j];
                    let ok = inside[j];
                    v[j] = select(ok, input[a + ci * plane], 0.0);
                }
                #[unroll]
                for r in 0..rows {
                    let wv = weight[wrow[r] + ci * kk + tap];
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
            let n = first + j;
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
