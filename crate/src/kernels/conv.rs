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

/// How one conv is launched: the block each unit computes, the grid, and how many
/// workgroups share the input channels (`splits`, each summing `ci_per_split` of them into
/// its own partial output, added up by [`conv2d_split_sum`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub by_channel: bool,
    pub rows: usize,
    pub cols: usize,
    pub along_pixels: usize,
    pub along_channels: usize,
    pub splits: usize,
    pub ci_per_split: usize,
}

/// Units a hardware GPU should be given to hide its memory latency: a few thousand per
/// multiprocessor (NVIDIA's H200 has 132); measured there, docs/benchmarks.md.
const HARDWARE_UNITS: usize = 1 << 18;

/// The plan for a conv with `c_out` channels over `n` output pixels (batch included) and
/// `c_in` input channels, on a CPU-side driver (`software`: lavapipe, SwiftShader) or a GPU.
///
/// Software: pixels per unit in a 16 × 8 block where the work is large (best on lavapipe
/// among 4–32 × 2–16), smaller where it is not; under 128 pixels, channels per unit (4 × up
/// to 16), since pixels per unit would leave most units idle. Two cores need no more units.
///
/// Hardware: 64 accumulators per unit (128 spill on NVIDIA), 8 × 8 for 4096–16383 pixels
/// and 16 × 4 elsewhere, the fastest on an H200 among 4–16 × 1–8; and where that leaves too
/// few units to hide the GPU's memory latency (SD's 32², 16² and 8² levels, the linears' few
/// tokens), the input channels split across up to `c_in / 128` workgroups (split-K), which
/// measured 2–7× faster there (docs/benchmarks.md).
pub fn plan(c_out: usize, n: usize, c_in: usize, software: bool) -> Plan {
    let grid = |rows: usize, cols: usize, splits: usize| Plan {
        by_channel: false,
        rows,
        cols,
        along_pixels: n.div_ceil(UNITS * cols),
        along_channels: c_out.div_ceil(rows),
        splits,
        ci_per_split: c_in.div_ceil(splits),
    };
    if !software {
        let (rows, cols) = match n {
            4096..16384 => (8, 8),
            _ => (16, 4),
        };
        let units = n.div_ceil(cols) * c_out.div_ceil(rows);
        let splits = HARDWARE_UNITS.div_ceil(units).min(c_in / 128).max(1);
        return grid(rows, cols, splits);
    }
    if n < UNITS * 2 {
        let (rows, cols) = (4, n.min(16));
        return Plan {
            by_channel: true,
            along_pixels: n.div_ceil(cols),
            along_channels: c_out.div_ceil(UNITS * rows),
            ..grid(rows, cols, 1)
        };
    }
    let cols = [8, 4, 2, 1]
        .into_iter()
        .find(|&c| UNITS * c <= n)
        .unwrap_or(1);
    let rows = if c_out >= 128 { 16 } else { 4 };
    grid(rows, cols, 1)
}

/// `input [b, c_in, h, w]`, `weight [c_out, c_in·k·k]`, `bias [c_out]` →
/// `output [b, c_out, ho, wo]`, plus `bias` when `add_bias` and `residual` (same shape as the
/// output) when `add_residual` (either otherwise any other buffer, unread). A linear layer is
/// the 1×1 case with `h = w = 1`: `[tokens, in, 1, 1]` is `[tokens, in]` row-major. Each unit computes `rows` channels ×
/// `cols` pixels; launch with `CubeDim (UNITS)` and the grid [`plan`] gives, `splits` deep.
/// With `split`, workgroup z sums input channels `[z·ci_per_split, (z+1)·ci_per_split)` only
/// and writes them, without bias, to `output [splits, c_out, n_total]` for
/// [`conv2d_split_sum`].
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
    n_total: usize,
    ci_per_split: usize,
    #[comptime] k: usize,
    #[comptime] stride: usize,
    #[comptime] pad: usize,
    #[comptime] rows: usize,
    #[comptime] cols: usize,
    #[comptime] by_channel: bool,
    #[comptime] add_bias: bool,
    #[comptime] add_residual: bool,
    #[comptime] split: bool,
) {
    let kk = k * k;
    let k_total = c_in * kk;
    let pixels = ho * wo;
    let plane = h * w;
    let z = CUBE_POS_Z as usize;
    let ci_begin = z * ci_per_split;
    let ci_end = min(c_in, ci_begin + ci_per_split);
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
            for ci in ci_begin..ci_end {
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
                if split {
                    output[(z * c_out + co) * n_total + n] = acc[r * cols + j];
                } else {
                    let at = ((n / pixels) * c_out + co) * pixels + n % pixels;
                    let mut y = acc[r * cols + j];
                    if add_bias {
                        y += bias[co];
                    }
                    if add_residual {
                        y += residual[at];
                    }
                    output[at] = y;
                }
            }
        }
    }
}

/// `output [b, c_out, pixels] = Σ_z partial [splits, c_out, b·pixels]` (+ `bias` when
/// `add_bias`, + `residual` when `add_residual`): the sum of a split conv's partial outputs, one unit per value.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn conv2d_split_sum(
    partial: &Tensor<f32>,
    bias: &Tensor<f32>,
    residual: &Tensor<f32>,
    output: &mut Tensor<f32>,
    c_out: usize,
    pixels: usize,
    splits: usize,
    #[comptime] add_bias: bool,
    #[comptime] add_residual: bool,
) {
    let i = ABSOLUTE_POS;
    if i >= output.len() {
        terminate!();
    }
    let co = (i / pixels) % c_out;
    let n = (i / (pixels * c_out)) * pixels + i % pixels;
    let n_total = output.len() / c_out;
    let mut y = partial[co * n_total + n];
    for z in 1..splits {
        y += partial[(z * c_out + co) * n_total + n];
    }
    if add_bias {
        y += bias[co];
    }
    if add_residual {
        y += residual[i];
    }
    output[i] = y;
}
