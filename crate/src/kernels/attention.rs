//! Attention without a score matrix in memory: each unit owns one query row of one head and
//! walks the keys once with the online softmax of Milakov & Gimelshein 2018 (as in
//! FlashAttention, Dao et al. 2022): a running maximum, a running sum and the output row in
//! registers, rescaled when the maximum grows. It reads q, k, v in the projections' own
//! `[b, tokens, heads·d]` layout and writes the output in it, so the head split and merge
//! copies go too. All units of a workgroup share a head and walk the same keys, so key and
//! value reads are the same address in every unit (broadcast loads).

use burn_cubecl::cubecl;
use cubecl::prelude::*;

/// Units per workgroup, along query rows.
pub const UNITS: usize = 64;

/// `q [b, n, heads·d]`, `k, v [b, m, heads·d]` → `out [b, n, heads·d]` =
/// `softmax(q kᵀ · scale) v` per head. Launch with `CubeDim (UNITS)` and
/// `CubeCount (⌈n / UNITS⌉, b·heads)`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn flash_attention(
    q: &Tensor<f32>,
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    out: &mut Tensor<f32>,
    n: usize,
    m: usize,
    heads: usize,
    scale: f32,
    #[comptime] d: usize,
) {
    let bh = CUBE_POS_Y as usize; // uniform: batch · heads + head
    let batch = bh / heads;
    let head = bh % heads;
    let row = CUBE_POS_X as usize * UNITS + UNIT_POS_X as usize;
    let live = row < n;
    let width = heads * d;
    let q_at = (batch * n + select(live, row, 0)) * width + head * d;
    let kv_at = batch * m * width + head * d;

    let mut qr = Array::<f32>::new(d);
    let mut acc = Array::<f32>::new(d);
    #[unroll]
    for t in 0..d {
        qr[t] = q[q_at + t] * scale;
        acc[t] = 0.0;
    }
    let mut top = f32::new(-3.0e38);
    let mut sum = 0.0;
    for j in 0..m {
        let at = kv_at + j * width;
        let mut s = 0.0;
        #[unroll]
        for t in 0..d {
            s += qr[t] * k[at + t];
        }
        let new_top = max(top, s);
        let rescale = f32::exp(top - new_top);
        let p = f32::exp(s - new_top);
        sum = sum * rescale + p;
        #[unroll]
        for t in 0..d {
            acc[t] = acc[t] * rescale + p * v[at + t];
        }
        top = new_top;
    }
    if live {
        let inv = 1.0 / sum;
        #[unroll]
        for t in 0..d {
            out[q_at + t] = acc[t] * inv;
        }
    }
}
