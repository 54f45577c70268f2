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

/// `torch.nn.functional.linear`, then `+ residual`: `x [..., in]`, `weight [out, in]`,
/// `bias [out]`, `residual [..., out]` → `[..., out]`. One gemm reading the weight in place
/// (burn's path copies the transposed weight), bias and residual added as it writes. Tensors
/// must be on the CPU backend ([`on_flex`]).
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<D>>,
) -> Tensor<D> {
    let mut shape = x.dims();
    let [d_out, d_in] = weight.dims();
    let tokens = shape[..D - 1].iter().product::<usize>();
    shape[D - 1] = d_out;
    let mut out = start_from(tokens, d_out, 1, bias, residual);
    let (x, weight) = (contiguous(x), contiguous(weight));
    // SAFETY: gemm reads tokens×d_in of x and d_out×d_in of weight, and reads and writes
    // tokens×d_out of out, at the strides given, all inside the slices.
    unsafe {
        // out[tokens, d_out] += x[tokens, d_in] · weightᵀ[d_in, d_out]
        gemm::gemm(
            tokens,
            d_out,
            d_in,
            out.as_mut_ptr(),
            1,
            d_out as isize,
            true,
            values(&x).as_ptr(),
            1,
            d_in as isize,
            values(&weight).as_ptr(),
            d_in as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    from_values(out, shape)
}

/// Values of im2col's matrix per slice of output rows: 2 Mi f32 (8 MiB).
const COLUMN_VALUES: usize = 2 << 20;

/// `torch.nn.functional.conv2d` with a square kernel, equal padding, no dilation or groups,
/// then `+ residual`: `x [b, c_in, h, w]`, `weight [c_out, c_in, k, k]`, `bias [c_out]`,
/// `residual` the output's shape → `[b, c_out, (h + 2p − k) / s + 1, (w + 2p − k) / s + 1]`.
/// im2col from NCHW in slices of output rows (at most [`COLUMN_VALUES`]) and one gemm per
/// slice with the weight as it is stored, written straight into the NCHW output (flex copies
/// input and weight to NHWC and scatters its result on every call); a 1×1 conv is one gemm
/// on the input itself. Tensors must be on the CPU backend ([`on_flex`]).
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: usize,
    residual: Option<Tensor<4>>,
) -> Tensor<4> {
    let [b, c_in, h, w] = x.dims();
    let [c_out, _, k, _] = weight.dims();
    let (ho, wo) = (
        (h + 2 * padding - k) / stride + 1,
        (w + 2 * padding - k) / stride + 1,
    );
    let spatial = ho * wo;
    let depth = c_in * k * k; // im2col's rows: (channel, ky, kx), the weight's own order
    let mut out = start_from(b, c_out, spatial, Some(bias), residual);
    let (x, weight) = (contiguous(x), contiguous(weight));
    let (x, weight) = (values(&x), values(&weight));
    // One gemm per slice: out[c_out, pixels] += weight[c_out, depth] · columns[depth, pixels].
    let gemm_into = |out: &mut [f32], columns: &[f32], pixels: usize, column_stride: usize| {
        // SAFETY: reads c_out×depth of weight and depth×pixels of columns, reads and writes
        // c_out×pixels of out with rows `spatial` apart, all inside the slices.
        unsafe {
            gemm::gemm(
                c_out,
                pixels,
                depth,
                out.as_mut_ptr(),
                1,
                spatial as isize,
                true,
                weight.as_ptr(),
                1,
                depth as isize,
                columns.as_ptr(),
                1,
                column_stride as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    let pointwise = k == 1 && stride == 1 && padding == 0;
    let rows = (COLUMN_VALUES / (depth * wo).max(1)).clamp(1, ho);
    let mut columns = match pointwise {
        true => Vec::new(),
        false => vec![0.0f32; depth * rows * wo],
    };
    for batch in 0..b {
        let input = &x[batch * c_in * h * w..][..c_in * h * w];
        let output = &mut out[batch * c_out * spatial..][..c_out * spatial];
        if pointwise {
            gemm_into(output, input, spatial, spatial);
            continue;
        }
        for first in (0..ho).step_by(rows) {
            let r = rows.min(ho - first);
            let pixels = r * wo;
            im2col(
                input,
                &mut columns[..depth * pixels],
                [h, w],
                [first, r, wo],
                k,
                stride,
                padding,
            );
            gemm_into(&mut output[first * wo..], &columns, pixels, pixels);
        }
    }
    from_values(out, vec![b, c_out, ho, wo])
}

/// im2col for output rows `first..first + rows` of one image: `columns[(c, ky, kx), pixel]`
/// is the input under kernel tap (ky, kx) of that output pixel, 0 in the padding.
fn im2col(
    input: &[f32],
    columns: &mut [f32],
    [h, w]: [usize; 2],
    [first, rows, wo]: [usize; 3],
    k: usize,
    stride: usize,
    padding: usize,
) {
    let pixels = rows * wo;
    for (tap, column) in columns.chunks_exact_mut(pixels).enumerate() {
        let (c, ky, kx) = (tap / (k * k), tap / k % k, tap % k);
        let plane = &input[c * h * w..][..h * w];
        for (yy, line) in column.chunks_exact_mut(wo).enumerate() {
            // Input row and column of output pixel (y, 0) under this tap, padding included.
            let y = ((first + yy) * stride + ky) as isize - padding as isize;
            if y < 0 || y >= h as isize {
                line.fill(0.0);
                continue;
            }
            let src = &plane[y as usize * w..][..w];
            for (xx, value) in line.iter_mut().enumerate() {
                let x = (xx * stride + kx) as isize - padding as isize;
                *value = match x >= 0 && x < w as isize {
                    true => src[x as usize],
                    false => 0.0,
                };
            }
        }
    }
}

/// The output buffer of a layer with `channels` outputs of `inner` values for each of
/// `outer` rows, holding `bias` (per channel) plus `residual`, for a gemm to add into.
fn start_from<const D: usize>(
    outer: usize,
    channels: usize,
    inner: usize,
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<D>>,
) -> Vec<f32> {
    let mut out = match residual {
        Some(r) => values(&contiguous(r)).to_vec(),
        None => vec![0.0f32; outer * channels * inner],
    };
    if let Some(bias) = bias {
        let bias = contiguous(bias);
        let per_row = values(&bias)
            .iter()
            .flat_map(|&b| std::iter::repeat_n(b, inner));
        for row in out.chunks_exact_mut(channels * inner) {
            row.iter_mut()
                .zip(per_row.clone())
                .for_each(|(o, b)| *o += b);
        }
    }
    out
}

/// A CPU tensor of `shape` holding `values` (moved, not copied).
fn from_values<const D: usize>(
    values: Vec<f32>,
    shape: impl Into<burn::tensor::Shape>,
) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(values, shape)))
}

/// `torch.nn.GroupNorm` on `x [b, c, h, w]` with per-channel `weight` and `bias`, then SiLU
/// when `then_silu`: two passes over each group (its mean, then its variance about the mean,
/// as the reference's two-pass form), and one that writes `x·scale + shift` per channel with
/// the SiLU folded in (burn's ops make ten passes). Tensors must be on the CPU backend
/// ([`on_flex`]).
pub fn group_norm(
    x: Tensor<4>,
    groups: usize,
    eps: f64,
    weight: Tensor<1>,
    bias: Tensor<1>,
    then_silu: bool,
) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
    let (weight, bias) = (values(&weight), values(&bias));
    let mut out = values(&x).to_vec();
    let per_group = c / groups * h * w;
    for (i, group) in out.chunks_exact_mut(per_group).enumerate() {
        let count = group.len() as f32;
        let mean = sum(group) / count;
        let var = sum_sq_about(group, mean) / count;
        let rstd = 1.0 / (var + eps as f32).sqrt();
        let first = i % groups * (c / groups);
        for (j, plane) in group.chunks_exact_mut(h * w).enumerate() {
            let scale = rstd * weight[first + j];
            let shift = bias[first + j] - mean * scale;
            match then_silu {
                true => plane.iter_mut().for_each(|v| {
                    let y = *v * scale + shift;
                    *v = y / (1.0 + exp(-y));
                }),
                false => plane.iter_mut().for_each(|v| *v = *v * scale + shift),
            }
        }
    }
    from_values(out, [b, c, h, w])
}

