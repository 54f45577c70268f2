//! Named weights for building modules: loading is construction. A [`VarBuilder`] hands out
//! tensors by their diffusers / transformers names, checks each shape, and moves them to the
//! device. `vb.pp("down_blocks.0")` descends one level, as in candle.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use crate::Error;
use crate::safetensors::SafeTensors;

/// Where weights come from: one or more safetensors files, or anything that can produce a
/// named f32 tensor.
pub trait WeightSource: Send + Sync {
    /// The tensor `name` as f32 values and its shape, or `None` when absent.
    fn get(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>, Error>;
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

#[derive(Clone)]
pub struct VarBuilder {
    source: Arc<dyn WeightSource>,
    prefix: String,
    device: Device,
}

impl VarBuilder {
    pub fn new(source: Arc<dyn WeightSource>, device: &Device) -> Self {
        VarBuilder { source, prefix: String::new(), device: device.clone() }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Descends into a sub-module: `pp("mid_block")`, `pp(0)`.
    pub fn pp(&self, name: impl ToString) -> Self {
        let name = name.to_string();
        let prefix = if self.prefix.is_empty() { name } else { format!("{}.{name}", self.prefix) };
        VarBuilder { prefix, ..self.clone() }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) }
    }

    /// Whether the tensor `name` exists, for optional parts (biases, legacy layouts).
    pub fn contains(&self, name: &str) -> Result<bool, Error> {
        Ok(self.source.get(&self.path(name))?.is_some())
    }

    /// The f32 values of `name`, which must have exactly `shape`.
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, Error> {
        let path = self.path(name);
        let (found, values) = self
            .source
            .get(&path)?
            .ok_or_else(|| Error::BadWeights(format!("tensor `{path}` is missing")))?;
        if found != shape {
            return Err(Error::BadWeights(format!(
                "tensor `{path}` has shape {found:?}, the config needs {shape:?}"
            )));
        }
        Ok(values)
    }

    /// The tensor `name` on the device.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>, Error> {
        let values = self.values(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), &self.device))
    }
}
