//! The layers Stable Diffusion is built from, constructed from named weights (PyTorch layout
//! in the files, converted here). Each mirrors its `torch.nn` namesake.

use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::quantization::QuantValue;
use burn::tensor::{DType, Tensor};

use crate::Error;
use crate::kernels;
use crate::weights::VarBuilder;

/// `torch.nn.Linear`. An f32 weight is kept as `[in, out]`, burn's layout; a quantized one
/// stays in PyTorch's `[out, in]` row blocks, which burn's matmul reads transposed (q8
/// without expanding them, see [`matmul_weight`]).
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Option<Param<Tensor<2>>>,
    pub quantized: Vec<Param<Tensor<2>>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub d_in: usize,
    pub d_out: usize,
}

/// Whether `t` holds quantized values.
fn is_quantized<const D: usize>(t: &Tensor<D>) -> bool {
    matches!(t.dtype(), DType::QFloat(_))
}

/// A quantized `[out, in]` weight block as the `[in, out]` operand of a matmul. q8 goes to
/// burn's quantized matmul as is. q4 is expanded for the call: burn 0.22's fused q4 matmul
/// picks kernels that need more workgroup memory than NVIDIA's Vulkan driver allows (73 728
/// of 49 152 bytes) and then panics, so we do not rely on it anywhere.
fn matmul_weight(w: &Param<Tensor<2>>) -> Tensor<2> {
    let w = w.val();
    match w.dtype() {
        DType::QFloat(scheme) if scheme.value == QuantValue::Q4F => w.dequantize().transpose(),
        _ => w.transpose(),
    }
}

/// Quantized row blocks of a weight, expanded to f32 and stacked back into one `[rows, cols]`
/// matrix for the call (no copy where there is one block).
fn expanded(blocks: &[Param<Tensor<2>>]) -> Tensor<2> {
    let mut blocks: Vec<Tensor<2>> = blocks.iter().map(|w| w.val().dequantize()).collect();
    if blocks.len() == 1 {
        blocks.pop().expect("one block")
    } else {
        Tensor::cat(blocks, 0)
    }
}

impl Linear {
    pub fn load(vb: &VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self, Error> {
        let mut blocks = vb.matrix_blocks("weight", &[d_out, d_in])?;
        let (weight, quantized) = if blocks.len() == 1 && !is_quantized(&blocks[0]) {
            (
                Some(Param::from_tensor(
                    blocks.pop().expect("one block").transpose(),
                )),
                Vec::new(),
            )
        } else {
            (None, blocks.into_iter().map(Param::from_tensor).collect())
        };
        let bias = if bias {
            Some(Param::from_tensor(vb.tensor("bias", [d_out])?))
        } else {
            None
        };
        Ok(Linear {
            weight,
            quantized,
            bias,
            d_in,
            d_out,
        })
    }

    /// `[..., in] -> [..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.forward_add(x, None)
    }

    /// `forward(x) + residual` (`[..., out]`), the add fused into the layer on a GPU.
    pub fn forward_add<const D: usize>(
        &self,
        x: Tensor<D>,
        residual: Option<Tensor<D>>,
    ) -> Tensor<D> {
        let bias = self.bias.as_ref().map(Param::val);
        if let Some(weight) = self.kernel_weight(&x) {
            return kernels::linear(x, weight, bias, residual);
        }
        let y = self.matmul(x);
        match (bias, residual) {
            (Some(b), Some(r)) => kernels::add_bias_and(y, b, D - 1, r),
            (Some(b), None) => y + b.unsqueeze(),
            (None, Some(r)) => y + r,
            (None, None) => y,
        }
    }

    /// `map + forward(x)`, the layer's `[b, out]` output broadcast over `map [b, out, h, w]`
    /// (a ResNet's time embedding), bias and broadcast add in one pass.
    pub fn forward_add_to_map(&self, x: Tensor<2>, map: Tensor<4>) -> Tensor<4> {
        let b = x.dims()[0];
        let y = match self.kernel_weight(&x) {
            Some(weight) => kernels::linear(x, weight, None, None),
            None => self.matmul(x),
        };
        let y = y.reshape([b, self.d_out, 1, 1]);
        match self.bias.as_ref().map(Param::val) {
            Some(bias) => kernels::add_bias_and(map, bias, 1, y),
            None => map + y,
        }
    }