/// `torch.nn.LayerNorm` over the last axis of `x [..., dim]` with `weight`, `bias` `[dim]`:
/// per row its mean, its variance about the mean, then `(x − mean)·rstd·weight + bias` (burn's
/// ops make eight passes). Tensors must be on the CPU backend ([`on_flex`]).
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    let shape = x.dims();
    let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
    let (weight, bias) = (values(&weight), values(&bias));
    let mut out = values(&x).to_vec();
    for row in out.chunks_exact_mut(shape[D - 1]) {
        let count = row.len() as f32;
        let mean = sum(row) / count;
        let rstd = 1.0 / (sum_sq_about(row, mean) / count + eps as f32).sqrt();
        row.iter_mut()
            .zip(weight.iter().zip(bias))
            .for_each(|(v, (w, b))| *v = (*v - mean) * rstd * w + b);
    }
    from_values(out, shape)
}

/// diffusers' GEGLU: `x [..., 2·inner]` (value, then gate) → `value · gelu(gate)`
/// `[..., inner]`, the exact GELU `g/2·(1 + erf(g/√2))` with [`erf`]. One pass (burn's ops
/// copy both halves first). Tensors must be on the CPU backend ([`on_flex`]).
pub fn geglu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let mut shape = x.dims();
    let inner = shape[D - 1] / 2;
    shape[D - 1] = inner;
    let x = contiguous(x);
    let mut out = vec![0.0f32; shape.iter().product()];
    for (o, row) in out
        .chunks_exact_mut(inner)
        .zip(values(&x).chunks_exact(2 * inner))
    {
        let (value, gate) = row.split_at(inner);
        o.iter_mut()
            .zip(value.iter().zip(gate))
            .for_each(|(o, (v, g))| {
                *o = v * 0.5 * g * (1.0 + erf(g * std::f32::consts::FRAC_1_SQRT_2))
            });
    }
    from_values(out, shape)
}

