//! Our own GPU kernels, for the operations where burn's generic ones cost the most: the
//! convolution (a register-blocked GEMM walk over NCHW, instead of burn's direct kernel,
//! which gives each output pixel one unit looping over `c_in·k·k`, after NHWC copies of input
//! and weight on every call), attention without a score matrix (flash attention), and the
//! normalisations and activations that burn runs as 5–17 small kernels each (GroupNorm+SiLU,
//! LayerNorm, softmax, GEGLU): one dispatch each. Measured in `docs/benchmarks.md`.
//!
//! The functions here are the only entry points and are called the same way on every device:
//! on a cubecl device (wgpu natively, WebGPU in the browser) with f32 tensors they launch our
//! kernels, written in cubecl (compiled to WGSL / SPIR-V by burn's runtime); on burn's CPU
//! backend with f32 tensors convolution, linear layers and attention run our CPU kernels
//! ([`cpu`]), and the rest the plain burn ops.

mod attention;
mod conv;
mod cpu;
mod norm;

use burn::backend::{Cube, DispatchDevice};
use burn::tensor::activation::{gelu, silu, softmax};
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};
use burn_cubecl::cubecl::prelude::{CubeCount, CubeDim};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

/// Whether `x` can take our kernels: it lives on a cubecl device and is f32.
fn on_cube<const D: usize>(x: &Tensor<D>) -> bool {
    matches!(x.device().as_dispatch(), DispatchDevice::Cube(_)) && x.dtype() == DType::F32
}

/// The contiguous cubecl tensor under `t` (checked by [`on_cube`] first).
fn cube<const D: usize>(t: Tensor<D>) -> CubeTensor {
    into_contiguous(
        t.try_into_primitive::<Cube>()
            .expect("a tensor on a cubecl device (checked by on_cube)"),
    )
}

/// An uninitialised contiguous f32 tensor of `shape` on `like`'s device.
fn empty_like(like: &CubeTensor, shape: Vec<usize>) -> CubeTensor {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        shape.into(),
        DType::F32,
    )
}

/// `torch.nn.functional.conv2d` with a square kernel, equal padding, no dilation or groups:
/// `x [b, c_in, h, w]`, `weight [c_out, c_in, k, k]`, `bias [c_out]` →
/// `[b, c_out, (h + 2p - k) / s + 1, (w + 2p - k) / s + 1]`.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: usize,
) -> Tensor<4> {
    conv2d_add(x, weight, bias, stride, padding, None)
}

/// [`conv2d`], then `+ residual` (same shape as the output): a resnet's skip connection or a
/// transformer's, added as the conv writes (on the CPU [`cpu::conv2d`]).
pub fn conv2d_add(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: usize,
    residual: Option<Tensor<4>>,
) -> Tensor<4> {
    let on_cpu = cpu::on_flex(&x)
        && cpu::on_flex(&weight)
        && cpu::on_flex(&bias)
        && residual.as_ref().is_none_or(cpu::on_flex);
    if on_cpu {
        return cpu::conv2d(x, weight, bias, stride, padding, residual);
    }
    let fused = residual.as_ref().is_none_or(on_cube);
    if !(fused && on_cube(&x) && on_cube(&weight) && on_cube(&bias)) {
        let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
        let y = burn_conv2d(x, weight, Some(bias), options);
        return match residual {
            Some(r) => y + r,
            None => y,
        };
    }
    let software = crate::device::is_software(&x.device());
    conv2d_on_cube(x, weight, Some(bias), stride, padding, residual, software)
}

/// Whether [`linear`] runs our kernel for `x`: f32 on a hardware GPU. On CPU-side drivers
/// (lavapipe, SwiftShader) burn's matmul measured faster, and keeps q8 weights packed.
pub fn linear_on_gpu<const D: usize>(x: &Tensor<D>) -> bool {
    on_cube(x) && !crate::device::is_software(&x.device())
}

