//! Normalisations in one dispatch each, one workgroup per group or row, reducing in workgroup
//! memory: GroupNorm (+SiLU; ~17 dispatches in burn's ops), LayerNorm (~8) and softmax (~6,
//! with the attention scale). Two-pass variance as [`crate::kernels::group_norm`], in f32.

use burn_cubecl::cubecl;
use cubecl::prelude::*;

/// Sum (or, with `max`, maximum) of `value` over the workgroup; every unit gets it.
/// `CUBE_DIM` must be a power of two, and every unit must call it (barriers in uniform control
/// flow, as WGSL requires).
#[cube]
fn workgroup_reduce(smem: &mut Shared<[f32]>, value: f32, #[comptime] max: bool) -> f32 {
    let tid = UNIT_POS as usize;
    smem[tid] = value;
    sync_cube();
    let mut stride = (CUBE_DIM / 2) as usize;
    while stride > 0 {
        if tid < stride {
            let other = smem[tid + stride];
            if max {
                smem[tid] = f32::max(smem[tid], other);
            } else {
                smem[tid] += other;
            }
        }
        sync_cube();
        stride /= 2;
    }
    let total = smem[0];
    sync_cube(); // everyone has read smem[0] before the next call writes it
    total
}

/// Mean and `1/√(variance + eps)` of `input[base .. base + len]` (two passes: the centred
/// variance is steadier in f32), each unit taking every `units`-th value. `count` is the
/// divisor (`len`, unless `len` is 0 for a surplus workgroup).
#[cube]
fn mean_and_rstd(
    input: &Tensor<f32>,
    smem: &mut Shared<[f32]>,
    base: usize,
    len: usize,
    count: f32,
    eps: f32,
    #[comptime] units: usize,
) -> (f32, f32) {
    let tid = UNIT_POS as usize;
    let mut sum = 0.0;
    let mut j = tid;
    while j < len {
        sum += input[base + j];
        j += units;
    }
    let mean = workgroup_reduce(smem, sum, false) / count;
    let mut sq = 0.0;
    let mut j = tid;
    while j < len {
        let d = input[base + j] - mean;
        sq += d * d;
        j += units;
    }
    let rstd = f32::inverse_sqrt(workgroup_reduce(smem, sq, false) / count + eps);
    (mean, rstd)
}

/// The row this workgroup owns (grids are 2-D past 65 535 rows), and `len` if it is a real
/// row or 0 for the surplus workgroups of the last grid row, which must still reach every
/// barrier.
#[cube]
fn row_and_len(rows: usize, len: usize) -> (usize, usize) {
    let row = CUBE_POS;
    (row, select(row < rows, len, 0))
}

/// `torch.nn.LayerNorm` over the last axis: `input [rows, dim]` → `output`, each row
/// normalised and then `· weight[j] + bias[j]`. One workgroup of `units` (a power of two) per
/// row.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_kernel(
    input: &Tensor<f32>,
    weight: &Tensor<f32>,
    bias: &Tensor<f32>,
    output: &mut Tensor<f32>,
    rows: usize,
    dim: usize,
    eps: f32,
    #[comptime] units: usize,
) {
    let (row, len) = row_and_len(rows, dim);
    let base = row * dim;
    let tid = UNIT_POS as usize;
    let mut smem = Shared::<[f32]>::new_slice(units);
    let (mean, rstd) = mean_and_rstd(input, &mut smem, base, len, dim as f32, eps, units);

    let mut j = tid;
    while j < len {
        output[base + j] = (input[base + j] - mean) * rstd * weight[j] + bias[j];
        j += units;
    }
}

