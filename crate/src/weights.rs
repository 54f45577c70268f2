//! Named weights for building modules: loading is construction. A [`VarBuilder`] hands out
//! tensors by their diffusers / transformers names, checks each shape, and moves them to the
//! device. `vb.pp("down_blocks.0")` descends one level, as in candle.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::Error;
use crate::safetensors::SafeTensors;

/// Where weights come from: one or more safetensors files, or anything that can produce a
/// named f32 tensor.
pub trait WeightSource: Send + Sync {
    /// The tensor `name` as f32 values and its shape, or `None` when absent.
    fn get(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>, Error>;

    /// Whether `name` exists. The default asks [`Self::get`].
    fn contains(&self, name: &str) -> Result<bool, Error> {
        Ok(self.get(name)?.is_some())
    }

    /// For sources whose weights are already on the device (the browser's streaming
    /// loader): the tensor `name` as blocks of whole rows, in order, each
    /// `[rows, product of the other dimensions]`, and its shape. Blocks may be quantized
    /// (burn `QFloat`); each dequantizes to at most one buffer's worth of f32. `None`, the
    /// default, means "ask [`Self::get`] and upload".
    fn device_blocks(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<Tensor<2>>)>, Error> {
        let _ = name;
        Ok(None)
    }
}

impl WeightSource for SafeTensors {
    fn get(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>, Error> {
        match self.info(name) {
            Some(_) => self.get_f32(name).map(Some),
            None => Ok(None),
        }
    }
}

/// Weights held in memory, for tests and for sources assembled from parts.
impl WeightSource for BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    fn get(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>, Error> {
        Ok(BTreeMap::get(self, name).cloned())
    }
}

/// What to do when the weights do not fit the config.
const MISMATCH: &str =
    "the weights do not belong to this config: use the model's own configs, or convert it again";

/// A device block as f32: quantized blocks expanded, f16 ones widened, f32 ones untouched.
fn f32_block(block: Tensor<2>) -> Tensor<2> {
    match block.dtype() {
        DType::F32 => block,
        DType::QFloat(_) => block.dequantize(),
        _ => block.cast(DType::F32),
    }
}

#[derive(Clone)]
pub struct VarBuilder {
    source: Arc<dyn WeightSource>,
    prefix: String,
    device: Device,
}

impl VarBuilder {
    pub fn new(source: Arc<dyn WeightSource>, device: &Device) -> Self {
        VarBuilder {
            source,
            prefix: String::new(),
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Descends into a sub-module: `pp("mid_block")`, `pp(0)`.
    pub fn pp(&self, name: impl ToString) -> Self {
        let name = name.to_string();
        let prefix = if self.prefix.is_empty() {
            name
        } else {
            format!("{}.{name}", self.prefix)
        };
        VarBuilder {
            prefix,
            ..self.clone()
        }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Whether the tensor `name` exists, for optional parts (biases, legacy layouts).
    pub fn contains(&self, name: &str) -> Result<bool, Error> {
        self.source.contains(&self.path(name))
    }

    /// The f32 values of `name`, which must have exactly `shape`.
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, Error> {
        let path = self.path(name);
        let (found, values) = self
            .source
            .get(&path)?
            .ok_or_else(|| Error::BadWeights(format!("tensor `{path}` is missing; {MISMATCH}")))?;
        if found != shape {
            return Err(Error::BadWeights(format!(
                "tensor `{path}` has shape {found:?}, the config needs {shape:?}; {MISMATCH}"
            )));
        }
        Ok(values)
    }

    /// The tensor `name` on the device, as f32.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Tensor<D>, Error> {
        if let Some(blocks) = self.device_blocks(name, &shape)? {
            let mut blocks: Vec<Tensor<2>> = blocks.into_iter().map(f32_block).collect();
            let flat = if blocks.len() == 1 {
                blocks.pop().expect("one block")
            } else {
                Tensor::cat(blocks, 0)
            };
            return Ok(flat.reshape(shape));
        }
        let values = self.values(name, &shape)?;
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }

    /// The weight `name` of a linear or conv layer as row blocks `[rows, product of the
    /// other dimensions]`, left quantized where the source keeps it so on the device.
    pub fn matrix_blocks(&self, name: &str, shape: &[usize]) -> Result<Vec<Tensor<2>>, Error> {
        if let Some(blocks) = self.device_blocks(name, shape)? {
            // f32 blocks are joined: one matmul, as if uploaded whole. Quantized blocks stay
            // apart (burn cannot join them; each is used in its own matmul).
            let quantized = blocks.iter().any(|b| matches!(b.dtype(), DType::QFloat(_)));
            if quantized {
                return Ok(blocks);
            }
            let mut blocks: Vec<Tensor<2>> = blocks.into_iter().map(f32_block).collect();
            return Ok(if blocks.len() == 1 {
                vec![blocks.pop().expect("one block")]
            } else {
                vec![Tensor::cat(blocks, 0)]
            });
        }
        let rows = shape.first().copied().unwrap_or(1);
        let inner = shape.iter().skip(1).product::<usize>();
        let values = self.values(name, shape)?;
        Ok(vec![Tensor::from_data(
            TensorData::new(values, [rows, inner]),
            &self.device,
        )])
    }

    /// The `[rows, cols]` tensor `name` as blocks of whole rows of at most `max_bytes` (as
    /// f32) each, for tables bigger than one GPU buffer may be. Blocks kept f16 on the device
    /// stay f16 (the reader widens what it reads).
    pub fn row_blocks(
        &self,
        name: &str,
        shape: [usize; 2],
        max_bytes: usize,
    ) -> Result<Vec<Tensor<2>>, Error> {
        if let Some(blocks) = self.device_blocks(name, &shape)? {
            let expand = |b: Tensor<2>| {
                if matches!(b.dtype(), DType::QFloat(_)) {
                    b.dequantize()
                } else {
                    b
                }
            };
            return Ok(blocks.into_iter().map(expand).collect());
        }
        let cols = shape[1].max(1);
        let values = self.values(name, &shape)?;
        let rows_per_block = (max_bytes / (4 * cols)).max(1);
        Ok(values
            .chunks(rows_per_block * cols)
            .map(|rows| {
                Tensor::from_data(
                    TensorData::new(rows.to_vec(), [rows.len() / cols, cols]),
                    &self.device,
                )
            })
            .collect())
    }

    /// Device blocks of `name`, shape-checked, when the source has them.
    fn device_blocks(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<Tensor<2>>>, Error> {
        let path = self.path(name);
        match self.source.device_blocks(&path)? {
            None => Ok(None),
            Some((found, _)) if found != shape => Err(Error::BadWeights(format!(
                "tensor `{path}` has shape {found:?}, the config needs {shape:?}; {MISMATCH}"
            ))),
            Some((_, blocks)) => Ok(Some(blocks)),
        }
    }
}