/// Whether [`linear`] runs our CPU kernel for `x`: f32 on burn's CPU backend (the weight must
/// be f32 too; quantized weights keep burn's matmul).
pub fn linear_on_cpu<const D: usize>(x: &Tensor<D>) -> bool {
    cpu::on_flex(x)
}

/// `torch.nn.functional.linear` with the weight in PyTorch's layout, then `+ residual`:
/// `x [..., in]`, `weight [out, in]` (f32), `bias [out]`, `residual [..., out]` →
/// `[..., out]`. On a GPU our conv kernel on `[tokens, in, 1, 1]`: bias and residual added as
/// it writes, the input channels split across workgroups where tokens are few (the time
/// embedding's 2 rows). On the CPU [`cpu::linear`]. Burn's ops elsewhere (a quantized weight
/// on the CPU, say).
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<D>>,
) -> Tensor<D> {
    let on_cpu = cpu::on_flex(&x)
        && cpu::on_flex(&weight)
        && bias.as_ref().is_none_or(cpu::on_flex)
        && residual.as_ref().is_none_or(cpu::on_flex);
    if on_cpu {
        return cpu::linear(x, weight, bias, residual);
    }
    let ours = on_cube(&x)
        && on_cube(&weight)
        && bias.as_ref().is_none_or(on_cube)
        && residual.as_ref().is_none_or(on_cube);
    if !ours {
        let y = burn::tensor::module::linear(x, weight.transpose(), bias);
        return match residual {
            Some(r) => y + r,
            None => y,
        };
    }
    let mut shape = x.dims();
    let [d_out, d_in] = weight.dims();
    let tokens = shape[..D - 1].iter().product::<usize>();
    shape[D - 1] = d_out;
    let as_map = |t: Tensor<D>, c: usize| t.reshape([tokens, c, 1, 1]);
    let y = conv2d_on_cube(
        as_map(x, d_in),
        weight.reshape([d_out, d_in, 1, 1]),
        bias,
        1,
        0,
        residual.map(|r| as_map(r, d_out)),
        false,
    );
    y.reshape(shape)
}

/// [`conv2d_add`] on a cubecl device with f32 tensors, planned for a CPU-side driver
/// (`software`) or a GPU ([`conv::plan`]).
fn conv2d_on_cube(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: usize,
    residual: Option<Tensor<4>>,
    software: bool,
) -> Tensor<4> {
    let [b, c_in, h, w] = x.dims();
    let [c_out, _, k, _] = weight.dims();
    let (ho, wo) = (
        (h + 2 * padding - k) / stride + 1,
        (w + 2 * padding - k) / stride + 1,
    );
    let (x, weight) = (cube(x), cube(weight));
    let out = empty_like(&x, vec![b, c_out, ho, wo]);
    let add_bias = bias.is_some();
    // Unread when absent, as the residual below.
    let bias = match bias {
        Some(b) => cube(b),
        None => empty_like(&x, vec![1]),
    };
    let client = x.client.clone();
    let n = b * ho * wo;
    let dim = CubeDim::new_1d(conv::UNITS as u32);
    let add_residual = residual.is_some();
    // Unread without a residual, but a binding all the same: a fresh one-value buffer (binding
    // one of the others twice would alias a writable buffer, which WebGPU refuses).
    let residual = match residual {
        Some(r) => cube(r),
        None => empty_like(&x, vec![1]),
    };
    let plan = conv::plan(c_out, n, c_in, software);
    let split = plan.splits > 1;
    // Split: the partial sums first, then their sum with bias and residual into `out`.
    let target = match split {
        true => empty_like(&x, vec![plan.splits * c_out * n]),
        false => out.clone(),
    };
    let count = CubeCount::Static(
        plan.along_pixels as u32,
        plan.along_channels as u32,
        plan.splits as u32,
    );
    // SAFETY: every index the kernel reads or writes is bounded by the shapes passed here.
    unsafe {
        conv::conv2d_blocked::launch_unchecked(
            &client,
            count,
            dim,
            x.into_tensor_arg(),
            weight.into_tensor_arg(),
            bias.clone().into_tensor_arg(),
            residual.clone().into_tensor_arg(),
            target.clone().into_tensor_arg(),
            c_in,
            h,
            w,
            c_out,
            ho,
            wo,
            n,
            plan.ci_per_split,
            k,
            stride,
            padding,
            plan.rows,
            plan.cols,
            plan.by_channel,
            add_bias && !split,
            add_residual && !split,
            split,
        );
    }
    if split {
        let (count, dim) = elementwise_grid(&client, n * c_out);
        conv::conv2d_split_sum::launch(
            &client,
            count,
            dim,
            target.into_tensor_arg(),
            bias.into_tensor_arg(),
            residual.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            c_out,
            ho * wo,
            plan.splits,
            add_bias,
            add_residual,
        );
    }
    Tensor::from_primitive::<Cube>(out)
}