/// `softmax(input · scale)` over the last axis: `input [rows, len]` → `output`. One
/// workgroup of `units` (a power of two) per row.
#[cube(launch)]
pub fn softmax_kernel(
    input: &Tensor<f32>,
    output: &mut Tensor<f32>,
    rows: usize,
    cols: usize,
    scale: f32,
    #[comptime] units: usize,
) {
    let (row, len) = row_and_len(rows, cols);
    let base = row * cols;
    let tid = UNIT_POS as usize;
    let mut smem = Shared::<[f32]>::new_slice(units);

    let mut top = f32::new(-3.0e38);
    let mut j = tid;
    while j < len {
        top = max(top, input[base + j] * scale);
        j += units;
    }
    let top = workgroup_reduce(&mut smem, top, true);

    let mut sum = 0.0;
    let mut j = tid;
    while j < len {
        sum += f32::exp(input[base + j] * scale - top);
        j += units;
    }
    let inv = 1.0 / workgroup_reduce(&mut smem, sum, false);

    let mut j = tid;
    while j < len {
        output[base + j] = f32::exp(input[base + j] * scale - top) * inv;
        j += units;
    }
}

/// diffusers' GEGLU after its projection: `input [rows, 2·inner]` (value, then gate), plus
/// `bias [2·inner]` when `with_bias` (the projection's, where burn's matmul left it out) →
/// `output [rows, inner]` = `value · gelu(gate)`, with the exact (erf) GELU. One unit per
/// output value.
#[cube(launch)]
pub fn geglu_kernel(
    input: &Tensor<f32>,
    bias: &Tensor<f32>,
    output: &mut Tensor<f32>,
    inner: usize,
    #[comptime] with_bias: bool,
) {
    let i = ABSOLUTE_POS;
    if i >= output.len() {
        terminate!();
    }
    let row = i / inner;
    let mut value = input[i + row * inner]; // row · 2·inner + (i - row · inner)
    let mut gate = input[i + (row + 1) * inner];
    if with_bias {
        value += bias[i - row * inner];
        gate += bias[i - row * inner + inner];
    }
    output[i] = value * gate * 0.5 * (1.0 + Erf::erf(gate * 0.707_106_77));
}

/// `output[i] = input[i] + bias[(i / inner) % channels] + other[i / other_div]`: a bias along
/// one dim of `input` plus a tensor of its shape (`other_div` 1) or one value per channel
/// (`other_div` = `inner`). One unit per value.
#[cube(launch)]
pub fn add_bias_and_kernel(
    input: &Tensor<f32>,
    bias: &Tensor<f32>,
    other: &Tensor<f32>,
    output: &mut Tensor<f32>,
    inner: usize,
    channels: usize,
    other_div: usize,
) {
    let i = ABSOLUTE_POS;
    if i >= output.len() {
        terminate!();
    }
    output[i] = input[i] + bias[(i / inner) % channels] + other[i / other_div];
}

/// `input [b, c, h, w]` → `output` of the same shape, normalised over each of `groups` groups
/// of `c / groups` channels, then `· weight[c] + bias[c]`, then SiLU when `silu`.
/// Launch one workgroup per (batch, group) with a power-of-two `units` ≤ 256.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn group_norm_kernel(
    input: &Tensor<f32>,
    weight: &Tensor<f32>,
    bias: &Tensor<f32>,
    output: &mut Tensor<f32>,
    channels_per_group: usize,
    hw: usize,
    groups: usize,
    eps: f32,
    #[comptime] units: usize,
    #[comptime] silu: bool,
) {
    let len = channels_per_group * hw;
    let base = CUBE_POS * len; // CUBE_POS = batch · groups + group
    let first_channel = (CUBE_POS % groups) * channels_per_group;
    let tid = UNIT_POS as usize;
    let mut smem = Shared::<[f32]>::new_slice(units);
    let (mean, rstd) = mean_and_rstd(input, &mut smem, base, len, len as f32, eps, units);

    let mut j = tid;
    while j < len {
        let c = first_channel + j / hw;
        let mut y = (input[base + j] - mean) * rstd * weight[c] + bias[c];
        if silu {
            y /= 1.0 + f32::exp(-y);
        }
        output[base + j] = y;
        j += units;
    }
}
