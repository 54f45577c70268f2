//! Plain-Rust reference implementations, accumulated in f64. Slow and obvious on purpose:
//! they are the CPU result every GPU kernel is compared with.

/// `[b, m, k] x [k, n] -> [b, m, n]`
pub fn matmul(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; batch * m * n];
    let mut row = vec![0.0f64; n];
    for bi in 0..batch {
        for i in 0..m {
            row.iter_mut().for_each(|r| *r = 0.0);
            for p in 0..k {
                let x = a[(bi * m + i) * k + p] as f64;
                let brow = &b[p * n..(p + 1) * n];
                for (r, y) in row.iter_mut().zip(brow) {
                    *r += x * *y as f64;
                }
            }
            for (o, r) in out[(bi * m + i) * n..][..n].iter_mut().zip(&row) {
                *o = *r as f32;
            }
        }
    }
    out
}

/// NCHW input, OIHW weight, stride 1, zero padding `pad`.
pub fn conv2d(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    [b, c_in, h, wd]: [usize; 4],
    c_out: usize,
    kernel: usize,
    pad: usize,
) -> Vec<f32> {
    let (ho, wo) = (h + 2 * pad - kernel + 1, wd + 2 * pad - kernel + 1);
    let mut out = vec![0.0f32; b * c_out * ho * wo];
    let mut acc = vec![0.0f64; ho * wo];
    for bi in 0..b {
        for o in 0..c_out {
            acc.iter_mut().for_each(|a| *a = bias[o] as f64);
            for c in 0..c_in {
                let plane = &x[(bi * c_in + c) * h * wd..][..h * wd];
                for ky in 0..kernel {
                    for kx in 0..kernel {
                        let wv = w[((o * c_in + c) * kernel + ky) * kernel + kx] as f64;
                        for oy in 0..ho {
                            let iy = oy + ky;
                            if iy < pad || iy - pad >= h {
                                continue;
                            }
                            let src = &plane[(iy - pad) * wd..][..wd];
                            let dst = &mut acc[oy * wo..][..wo];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = ox + kx;
                                if ix >= pad && ix - pad < wd {
                                    *d += wv * src[ix - pad] as f64;
                                }
                            }
                        }
                    }
                }
            }
            for (dst, a) in out[(bi * c_out + o) * ho * wo..][..ho * wo]
                .iter_mut()
                .zip(&acc)
            {
                *dst = *a as f32;
            }
        }
    }
    out
}

/// `torch.nn.GroupNorm` on NCHW input.
pub fn group_norm(
    x: &[f32],
    [b, c, h, w]: [usize; 4],
    groups: usize,
    eps: f64,
    weight: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let per_group = (c / groups) * h * w;
    let mut out = vec![0.0f32; x.len()];
    for bi in 0..b {
        for g in 0..groups {
            let start = (bi * groups + g) * per_group;
            let vals = &x[start..start + per_group];
            let mean = vals.iter().map(|v| *v as f64).sum::<f64>() / per_group as f64;
            let var =
                vals.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / per_group as f64;
            let inv = 1.0 / (var + eps).sqrt();
            for (i, v) in vals.iter().enumerate() {
                let ch = g * (c / groups) + i / (h * w);
                out[start + i] =
                    ((*v as f64 - mean) * inv * weight[ch] as f64 + bias[ch] as f64) as f32;
            }
        }
    }
    out
}

/// `softmax(q kᵀ · scale) v` per batch and head; q `[bh, n, d]`, k and v `[bh, m, d]`.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [bh, n, m, d]: [usize; 4],
    scale: f64,
) -> Vec<f32> {
    let mut out = vec![0.0f32; bh * n * d];
    let mut scores = vec![0.0f64; m];
    for h in 0..bh {
        for i in 0..n {
            let qi = &q[(h * n + i) * d..][..d];
            for (j, s) in scores.iter_mut().enumerate() {
                let kj = &k[(h * m + j) * d..][..d];
                *s = qi
                    .iter()
                    .zip(kj)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    * scale;
            }
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut total = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            let mut acc = vec![0.0f64; d];
            for (j, s) in scores.iter().enumerate() {
                let vj = &v[(h * m + j) * d..][..d];
                for (a, vd) in acc.iter_mut().zip(vj) {
                    *a += *s / total * *vd as f64;
                }
            }
            for (o, a) in out[(h * n + i) * d..][..d].iter_mut().zip(&acc) {
                *o = *a as f32;
            }
        }
    }
    out
}