/// `torch.nn.GroupNorm` on `x [b, c, h, w]` with per-channel `weight` and `bias`, followed by
/// SiLU when `then_silu` (the order every resnet uses). One dispatch on a GPU; on the CPU
/// [`cpu::group_norm`].
pub fn group_norm(
    x: Tensor<4>,
    groups: usize,
    eps: f64,
    weight: Tensor<1>,
    bias: Tensor<1>,
    then_silu: bool,
) -> Tensor<4> {
    if cpu::on_flex(&x) && cpu::on_flex(&weight) && cpu::on_flex(&bias) {
        return cpu::group_norm(x, groups, eps, weight, bias, then_silu);
    }
    if !(on_cube(&x) && on_cube(&weight) && on_cube(&bias)) {
        let y = group_norm_reference(x, groups, eps, weight, bias);
        return if then_silu { silu(y) } else { y };
    }
    let [b, c, h, w] = x.dims();
    let (x, weight, bias) = (cube(x), cube(weight), cube(bias));
    let out = empty_like(&x, vec![b, c, h, w]);
    let client = x.client.clone();
    let units = reduce_units(&client, c / groups * h * w);
    norm::group_norm_kernel::launch(
        &client,
        CubeCount::Static((b * groups) as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        bias.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        c / groups,
        h * w,
        groups,
        eps as f32,
        units,
        then_silu,
    );
    Tensor::from_primitive::<Cube>(out)
}

/// GroupNorm in burn's ops, as `torch.nn.GroupNorm`: the definition the kernels are tested
/// against.
fn group_norm_reference(
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

/// `torch.nn.LayerNorm` over the last axis of `x [..., dim]`, with `weight`, `bias` `[dim]`.
/// One dispatch on a GPU.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    if cpu::on_flex(&x) && cpu::on_flex(&weight) && cpu::on_flex(&bias) {
        return cpu::layer_norm(x, weight, bias, eps);
    }
    if !(on_cube(&x) && on_cube(&weight) && on_cube(&bias)) {
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(D - 1);
        let normed = centered / var.add_scalar(eps).sqrt();
        return normed * weight.unsqueeze() + bias.unsqueeze();
    }
    let shape = x.dims();
    let dim = shape[D - 1];
    let rows = shape.iter().product::<usize>() / dim;
    let (x, weight, bias) = (cube(x), cube(weight), cube(bias));
    let out = empty_like(&x, shape.to_vec());
    let client = x.client.clone();
    let units = reduce_units(&client, dim).min(64);
    norm::layer_norm_kernel::launch(
        &client,
        row_grid(rows),
        CubeDim::new_1d(units as u32),
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        bias.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows,
        dim,
        eps as f32,
        units,
    );
    Tensor::from_primitive::<Cube>(out)
}

