//! burn's CPU backend (flex) handing its tensors to our CPU kernels ([`sd_cpu_kernels`],
//! plain f32 slices, natively and in the browser's CPU engine): contiguous values in, a CPU
//! tensor out. Why each kernel beats flex's ops: that crate's docs; figures in
//! `docs/benchmarks.md` (issue 19).

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Shape, Tensor, TensorData};
use sd_cpu_kernels as cpu;

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

/// The values of `t` as an owned buffer to compute into.
fn owned<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    values(&contiguous(t)).to_vec()
}

/// A CPU tensor of `shape` holding `values` (moved, not copied).
fn from_values<const D: usize>(values: Vec<f32>, shape: impl Into<Shape>) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(values, shape)))
}

/// The output buffer of a layer with `channels` outputs of `inner` values for each of
/// `outer` rows, holding `bias` (per channel) plus `residual`, for a gemm to add into.
fn start_from<const D: usize>(
    [outer, channels, inner]: [usize; 3],
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<D>>,
) -> Vec<f32> {
    let mut out = match residual {
        Some(r) => owned(r),
        None => vec![0.0f32; outer * channels * inner],
    };
    if let Some(bias) = bias {
        cpu::add_bias(&mut out, values(&contiguous(bias)), inner);
    }
    out
}

/// [`sd_cpu_kernels::attention`]: `q [b, n, heads·d]`, `k, v [b, m, heads·d]` →
/// `[b, n, heads·d]`. Tensors must be on the CPU backend ([`on_flex`]).
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, n, width] = q.dims();
    let m = k.dims()[1];
    let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
    let out = cpu::attention(values(&q), values(&k), values(&v), [b, n, m, heads]);
    from_values(out, [b, n, width])
}

/// `torch.nn.functional.linear`, then `+ residual`: `x [..., in]`, `weight [out, in]`,
/// `bias [out]`, `residual [..., out]` → `[..., out]` ([`sd_cpu_kernels::linear_into`]).
/// Tensors must be on the CPU backend ([`on_flex`]).
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
    let mut out = start_from([tokens, d_out, 1], bias, residual);
    let (x, weight) = (contiguous(x), contiguous(weight));
    cpu::linear_into(&mut out, values(&x), values(&weight), [tokens, d_in, d_out]);
    from_values(out, shape)
}

/// `torch.nn.functional.conv2d` with a square kernel, equal padding, no dilation or groups,
/// then `+ residual`: `x [b, c_in, h, w]`, `weight [c_out, c_in, k, k]`, `bias [c_out]`,
/// `residual` the output's shape → `[b, c_out, (h + 2p − k) / s + 1, (w + 2p − k) / s + 1]`
/// ([`sd_cpu_kernels::conv2d_into`]). Tensors must be on the CPU backend ([`on_flex`]).
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
    let mut out = start_from([b, c_out, ho * wo], Some(bias), residual);
    let (x, weight) = (contiguous(x), contiguous(weight));
    let (x, weight) = (values(&x), values(&weight));
    cpu::conv2d_into(
        &mut out,
        x,
        weight,
        [b, c_in, h, w],
        [c_out, k],
        stride,
        padding,
    );
    from_values(out, [b, c_out, ho, wo])
}

/// `torch.nn.GroupNorm` on `x [b, c, h, w]` with per-channel `weight` and `bias`, then SiLU
/// when `then_silu` ([`sd_cpu_kernels::group_norm`]). Tensors must be on the CPU backend
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
    let mut out = owned(x);
    let (weight, bias) = (owned(weight), owned(bias));
    cpu::group_norm(
        &mut out,
        [c, h * w],
        groups,
        eps as f32,
        &weight,
        &bias,
        then_silu,
    );
    from_values(out, [b, c, h, w])
}

/// `torch.nn.LayerNorm` over the last axis of `x [..., dim]` with `weight`, `bias` `[dim]`
/// ([`sd_cpu_kernels::layer_norm`]). Tensors must be on the CPU backend ([`on_flex`]).
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    let shape = x.dims();
    let mut out = owned(x);
    cpu::layer_norm(&mut out, &owned(weight), &owned(bias), eps as f32);
    from_values(out, shape)
}

/// diffusers' GEGLU: `x [..., 2·inner]` (value, then gate) → `value · gelu(gate)`
/// `[..., inner]` ([`sd_cpu_kernels::geglu`]). Tensors must be on the CPU backend
/// ([`on_flex`]).
pub fn geglu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let mut shape = x.dims();
    shape[D - 1] /= 2;
    let out = cpu::geglu(values(&contiguous(x)), shape[D - 1]);
    from_values(out, shape)
}
