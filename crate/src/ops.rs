//! Small tensor functions that the networks share. Shapes in comments: b batch, h heads,
//! n query tokens, m key tokens, d head dim, c channels.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

/// Scaled dot-product attention, `softmax(q kᵀ / √d) v`, written out with a matmul and a
/// softmax so it runs the same on every backend.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    attention_with_bias(q, k, v, None)
}

/// [`attention`] with an additive bias on the scores (a causal mask, say), broadcast from
/// `[1 or b, 1 or h, n, m]`.
pub fn attention_with_bias(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>) -> Tensor<4> {
    // q: [b, h, n, d], k: [b, h, m, d], v: [b, h, m, d]
    let [_, _, _, d] = q.dims();
    let scale = (d as f64).powf(-0.5);
    let scores = q.mul_scalar(scale).matmul(k.swap_dims(2, 3)); // [b, h, n, m]
    let scores = match bias {
        Some(bias) => scores + bias,
        None => scores,
    };
    softmax(scores, 3).matmul(v) // [b, h, n, d]
}

/// Group normalisation with a per-channel affine, as `torch.nn.GroupNorm`.
pub fn group_norm(
    x: Tensor<4>,
    groups: usize,
    eps: f64,
    weight: Tensor<1>,
    bias: Tensor<1>,
) -> Tensor<4> {
    // x: [b, c, hgt, wid]
    let [b, c, hgt, wid] = x.dims();
    let grouped = x.reshape([b, groups, (c / groups) * hgt * wid]);
    // Two-pass variance: E[(x - mean)²] is steadier in f32 than E[x²] - mean².
    let mean = grouped.clone().mean_dim(2);
    let centered = grouped - mean;
    let var = centered.clone().square().mean_dim(2);
    let normed = (centered / var.add_scalar(eps).sqrt()).reshape([b, c, hgt, wid]);
    normed * weight.reshape([1, c, 1, 1]) + bias.reshape([1, c, 1, 1])
}