/// Attention weights `softmax(q kᵀ / √d + bias)`: `q [b, h, n, d]`, `k [b, h, m, d]`, `bias`
/// broadcast from `[1 or b, 1 or h, n, m]` → `[b, h, n, m]`. On a GPU without a bias, the
/// scale and the softmax are one kernel after the matmul; elsewhere q is scaled first (fewer
/// values to scale on a CPU).
pub fn attention_probs(q: Tensor<4>, k: Tensor<4>, bias: Option<Tensor<4>>) -> Tensor<4> {
    let [_, _, _, d] = q.dims();
    let scale = (d as f64).powf(-0.5);
    if bias.is_some() || !on_cube(&q) || !on_cube(&k) {
        let scores = q.mul_scalar(scale).matmul(k.swap_dims(2, 3)); // [b, h, n, m]
        let scores = match bias {
            Some(bias) => scores + bias,
            None => scores,
        };
        return softmax(scores, 3);
    }
    let scores = q.matmul(k.swap_dims(2, 3)); // [b, h, n, m], unscaled
    let shape = scores.dims();
    let cols = shape[3];
    let rows = shape.iter().product::<usize>() / cols;
    let scores = cube(scores);
    let out = empty_like(&scores, shape.to_vec());
    let client = scores.client.clone();
    let units = reduce_units(&client, cols).min(64);
    norm::softmax_kernel::launch(
        &client,
        row_grid(rows),
        CubeDim::new_1d(units as u32),
        scores.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows,
        cols,
        scale as f32,
        units,
    );
    Tensor::from_primitive::<Cube>(out)
}

/// The largest head size [`flash_attention`] takes on a GPU: its unit keeps the query and
/// the output row in registers (2·d values). The CPU kernel takes any.
pub const FLASH_MAX_HEAD_DIM: usize = 128;

/// Whether [`flash_attention`] runs for these tensors (f32 on a cubecl device with a head
/// size at most [`FLASH_MAX_HEAD_DIM`], or f32 on burn's CPU backend); callers use the sliced
/// attention otherwise.
pub fn flash_attention_supported(q: &Tensor<3>, k: &Tensor<3>, heads: usize) -> bool {
    let d = q.dims()[2] / heads;
    let whole_heads = q.dims()[2].is_multiple_of(heads);
    let gpu = on_cube(q) && on_cube(k) && d <= FLASH_MAX_HEAD_DIM;
    whole_heads && (gpu || (cpu::on_flex(q) && cpu::on_flex(k)))
}

/// Multi-head attention `softmax(q kᵀ / √d) v` per head, in one dispatch and without a score
/// matrix: `q [b, n, heads·d]`, `k, v [b, m, heads·d]` → `[b, n, heads·d]` (heads split
/// and merged as diffusers' `Attention` does). Only where [`flash_attention_supported`]; on
/// the CPU [`cpu::attention`].
pub fn flash_attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    if cpu::on_flex(&q) {
        return cpu::attention(q, k, v, heads);
    }
    let [b, n, width] = q.dims();
    let m = k.dims()[1];
    let d = width / heads;
    let (q, k, v) = (cube(q), cube(k), cube(v));
    let out = empty_like(&q, vec![b, n, width]);
    let client = q.client.clone();
    let count = CubeCount::Static(n.div_ceil(attention::UNITS) as u32, (b * heads) as u32, 1);
    // SAFETY: every index is bounded by the shapes above (surplus rows read row 0, write
    // nothing).
    unsafe {
        attention::flash_attention::launch_unchecked(
            &client,
            count,
            CubeDim::new_1d(attention::UNITS as u32),
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            n,
            m,
            heads,
            (d as f32).powf(-0.5),
            d,
        );
    }
    Tensor::from_primitive::<Cube>(out)
}

