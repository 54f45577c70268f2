//! Our own kernels for burn's CPU backend (flex), natively and in the browser's CPU engine
//! (wasm with SIMD128): where flex's generic ops cost the most on Stable Diffusion's shapes.
//!
//! Attention: flex runs `softmax(q kᵀ) v` as a batched matmul into a full score tensor
//! (`[2, 8, 1024, 1024]` f32 = 64 MiB at 256², allocated and freed per layer), a softmax of
//! five passes with a scalar `exp`, and a second matmul, after copying heads out of the
//! projections' layout. Here each (batch, head) walks blocks of query rows: one gemm into a
//! score block that stays in cache, a softmax with a polynomial `exp` the compiler vectorises,
//! a second gemm written straight into the `[b, n, heads·d]` output. Measured in
//! `docs/benchmarks.md` (issue 19).

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Tensor, TensorData};

/// Whether `x` lives on burn's CPU backend as f32, so the kernels here can take it.
pub fn on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    matches!(
        x.device().as_dispatch(),
        burn::backend::DispatchDevice::Flex(_)
    ) && x.dtype() == DType::F32
}

/// The contiguous flex tensor under `t` (checked by [`on_flex`] first); copies only if strided.
fn contiguous<const D: usize>(t: Tensor<D>) -> FlexTensor {
    t.try_into_primitive::<Flex>()
        .expect("a tensor on the CPU backend (checked by on_flex)")
        .to_contiguous()
}

/// The values of a contiguous flex tensor, in row-major order.
fn values(t: &FlexTensor) -> &[f32] {
    let start = t.layout().start_offset();
    &t.storage::<f32>()[start..start + t.layout().num_elements()]
}

/// Scores kept per block of query rows: 64 Ki f32 (256 KiB), inside a core's L2.
const SCORE_BLOCK: usize = 64 * 1024;

/// Multi-head attention `softmax(q kᵀ / √d) v` per head: `q [b, n, heads·d]`,
/// `k, v [b, m, heads·d]` → `[b, n, heads·d]` (diffusers' `Attention` with its head split and
/// merge), without a score tensor. Any head size. Tensors must be on the CPU backend
/// ([`on_flex`]).
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    let n = q.dims()[1];
    let rows = (SCORE_BLOCK / k.dims()[1].max(1)).clamp(1, n.max(1));
    attention_in_blocks(q, k, v, heads, rows)
}

/// [`attention`] with `rows` query rows per score block, so tests can make blocks ragged.
pub(crate) fn attention_in_blocks(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    rows: usize,
) -> Tensor<3> {
    let [b, n, width] = q.dims();
    let m = k.dims()[1];
    let d = width / heads;
    let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
    let (q, k, v) = (values(&q), values(&k), values(&v));
    let mut out = vec![0.0f32; b * n * width];
    let mut scores = vec![0.0f32; rows * m];
    let mut sums = vec![0.0f32; rows];
    let scale = (d as f32).powf(-0.5);
    let stride = width as isize;
    for batch in 0..b {
        for head in 0..heads {
            // Element (token t, channel c) of this head: base + t·width + c.
            let (q_base, kv_base) = (batch * n * width + head * d, batch * m * width + head * d);
            for first in (0..n).step_by(rows) {
                let r = rows.min(n - first);
                let q_at = q_base + first * width;
                // SAFETY: gemm reads r×d of q, m×d of k and v and writes r×m of scores and
                // r×d of out, each at the offsets and strides above, all inside the slices
                // (shapes from the tensors' own dims).
                unsafe {
                    // scores[r, m] = scale · q[r, d] · kᵀ[d, m]
                    gemm::gemm(
                        r,
                        m,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        m as isize,
                        false,
                        q.as_ptr().add(q_at),
                        1,
                        stride,
                        k.as_ptr().add(kv_base),
                        stride,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for (row, sum) in scores.chunks_exact_mut(m).zip(&mut sums).take(r) {
                    *sum = exp_shifted(row);
                }
                let o = &mut out[q_at..];
                // SAFETY: as above.
                unsafe {
                    // out[r, d] = p[r, m] · v[m, d], unnormalised
                    gemm::gemm(
                        r,
                        d,
                        m,
                        o.as_mut_ptr(),
                        1,
                        stride,
                        false,
                        scores.as_ptr(),
                        1,
                        m as isize,
                        v.as_ptr().add(kv_base),
                        1,
                        stride,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                // Normalising the d outputs costs less than the m probabilities.
                for (i, sum) in sums.iter().take(r).enumerate() {
                    let inv = 1.0 / sum;
                    o[i * width..i * width + d]
                        .iter_mut()
                        .for_each(|x| *x *= inv);
                }
            }
        }
    }
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(out, [b, n, width])))
}

/// `row ← exp(row − max(row))`, returning the sum: softmax's numerator and denominator.
fn exp_shifted(row: &mut [f32]) -> f32 {
    // Eight lanes, so the reductions vectorise (a single accumulator would be a serial chain).
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l = l.max(*x);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, &x| a.max(x));
    row.iter_mut().for_each(|x| *x = exp(*x - max));
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    chunks.remainder().iter().sum::<f32>() + lanes.iter().sum::<f32>()
}

/// `eˣ` to within 2 ulp for x ≤ 88 (0 below −87.3 is flushed to a tiny normal), branch-free
/// so that loops over it vectorise: x = n·ln 2 + r with |r| ≤ ln 2 / 2, eʳ by Cephes' `expf`
/// polynomial, 2ⁿ built in the exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to an integer in the low mantissa bits (round to nearest).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    e_r * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input from −87 to 88 in steps of 1/64 against std's `exp`.
    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        for i in -87 * 64..=88 * 64 {
            let x = i as f32 / 64.0;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }

    /// Blocks of query rows that do not divide the rows, one-row blocks, a single key, head
    /// sizes past the GPU kernel's limit (160, the VAE's 512): equal to burn's attention.
    #[test]
    fn attention_matches_burn() {
        let device = crate::device::cpu();
        let mut seed = 1u32;
        let mut uniform = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 * 3.0 - 1.5
                })
                .collect()
        };
        for (b, n, m, heads, d, rows) in [
            (2, 37, 77, 4, 10, 8),
            (1, 9, 1, 2, 160, 1),
            (2, 20, 20, 1, 512, 7),
            (1, 64, 40, 8, 40, 64),
        ] {
            let t = |x: Vec<f32>, tokens| {
                Tensor::<3>::from_data(TensorData::new(x, [b, tokens, heads * d]), &device)
            };
            let (q, k, v) = (
                t(uniform(b * n * heads * d), n),
                t(uniform(b * m * heads * d), m),
                t(uniform(b * m * heads * d), m),
            );
            let split = |x: Tensor<3>, tokens| x.reshape([b, tokens, heads, d]).swap_dims(1, 2);
            let want = crate::ops::attention(
                split(q.clone(), n),
                split(k.clone(), m),
                split(v.clone(), m),
            )
            .swap_dims(1, 2)
            .reshape([b, n, heads * d]);
            let got = attention_in_blocks(q, k, v, heads, rows);
            let want = want.into_data().to_vec::<f32>().unwrap();
            let got = got.into_data().to_vec::<f32>().unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{b}×{n}×{m}, {heads} heads of {d}: off by {worst}"
            );
        }
    }
}
