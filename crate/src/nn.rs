//! The layers Stable Diffusion is built from, constructed from named weights (PyTorch layout
//! in the files, converted here). Each mirrors its `torch.nn` namesake.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::module::{conv2d, linear};
use burn::tensor::ops::ConvOptions;

use crate::Error;
use crate::ops;
use crate::weights::VarBuilder;

/// `torch.nn.Linear`. The weight is kept as `[in, out]`, burn's layout.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    pub fn load(vb: &VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self, Error> {
        let weight = vb.tensor("weight", [d_out, d_in])?.transpose();
        let bias = if bias { Some(Param::from_tensor(vb.tensor("bias", [d_out])?)) } else { None };
        Ok(Linear { weight: Param::from_tensor(weight), bias })
    }

    /// `[..., in] -> [..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight.val(), self.bias.as_ref().map(Param::val))
    }
}

/// `torch.nn.Conv2d` with square kernel, equal padding on all sides, no groups.
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Param<Tensor<1>>,
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
        Ok(Conv2d {
            weight: Param::from_tensor(vb.tensor("weight", [c_out, c_in, kernel, kernel])?),
            bias: Param::from_tensor(vb.tensor("bias", [c_out])?),
            stride,
            padding,
        })
    }

    /// `[b, c_in, h, w] -> [b, c_out, h', w']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let (s, p) = (self.stride, self.padding);
        conv2d(x, self.weight.val(), Some(self.bias.val()), ConvOptions::new([s, s], [p, p], [1, 1], 1))
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
        ops::group_norm(x, self.groups, self.eps, self.weight.val(), self.bias.val())
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
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(D - 1);
        let normed = centered / var.add_scalar(self.eps).sqrt();
        normed * self.weight.val().unsqueeze() + self.bias.val().unsqueeze()
    }
}

/// `torch.nn.Embedding`.
#[derive(Module, Debug)]
pub struct Embedding {
    pub weight: Param<Tensor<2>>,
}

impl Embedding {
    pub fn load(vb: &VarBuilder, count: usize, dim: usize) -> Result<Self, Error> {
        Ok(Embedding { weight: Param::from_tensor(vb.tensor("weight", [count, dim])?) })
    }

    /// `[b, n]` ids -> `[b, n, dim]`
    pub fn forward(&self, ids: Tensor<2, burn::tensor::Int>) -> Tensor<3> {
        let [b, n] = ids.dims();
        let [_, dim] = self.weight.dims();
        self.weight.val().select(0, ids.reshape([b * n])).reshape([b, n, dim])
    }
}