    /// diffusers' GEGLU on this layer's output (`[..., in] -> [..., out / 2]`): the bias goes
    /// to the GEGLU kernel where burn's matmul, which has none, multiplies (one dispatch less).
    pub fn forward_geglu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(Param::val);
        match self.kernel_weight(&x) {
            Some(weight) => kernels::geglu(kernels::linear(x, weight, bias, None), None),
            None => kernels::geglu(self.matmul(x), bias),
        }
    }

    /// The `[out, in]` f32 weight for [`kernels::linear`] where our kernels take `x`: on a
    /// hardware GPU (quantized blocks expanded for the call, as for convs) and, for f32
    /// weights, on the CPU; `None` where burn's matmul does.
    fn kernel_weight<const D: usize>(&self, x: &Tensor<D>) -> Option<Tensor<2>> {
        if kernels::linear_on_gpu(x) {
            return Some(match &self.weight {
                Some(w) => w.val().transpose(),
                None => expanded(&self.quantized),
            });
        }
        match &self.weight {
            // Transposed back: `[out, in]`, the stored layout, which the kernel reads in place.
            Some(w) if kernels::linear_on_cpu(x) => Some(w.val().transpose()),
            _ => None,
        }
    }

    /// `x · weightᵀ` (`[..., in] -> [..., out]`, no bias) on burn's matmul.
    fn matmul<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if let Some(w) = &self.weight {
            return linear(x, w.val(), None);
        }
        if let [w] = self.quantized.as_slice() {
            return linear(x, matmul_weight(w), None);
        }
        // Row blocks of the weight give column blocks of the output.
        let parts = self
            .quantized
            .iter()
            .map(|w| linear(x.clone(), matmul_weight(w), None))
            .collect();
        Tensor::cat(parts, D - 1)
    }
}

/// `torch.nn.Conv2d` with square kernel, equal padding on all sides, no groups. A quantized
/// weight is kept as row blocks of `[out, in·k·k]`; burn's conv2d has no quantized path, so
/// it is expanded to f32 for the call and dropped after.
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Option<Param<Tensor<4>>>,
    pub quantized: Vec<Param<Tensor<2>>>,
    pub bias: Param<Tensor<1>>,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    pub fn load(
        vb: &VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self, Error> {
        let shape = [c_out, c_in, kernel, kernel];
        let mut blocks = vb.matrix_blocks("weight", &shape)?;
        let (weight, quantized) = if blocks.len() == 1 && !is_quantized(&blocks[0]) {
            (
                Some(Param::from_tensor(
                    blocks.pop().expect("one block").reshape(shape),
                )),
                Vec::new(),
            )
        } else {
            (None, blocks.into_iter().map(Param::from_tensor).collect())
        };
        Ok(Conv2d {
            weight,
            quantized,
            bias: Param::from_tensor(vb.tensor("bias", [c_out])?),
            c_in,
            c_out,
            kernel,
            stride,
            padding,
        })
    }

    /// The weight as f32 `[c_out, c_in, k, k]`.
    fn weight(&self) -> Tensor<4> {
        if let Some(w) = &self.weight {
            return w.val();
        }
        expanded(&self.quantized).reshape([self.c_out, self.c_in, self.kernel, self.kernel])
    }

    /// `[b, c_in, h, w] -> [b, c_out, h', w']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::conv2d(x, self.weight(), self.bias.val(), self.stride, self.padding)
    }

    /// `self.forward(x) + residual`, the add done as the conv writes on a GPU.
    pub fn forward_add(&self, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
        let (w, b) = (self.weight(), self.bias.val());
        kernels::conv2d_add(x, w, b, self.stride, self.padding, Some(residual))
    }
}

/// `torch.nn.GroupNorm` with affine parameters.
#[derive(Module, Debug)]
pub struct GroupNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub groups: usize,
    pub eps: f64,
}

impl GroupNorm {
    pub fn load(vb: &VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self, Error> {
        if groups == 0 || channels % groups != 0 {
            return Err(Error::BadConfig(format!(
                "norm_num_groups = {groups} does not divide {channels} channels"
            )));
        }
        Ok(GroupNorm {
            weight: Param::from_tensor(vb.tensor("weight", [channels])?),
            bias: Param::from_tensor(vb.tensor("bias", [channels])?),
            groups,
            eps,
        })
    }

    /// `[b, c, h, w] -> [b, c, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, false)
    }

