//! Small tensor functions that the networks share. Shapes in comments: b batch, h heads,
//! n query tokens, m key tokens, d head dim, c channels.

use burn::tensor::Tensor;

use crate::kernels;

/// Scaled dot-product attention, `softmax(q kᵀ / √d) v`: a matmul, the softmax
/// ([`kernels::attention_probs`], one fused kernel on a GPU) and a matmul.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    attention_with_bias(q, k, v, None)
}

/// [`attention`] with an additive bias on the scores (a causal mask, say), broadcast from
/// `[1 or b, 1 or h, n, m]`.
pub fn attention_with_bias(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<Tensor<4>>,
) -> Tensor<4> {
    // q: [b, h, n, d], k: [b, h, m, d], v: [b, h, m, d]
    kernels::attention_probs(q, k, bias).matmul(v) // [b, h, n, d]
}

/// The largest attention score slice we let exist at once, in bytes.
///
/// Browsers cap a single WebGPU storage buffer binding at 128 MiB by default. SD 1.5 at
/// 512×512 with CFG (batch 2) self-attends over 64×64 = 4096 tokens with 8 heads: the full
/// `[2, 8, 4096, 4096]` f32 score matrix is 1 GiB. Slicing over batch×heads (and, for still
/// larger images, over query rows) keeps every score slice — and the softmax temporaries of
/// the same size — within 64 MiB: exactly one head of 4096×4096 at 512×512.
pub const ATTENTION_SLICE_BYTES: usize = 64 << 20;

/// `softmax(q kᵀ / √d) v` with the score matrix computed in slices of at most
/// [`ATTENTION_SLICE_BYTES`]. `q: [b, h, n, d]`, `k, v: [b, h, m, d]` -> `[b, h, n, d]`.
pub fn sliced_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    sliced_attention_with_budget(q, k, v, ATTENTION_SLICE_BYTES)
}

/// [`sliced_attention`] with an explicit budget (bytes of f32 scores per slice), so tests
/// can force slicing on small inputs. Each slice is an exact attention over whole softmax
/// rows, so the result equals the unsliced one. A budget below one score row still computes
/// one row at a time.
pub fn sliced_attention_with_budget(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    budget_bytes: usize,
) -> Tensor<4> {
    let [b, h, n, d] = q.dims();
    let m = k.dims()[2];
    let row_bytes = m * size_of::<f32>(); // one query's scores
    let head_bytes = n * row_bytes; // one head's scores
    if b * h * head_bytes <= budget_bytes {
        return attention(q, k, v); // [b, h, n, d]
    }
    // Batch and heads are independent: flatten them so a slice may take any run of them.
    let q = q.reshape([b * h, 1, n, d]);
    let k = k.reshape([b * h, 1, m, d]);
    let v = v.reshape([b * h, 1, m, d]);
    let mut outputs = Vec::new();
    if head_bytes <= budget_bytes {
        let per_slice = budget_bytes / head_bytes; // whole heads per slice, >= 1
        for start in (0..b * h).step_by(per_slice) {
            let len = per_slice.min(b * h - start);
            let (qs, ks, vs) = (
                q.clone().narrow(0, start, len),
                k.clone().narrow(0, start, len),
                v.clone().narrow(0, start, len),
            );
            outputs.push(attention(qs, ks, vs)); // [len, 1, n, d]
        }
    } else {
        // One head is too big: split its query rows too (keys stay whole: softmax is per row).
        let rows = (budget_bytes / row_bytes).max(1);
        for head in 0..b * h {
            let (qh, kh, vh) = (
                q.clone().narrow(0, head, 1),
                k.clone().narrow(0, head, 1),
                v.clone().narrow(0, head, 1),
            );
            let mut parts = Vec::new();
            for start in (0..n).step_by(rows) {
                let len = rows.min(n - start);
                parts.push(attention(
                    qh.clone().narrow(2, start, len),
                    kh.clone(),
                    vh.clone(),
                )); // [1, 1, len, d]
            }
            outputs.push(Tensor::cat(parts, 2)); // [1, 1, n, d]
        }
    }
    Tensor::cat(outputs, 0).reshape([b, h, n, d]) // [b, h, n, d]
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A small LCG: deterministic, spread in [-1.5, 1.5).
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 3.0 - 1.5
            })
            .collect()
    }

    fn read(t: Tensor<4>) -> Vec<f32> {
        pollster::block_on(crate::read_f32(t)).unwrap()
    }

    /// Slicing over heads, and over query rows when one head is over budget, gives the
    /// unsliced result.
    #[test]
    fn sliced_attention_equals_unsliced() {
        let device = crate::device::cpu();
        let (b, h, n, m, d) = (2, 3, 10, 7, 4);
        let t = |shape: [usize; 4], seed| {
            Tensor::<4>::from_data(
                TensorData::new(values(shape.iter().product(), seed), shape),
                &device,
            )
        };
        let (q, k, v) = (t([b, h, n, d], 1), t([b, h, m, d], 2), t([b, h, m, d], 3));
        let want = read(attention(q.clone(), k.clone(), v.clone()));
        let head = n * m * 4;
        // Unsliced; two heads per slice (with a ragged last slice); one head; 3 rows; 1 row.
        for budget in [usize::MAX, 2 * head + 5, head, 3 * m * 4, 1] {
            let got = read(sliced_attention_with_budget(
                q.clone(),
                k.clone(),
                v.clone(),
                budget,
            ));
            assert_eq!(got.len(), want.len());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "budget {budget}: max difference {worst}");
        }
    }

    /// The default budget slices SD 1.5's 512×512 CFG self-attention into single heads of
    /// exactly 64 MiB, below the browser's 128 MiB buffer limit.
    #[test]
    fn default_budget_fits_sd15_at_512() {
        let head = 4096 * 4096 * size_of::<f32>();
        assert!(head <= ATTENTION_SLICE_BYTES);
        assert!(2 * 8 * head > ATTENTION_SLICE_BYTES);
        assert!(ATTENTION_SLICE_BYTES <= 128 << 20);
    }
}
