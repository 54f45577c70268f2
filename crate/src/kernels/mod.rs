//! Our own GPU kernels, for the operations where burn's generic ones cost the most: the
//! convolution (a register-blocked GEMM walk over NCHW, instead of burn's direct kernel,
//! which gives each output pixel one unit looping over `c_in·k·k`, after NHWC copies of input
//! and weight on every call), attention without a score matrix (flash attention), and the
//! normalisations and activations that burn runs as 5–17 small kernels each (GroupNorm+SiLU,
//! LayerNorm, softmax, GEGLU): one dispatch each. Measured in `docs/benchmarks.md`.
//!
//! The functions here are the only entry points and are called the same way on every device:
//! on a cubecl device (wgpu natively, WebGPU in the browser) with f32 tensors they launch our
//! kernels; elsewhere (burn's CPU backend) they run the plain burn ops, so CPU results do not
//! change. Kernels are written in cubecl (compiled to WGSL / SPIR-V by burn's runtime).

mod attention;
mod conv;
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
/// transformer's, added as the conv writes on a GPU.
pub fn conv2d_add(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: usize,
    residual: Option<Tensor<4>>,
) -> Tensor<4> {
    let fused = residual.as_ref().is_none_or(on_cube);
    if !(fused && on_cube(&x) && on_cube(&weight) && on_cube(&bias)) {
        let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
        let y = burn_conv2d(x, weight, Some(bias), options);
        return match residual {
            Some(r) => y + r,
            None => y,
        };
    }
    let [b, c_in, h, w] = x.dims();
    let [c_out, _, k, _] = weight.dims();
    let (ho, wo) = (
        (h + 2 * padding - k) / stride + 1,
        (w + 2 * padding - k) / stride + 1,
    );
    let (x, weight, bias) = (cube(x), cube(weight), cube(bias));
    let out = empty_like(&x, vec![b, c_out, ho, wo]);
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
    let ra = residual.into_tensor_arg();
    let (xa, wa) = (x.into_tensor_arg(), weight.into_tensor_arg());
    let (ba, oa) = (bias.into_tensor_arg(), out.clone().into_tensor_arg());
    let (by_channel, rows, cols, along_pixels, along_channels) = conv::plan(c_out, n);
    let count = CubeCount::Static(along_pixels as u32, along_channels as u32, 1);
    // SAFETY: every index the kernel reads or writes is bounded by the shapes passed here.
    unsafe {
        conv::conv2d_blocked::launch_unchecked(
            &client,
            count,
            dim,
            xa,
            wa,
            ba,
            ra,
            oa,
            c_in,
            h,
            w,
            c_out,
            ho,
            wo,
            k,
            stride,
            padding,
            rows,
            cols,
            by_channel,
            add_residual,
        );
    }
    Tensor::from_primitive::<Cube>(out)
}

/// `torch.nn.GroupNorm` on `x [b, c, h, w]` with per-channel `weight` and `bias`, followed by
/// SiLU when `then_silu` (the order every resnet uses). One dispatch on a GPU.
pub fn group_norm(
    x: Tensor<4>,
    groups: usize,
    eps: f64,
    weight: Tensor<1>,
    bias: Tensor<1>,
    then_silu: bool,
) -> Tensor<4> {
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

/// GroupNorm in burn's ops, as `torch.nn.GroupNorm`: the CPU's path and the definition the
/// kernel is tested against.
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

/// The largest head size [`flash_attention`] takes: its unit keeps the query and the output
/// row in registers (2·d values).
pub const FLASH_MAX_HEAD_DIM: usize = 128;

/// Whether [`flash_attention`] runs for these tensors (a cubecl device, f32, head size at most
/// [`FLASH_MAX_HEAD_DIM`]); callers use the sliced attention otherwise.
pub fn flash_attention_supported(q: &Tensor<3>, k: &Tensor<3>, heads: usize) -> bool {
    let d = q.dims()[2] / heads;
    on_cube(q) && on_cube(k) && d <= FLASH_MAX_HEAD_DIM && q.dims()[2] % heads == 0
}

/// Multi-head attention `softmax(q kᵀ / √d) v` per head, in one dispatch and without a score
/// matrix: `q [b, n, heads·d]`, `k, v [b, m, heads·d]` → `[b, n, heads·d]` (heads split
/// and merged as diffusers' `Attention` does). Only where [`flash_attention_supported`].
pub fn flash_attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
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

/// diffusers' GEGLU: `x [..., 2·inner]` (value, then gate) → `value · gelu(gate)`
/// `[..., inner]`, with the exact GELU. One dispatch on a GPU.
pub fn geglu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let mut shape = x.dims();
    let inner = shape[D - 1] / 2;
    if !on_cube(&x) {
        let value = x.clone().narrow(D - 1, 0, inner);
        let gate = x.narrow(D - 1, inner, inner);
        return value * gelu(gate);
    }
    shape[D - 1] = inner;
    let x = cube(x);
    let out = empty_like(&x, shape.to_vec());
    let client = x.client.clone();
    let len = shape.iter().product::<usize>();
    let dim = CubeDim::new_1d(256);
    let count = burn_cubecl::cubecl::calculate_cube_count_elemwise(&client, len, dim);
    norm::geglu_kernel::launch(
        &client,
        count,
        dim,
        x.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        inner,
    );
    Tensor::from_primitive::<Cube>(out)
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