    /// `silu(self.forward(x))`, in one dispatch on a GPU.
    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, true)
    }

    fn forward_then(&self, x: Tensor<4>, silu: bool) -> Tensor<4> {
        let (w, b) = (self.weight.val(), self.bias.val());
        kernels::group_norm(x, self.groups, self.eps, w, b, silu)
    }
}

/// `torch.nn.LayerNorm` over the last dimension.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self, Error> {
        Ok(LayerNorm {
            weight: Param::from_tensor(vb.tensor("weight", [dim])?),
            bias: Param::from_tensor(vb.tensor("bias", [dim])?),
            eps,
        })
    }

    /// `[..., dim] -> [..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        kernels::layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }
}

/// `torch.nn.Embedding`. The table is kept in row blocks of at most
/// [`EMBEDDING_PART_BYTES`]: CLIP's token table (49408 × 1024 for SD 2) is bigger than the
/// 128 MiB a WebGPU buffer binding is guaranteed.
#[derive(Module, Debug)]
pub struct Embedding {
    pub parts: Vec<Param<Tensor<2>>>,
}

/// The largest block of an embedding table on the device.
pub const EMBEDDING_PART_BYTES: usize = 64 << 20;

impl Embedding {
    pub fn load(vb: &VarBuilder, count: usize, dim: usize) -> Result<Self, Error> {
        Self::load_in_blocks(vb, count, dim, EMBEDDING_PART_BYTES)
    }

    /// [`Self::load`] with blocks of at most `block_bytes` (tests use small ones).
    pub fn load_in_blocks(
        vb: &VarBuilder,
        count: usize,
        dim: usize,
        block_bytes: usize,
    ) -> Result<Self, Error> {
        let blocks = vb.row_blocks("weight", [count, dim], block_bytes)?;
        Ok(Embedding {
            parts: blocks.into_iter().map(Param::from_tensor).collect(),
        })
    }

    /// `[b, n]` ids -> `[b, n, dim]` f32 (tables may be kept f16). With several blocks, each id is looked up in every
    /// block (clamped) and kept where it belongs: exact, and cheap for 77 tokens.
    pub fn forward(&self, ids: Tensor<2, burn::tensor::Int>) -> Tensor<3> {
        let [b, n] = ids.dims();
        let ids = ids.reshape([b * n]); // [b·n]
        let dim = self.parts[0].dims()[1];
        if self.parts.len() == 1 {
            return widen(self.parts[0].val().select(0, ids)).reshape([b, n, dim]);
        }
        let mut start = 0i64;
        let mut out: Option<Tensor<2>> = None;
        for part in &self.parts {
            let rows = part.dims()[0] as i64;
            let local = ids.clone().sub_scalar(start).clamp(0, rows - 1); // [b·n]
            let inside = ids.clone().greater_equal_elem(start).int()
                * ids.clone().lower_elem(start + rows).int();
            let picked = widen(part.val().select(0, local)) * inside.float().reshape([b * n, 1]); // [b·n, dim]
            out = Some(match out {
                Some(sum) => sum + picked,
                None => picked,
            });
            start += rows;
        }
        out.expect("an embedding has at least one block")
            .reshape([b, n, dim])
    }
}

/// f16 rows as f32; f32 rows untouched (no extra kernel).
fn widen(rows: Tensor<2>) -> Tensor<2> {
    if rows.dtype() == DType::F32 {
        rows
    } else {
        rows.cast(DType::F32)
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use burn::tensor::{Int, TensorData};

    #[test]
    fn embedding_in_blocks_equals_one_table() {
        let device = crate::device::cpu();
        let (count, dim) = (10, 4);
        let values: Vec<f32> = (0..count * dim).map(|i| i as f32 * 0.5 - 3.0).collect();
        let source: std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> =
            [("weight".to_string(), (vec![count, dim], values.clone()))].into();
        let vb = VarBuilder::new(std::sync::Arc::new(source), &device);
        let whole = Embedding::load_in_blocks(&vb, count, dim, 1 << 20).unwrap();
        let blocks = Embedding::load_in_blocks(&vb, count, dim, 3 * dim * 4).unwrap();
        assert_eq!((whole.parts.len(), blocks.parts.len()), (1, 4));
        let ids: Vec<i64> = vec![0, 9, 3, 2, 5, 6, 8, 1, 7, 4, 9, 0];
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [2, 6]), &device);
        let a = whole
            .forward(ids.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = blocks.forward(ids).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a, b);
        assert_eq!(a[4..8], values[36..40]);
    }
}