/// `x + bias + other` in one pass: `bias [c]` along `x`'s dim `channel` (of size c), `other`
/// of `x`'s shape, or of `x`'s shape with every dim after `channel` of size 1 (one value per
/// channel, as the time embedding a ResNet adds to its feature map) → `x`'s shape. One
/// dispatch on a GPU where burn's ops take two: the bias of burn's matmul (which has none)
/// and the add after it, on software adapters (issue 17's dispatch count).
pub fn add_bias_and<const D: usize>(
    x: Tensor<D>,
    bias: Tensor<1>,
    channel: usize,
    other: Tensor<D>,
) -> Tensor<D> {
    let shape = x.dims();
    let inner: usize = shape[channel + 1..].iter().product();
    let per_channel = other.dims()[channel + 1..].iter().all(|&d| d == 1);
    if !(on_cube(&x) && on_cube(&bias) && on_cube(&other)) {
        let mut along = [1; D];
        along[channel] = shape[channel];
        let bias = bias.reshape(along);
        // A per-channel `other` takes the bias first: one pass over `x`, not two.
        return match per_channel {
            true => x + (other + bias),
            false => x + other + bias,
        };
    }
    let (x, bias, other) = (cube(x), cube(bias), cube(other));
    let out = empty_like(&x, shape.to_vec());
    let client = x.client.clone();
    let (count, dim) = elementwise_grid(&client, shape.iter().product());
    norm::add_bias_and_kernel::launch(
        &client,
        count,
        dim,
        x.into_tensor_arg(),
        bias.into_tensor_arg(),
        other.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        inner,
        shape[channel],
        if per_channel { inner } else { 1 },
    );
    Tensor::from_primitive::<Cube>(out)
}