/// erf(x) to within 10⁻⁶ in f32 (Abramowitz & Stegun 7.1.26: 1.5·10⁻⁷ in exact arithmetic), branch-free so that loops over it
/// vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let p = 1.061_405_4;
    let p = p * t - 1.453_152_1;
    let p = p * t + 1.421_413_7;
    let p = p * t - 0.284_496_73;
    let p = p * t + 0.254_829_6;
    let y = 1.0 - p * t * exp(-a * a);
    y.copysign(x)
}

/// The sum of `values`, in eight lanes so that it vectorises.
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(l, x)| *l += x);
    }
    chunks.remainder().iter().sum::<f32>() + lanes.iter().sum::<f32>()
}

/// `Σ (v − mean)²` over `values`, in eight lanes.
fn sum_sq_about(values: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        lanes
            .iter_mut()
            .zip(c)
            .for_each(|(l, x)| *l += (x - mean) * (x - mean));
    }
    let rest: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    rest + lanes.iter().sum::<f32>()
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
    sum(row)
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

    /// erf from −6 to 6 in steps of 1/256 against a double-precision series.
    #[test]
    fn erf_is_close() {
        // erf(x) = 2/√π Σ (−1)ⁿ x²ⁿ⁺¹ / (n! (2n+1)), summed until the terms vanish.
        let series = |x: f64| {
            let (mut term, mut total, mut n) = (x, 0.0, 0.0);
            while term.abs() > 1e-17 || n < 10.0 {
                total += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
                if n > 400.0 {
                    break;
                }
            }
            total * 2.0 / std::f64::consts::PI.sqrt()
        };
        for i in -3 * 256..=3 * 256 {
            let x = i as f64 / 256.0;
            let off = (erf(x as f32) as f64 - series(x)).abs();
            assert!(off < 1e-6, "erf({x}) off by {off}");
        }
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    /// The largest difference between two CPU tensors.
    fn worst<const D: usize>(got: Tensor<D>, want: Tensor<D>) -> f32 {
        assert_eq!(got.dims(), want.dims());
        let got = got.into_data().try_to_vec::<f32>().unwrap();
        let want = want.into_data().try_to_vec::<f32>().unwrap();
        got.iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    }

    /// Against burn's `linear` (+ the residual): with and without bias and residual, rows of
    /// tokens in a 3-d and a 2-d input, one token.
    #[test]
    fn linear_matches_burn() {
        use burn::tensor::Distribution;
        let device = crate::device::cpu();
        let normal = Distribution::Normal(0.0, 1.0);
        for (tokens, d_in, d_out, bias, add) in [
            (154, 96, 40, true, true),
            (77, 64, 24, false, false),
            (1, 1280, 56, true, false),
            (9, 3, 5, false, true),
        ] {
            let x = Tensor::<3>::random([2, tokens, d_in], normal, &device);
            let w = Tensor::<2>::random([d_out, d_in], normal, &device).mul_scalar(0.05);
            let b = bias.then(|| Tensor::<1>::random([d_out], normal, &device));
            let r = add.then(|| Tensor::<3>::random([2, tokens, d_out], normal, &device));
            let want = burn::tensor::module::linear(x.clone(), w.clone().transpose(), b.clone());
            let want = match r.clone() {
                Some(r) => want + r,
                None => want,
            };
            let case = format!("{tokens} × {d_in} → {d_out}, bias {bias}, residual {add}");
            let off = worst(
                linear(x.clone(), w.clone(), b.clone(), r.clone()),
                want.clone(),
            );
            assert!(off < 1e-4, "{case}: off by {off}");
            let flat = |t: Tensor<3>| {
                let last = t.dims()[2];
                t.reshape([2 * tokens, last])
            };
            let off = worst(linear(flat(x), w, b, r.map(flat)), flat(want));
            assert!(off < 1e-4, "{case}, 2-d: off by {off}");
        }
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
            let off = worst(attention_in_blocks(q, k, v, heads, rows), want);
            assert!(
                off < 1e-5,
                "{b}×{n}×{m}, {heads} heads of {d}: off by {off}"
            );
        }
    }
}