/// diffusers' GEGLU: `x [..., 2·inner]` (value, then gate), plus `bias [2·inner]` when given
/// (a projection's bias that burn's matmul left out) → `value · gelu(gate)` `[..., inner]`,
/// with the exact GELU. One dispatch on a GPU, the bias included.
pub fn geglu<const D: usize>(x: Tensor<D>, bias: Option<Tensor<1>>) -> Tensor<D> {
    let mut shape = x.dims();
    let inner = shape[D - 1] / 2;
    let fused = bias.as_ref().is_none_or(on_cube);
    if !(on_cube(&x) && fused) {
        let x = match bias {
            Some(b) => x + b.unsqueeze(),
            None => x,
        };
        if cpu::on_flex(&x) {
            return cpu::geglu(x);
        }
        let value = x.clone().narrow(D - 1, 0, inner);
        let gate = x.narrow(D - 1, inner, inner);
        return value * gelu(gate);
    }
    shape[D - 1] = inner;
    let x = cube(x);
    let with_bias = bias.is_some();
    // Without a bias the kernel's bias argument is the input, never read.
    let bias = bias.map_or_else(|| x.clone(), cube);
    let out = empty_like(&x, shape.to_vec());
    let client = x.client.clone();
    let (count, dim) = elementwise_grid(&client, shape.iter().product());
    norm::geglu_kernel::launch(
        &client,
        count,
        dim,
        x.into_tensor_arg(),
        bias.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        inner,
        with_bias,
    );
    Tensor::from_primitive::<Cube>(out)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    /// The largest difference between `got` on the GPU and `want` on the CPU.
    fn worst<const D: usize>(got: Tensor<D>, want: &Tensor<D>) -> f32 {
        let got = pollster::block_on(crate::read_f32(got)).unwrap();
        let want = want.to_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// [`linear`] on the GPU (the GPU plan: lavapipe's own would take burn's matmul) and on the
    /// CPU (our CPU kernel) against burn's `linear` on the CPU: tokens × in → out with and
    /// without bias and residual, and the time embedding's 2 rows, whose 1280 inputs are split
    /// across workgroups on a GPU.
    #[test]
    fn linear_matches_the_cpu() {
        let gpu = pollster::block_on(crate::device::gpu()).expect("a GPU device (lavapipe)");
        let cpu = crate::device::cpu();
        let normal = Distribution::Normal(0.0, 1.0);
        for (tokens, d_in, d_out, with_bias) in [
            (154, 96, 40, true),
            (77, 64, 24, false),
            (2, 1280, 56, true),
        ] {
            let x = Tensor::<3>::random([1, tokens, d_in], normal, &cpu);
            let w = Tensor::<2>::random([d_out, d_in], normal, &cpu).mul_scalar(0.05);
            let bias = Tensor::<1>::random([d_out], normal, &cpu);
            let residual = Tensor::<3>::random([1, tokens, d_out], normal, &cpu);
            let bias = with_bias.then_some(bias);
            let want = burn::tensor::module::linear(x.clone(), w.clone().transpose(), bias.clone());
            let summed = want.clone() + residual.clone();
            for device in [&gpu, &cpu] {
                let to = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), device);
                let wd = Tensor::<2>::from_data(w.to_data(), device);
                let bd = bias
                    .clone()
                    .map(|b| Tensor::<1>::from_data(b.to_data(), device));
                let got = linear(to(&x), wd.clone(), bd.clone(), None);
                let got_add = linear(to(&x), wd, bd, Some(to(&residual)));
                let case = format!("{device:?}: {tokens} × {d_in} → {d_out}, bias {with_bias}");
                assert!(worst(got, &want) < 1e-3, "{case}");
                assert!(worst(got_add, &summed) < 1e-3, "{case}, residual");
            }
        }
    }

    /// [`add_bias_and`] on the GPU and the CPU against burn's broadcasting adds: a residual of
    /// the input's shape (a linear layer's), and one value per channel over a map (a ResNet's
    /// time embedding), with an odd map size.
    #[test]
    fn add_bias_and_matches_burn() {
        let gpu = pollster::block_on(crate::device::gpu()).expect("a GPU device (lavapipe)");
        let cpu = crate::device::cpu();
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<3>::random([2, 77, 24], normal, &cpu);
        let bias = Tensor::<1>::random([24], normal, &cpu);
        let residual = Tensor::<3>::random([2, 77, 24], normal, &cpu);
        let want = x.clone() + residual.clone() + bias.clone().reshape([1, 1, 24]);
        let map = Tensor::<4>::random([2, 12, 5, 7], normal, &cpu);
        let (map_bias, temb) = (
            Tensor::<1>::random([12], normal, &cpu),
            Tensor::<4>::random([2, 12, 1, 1], normal, &cpu),
        );
        let want_map = map.clone() + temb.clone() + map_bias.clone().reshape([1, 12, 1, 1]);
        for device in [&gpu, &cpu] {
            let to3 = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), device);
            let to4 = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), device);
            let to1 = |t: &Tensor<1>| Tensor::<1>::from_data(t.to_data(), device);
            let got = add_bias_and(to3(&x), to1(&bias), 2, to3(&residual));
            assert!(worst(got, &want) < 1e-6, "{device:?}: residual");
            let got = add_bias_and(to4(&map), to1(&map_bias), 1, to4(&temb));
            assert!(worst(got, &want_map) < 1e-6, "{device:?}: per channel");
        }
    }

    /// The CPU attention kernel with blocks of query rows that do not divide the rows,
    /// one-row blocks, a single key, head sizes past the GPU kernel's limit (160, the VAE's
    /// 512) against burn's attention (`ops::attention`).
    #[test]
    fn cpu_attention_matches_burn() {
        let cpu = crate::device::cpu();
        let normal = Distribution::Normal(0.0, 1.0);
        for (b, n, m, heads, d, rows) in [
            (2, 37, 77, 4, 10, 8),
            (1, 9, 1, 2, 160, 1),
            (2, 20, 20, 1, 512, 7),
            (1, 64, 40, 8, 40, 64),
        ] {
            let [q, k, v] = [n, m, m].map(|t| Tensor::<3>::random([b, t, heads * d], normal, &cpu));
            let split = |x: Tensor<3>, t| x.reshape([b, t, heads, d]).swap_dims(1, 2);
            let want = crate::ops::attention(
                split(q.clone(), n),
                split(k.clone(), m),
                split(v.clone(), m),
            )
            .swap_dims(1, 2)
            .reshape([b, n, heads * d]);
            let values = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
            let got = sd_cpu_kernels::attention_in_blocks(
                &values(q),
                &values(k),
                &values(v),
                [b, n, m, heads],
                rows,
            );
            let got = Tensor::<3>::from_data(TensorData::new(got, [b, n, heads * d]), &cpu);
            let off = worst(got, &want);
            assert!(
                off < 1e-5,
                "{b}×{n}×{m}, {heads} heads of {d}: off by {off}"
            );
        }
    }

    /// Both plans on the GPU at hand (lavapipe in CI) against burn's CPU conv: the GPU plan
    /// (other blocks, split-K on small maps) runs in CI only here, on a software driver.
    #[test]
    fn conv_plans_match_the_cpu() {
        let gpu = pollster::block_on(crate::device::gpu()).expect("a GPU device (lavapipe)");
        let cpu = crate::device::cpu();
        let normal = Distribution::Normal(0.0, 1.0);
        // (b, c_in, c_out, side, k, stride): split-K in 2, 3 and 7 (c_in ≥ 256 on small
        // maps; 1000 channels in 7 splits leave the last one short), the 8 × 8 and 16 × 4
        // blocks, stride 2, ragged tiles.
        for (b, c_in, c_out, side, k, stride) in [
            (2, 256, 40, 6, 3, 1),
            (1, 384, 24, 9, 3, 1),
            (1, 1000, 16, 5, 3, 1),
            (2, 8, 20, 17, 3, 1),
            (1, 6, 12, 70, 3, 2),
            (1, 4, 16, 64, 1, 1),
            (1, 4, 8, 128, 3, 1),
        ] {
            let x = Tensor::<4>::random([b, c_in, side, side], normal, &cpu);
            let w = Tensor::<4>::random([c_out, c_in, k, k], normal, &cpu).mul_scalar(0.05);
            let bias = Tensor::<1>::random([c_out], normal, &cpu);
            let pad = k / 2;
            let plain = conv2d(x.clone(), w.clone(), bias.clone(), stride, pad);
            let residual = Tensor::<4>::random(plain.dims(), normal, &cpu);
            let summed = plain.clone() + residual.clone();
            let on_gpu = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &gpu);
            for software in [true, false] {
                let (xg, wg) = (on_gpu(&x), on_gpu(&w));
                let bg = Tensor::<1>::from_data(bias.to_data(), &gpu);
                let rg = on_gpu(&residual);
                for (add, want) in [(None, &plain), (Some(rg), &summed)] {
                    let got = conv2d_on_cube(
                        xg.clone(),
                        wg.clone(),
                        Some(bg.clone()),
                        stride,
                        pad,
                        add,
                        software,
                    );
                    let worst = worst(got, want);
                    assert!(
                        worst < 1e-3,
                        "{b}×{c_in}→{c_out} {side}² k{k} s{stride} software {software}: off by {worst}"
                    );
                }
            }
        }
    }
}

/// One unit per value of a `len`-value output, in workgroups of 256.
fn elementwise_grid(
    client: &burn_cubecl::cubecl::client::Client,
    len: usize,
) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(256);
    let count = burn_cubecl::cubecl::calculate_cube_count_elemwise(client, len, dim);
    (count, dim)
}

/// One workgroup per row: a 1-D grid, 2-D past WebGPU's 65 535 workgroups per dimension
/// (kernels skip the surplus of the last grid row).
fn row_grid(rows: usize) -> CubeCount {
    let x = rows.min(65_535);
    CubeCount::Static(x as u32, rows.div_ceil(x) as u32, 1)
}

/// Units for a workgroup reduction over `len` values: a power of two, at most 256 (WebGPU's
/// default `maxComputeInvocationsPerWorkgroup`) and what the device allows, at most `len`
/// rounded up.
fn reduce_units(client: &burn_cubecl::cubecl::client::Client, len: usize) -> usize {
    let cap = (client.properties().hardware.max_units_per_cube as usize).clamp(1, 256);
    let cap = if cap.is_power_of_two() {
        cap
    } else {
        cap.next_power_of_two() / 2
    };
    len.next_power_of_two().clamp(1, cap)
}
