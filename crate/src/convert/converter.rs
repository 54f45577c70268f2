//! The push-based converter: the caller reads each planned byte range and pushes it; the
//! converter encodes the tensor and hands back every chunk as soon as it is full.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::chunks::{Chunk, Chunks};
use super::encode::encode_parallel as encode;
use super::input::{self, Input, InputTensor};
use super::policy;
use crate::Error;
use crate::format::{
    COMPONENTS, Dtype, FORMAT_NAME, FORMAT_VERSION, FileEntry, MAX_CHUNK_BYTES, MAX_TENSOR_BYTES,
    Manifest, Part, TensorEntry, sha256_hex,
};

/// A byte range of an input file: what [`Converter::push`] wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Index into the input's files ([`Converter::files`]).
    pub file: usize,
    /// Absolute offset in the file, in bytes.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Tensors stored at another precision than asked, for one reason: "N tensors at X instead
/// of Y: why" ([`fmt::Display`] gives the line `sd-weights convert` prints).
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub count: usize,
    /// Their values, summed.
    pub values: u64,
    /// Stored as this...
    pub dtype: Dtype,
    /// ...instead of this (the `--quant` asked for).
    pub want: Dtype,
    pub reason: &'static str,
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tensors ({:.2} M values) at {} instead of {}: {}",
            self.count,
            self.values as f64 / 1e6,
            self.dtype.name(),
            self.want.name(),
            self.reason
        )
    }
}

/// What [`Converter::finish`] gives: the rest of the converted model.
#[derive(Debug)]
pub struct Converted {
    /// The last chunk (none when the model has no tensors).
    pub chunks: Vec<Chunk>,
    /// The tokenizer files by path (`tokenizer/vocab.json`), listed in the manifest's `files`.
    pub files: Vec<(String, Vec<u8>)>,
    /// The manifest, validated; write it last, as [`Manifest::to_json`] text.
    pub manifest: Manifest,
    /// The tensors kept at another precision than asked, by reason and dtype.
    pub kept: Vec<Kept>,
}

/// Converts an [`Input`] tensor by tensor, in the manifest's order (text encoder, UNet, VAE;
/// by file offset within each):
///
/// 1. [`Converter::ranges`] (or [`Converter::next_range`]): the byte ranges to read, one per
///    output tensor, in the order they are pushed;
/// 2. [`Converter::push`] each range's bytes, whole or in pieces: each tensor is encoded and
///    packed when complete, and every chunk that filled up is returned at once (so memory
///    holds about one chunk and one tensor's values);
/// 3. [`Converter::finish`]: the last chunk, the tokenizer files and the manifest.
///
/// The chunks and manifest are the same bytes whoever drives it.
pub struct Converter {
    files: Vec<String>,
    order: Vec<InputTensor>,
    /// The tensor being pushed: its index in `order`, the bytes received so far, its values
    /// so far, and the bytes of a value cut by the end of a piece.
    next: usize,
    received: u64,
    values: Vec<f32>,
    carry: Vec<u8>,
    want: Dtype,
    chunk_size: u64,
    /// [`MAX_TENSOR_BYTES`]; smaller in tests.
    pub(super) max_tensor_bytes: u64,
    chunks: Chunks,
    entries: Vec<TensorEntry>,
    kept: BTreeMap<(&'static str, Dtype), (usize, u64)>,
    configs: BTreeMap<String, Value>,
    tokenizer: BTreeMap<String, Vec<u8>>,
    family: String,
}

impl Converter {
    /// A converter of `input` to precision `want` (f32, f16, q8 or q4; see
    /// [`policy::choose`] for what stays wider) in chunks of at most `chunk_size` bytes (1 to
    /// [`MAX_CHUNK_BYTES`]; a bigger tensor gets a chunk of its own). [`Error::BadInput`] for
    /// a chunk size out of range. The input's notes are the caller's to show first.
    pub fn new(input: Input, want: Dtype, chunk_size: u64) -> Result<Converter, Error> {
        if !(1..=MAX_CHUNK_BYTES).contains(&chunk_size) {
            return Err(Error::BadInput(format!(
                "chunk size {chunk_size} bytes: must be between 1 and {MAX_CHUNK_BYTES}"
            )));
        }
        let mut order = input.tensors;
        let rank = |c: &str| {
            COMPONENTS
                .iter()
                .position(|x| *x == c)
                .unwrap_or(COMPONENTS.len())
        };
        order.sort_by_key(|t| (rank(t.component), t.file, t.start));
        Ok(Converter {
            files: input.files,
            entries: Vec::with_capacity(order.len()),
            order,
            next: 0,
            received: 0,
            values: Vec::new(),
            carry: Vec::new(),
            want,
            chunk_size,
            max_tensor_bytes: MAX_TENSOR_BYTES,
            chunks: Chunks::new(chunk_size),
            kept: BTreeMap::new(),
            configs: input.configs,
            tokenizer: input.tokenizer,
            family: input.family,
        })
    }

    /// The input files' labels; [`Range::file`] indexes them.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Every range to push, in order (one per output tensor: the q/k/v thirds of OpenCLIP's
    /// fused projection are three).
    pub fn ranges(&self) -> Vec<Range> {
        self.order
            .iter()
            .map(|t| Range {
                file: t.file,
                start: t.start,
                len: t.len,
            })
            .collect()
    }

    /// The bytes [`Converter::push`] wants next: what is left of the current tensor's range;
    /// `None` once all are pushed.
    pub fn next_range(&self) -> Option<Range> {
        self.order.get(self.next).map(|t| Range {
            file: t.file,
            start: t.start + self.received,
            len: t.len - self.received,
        })
    }

    /// The bytes of all ranges together (for progress).
    pub fn total_bytes(&self) -> u64 {
        self.order.iter().map(|t| t.len).sum()
    }

    /// Takes the next bytes of the planned ranges: all of [`Converter::next_range`] or a
    /// first part of it (pieces of any size, so the caller never holds a whole tensor's
    /// stored bytes). When a tensor's last byte arrives it is encoded and packed; the chunks
    /// that filled up are returned, usually none or one.
    ///
    /// Errors: [`Error::BadInput`] for more bytes than the range has left or a push after the
    /// last; [`Error::BadWeights`] naming the file and tensor for NaN / infinite values;
    /// [`Error::BadInput`] when the tensor's values do not fit in memory.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Chunk>, Error> {
        let t = self.order.get(self.next).ok_or_else(|| {
            Error::BadInput("every tensor is converted already: call finish".into())
        })?;
        let file = &self.files[t.file];
        let left = t.len - self.received;
        if bytes.len() as u64 > left {
            return Err(Error::BadInput(format!(
                "{file}: tensor {}/{}: {} bytes pushed, its range has {left} left",
                t.component,
                t.name,
                bytes.len(),
            )));
        }
        // Bytes per value: readable floats are 1, 2, 4 or 8.
        let size = (t.dtype.bits() / 8).max(1);
        if self.received == 0 {
            // Fallible: in the browser a failed allocation would end the WebAssembly instance.
            let n = (t.len / size as u64) as usize;
            self.values = Vec::new();
            self.values.try_reserve_exact(n).map_err(|_| {
                Error::BadInput(format!(
                    "{file}: tensor {}/{}: not enough memory for its {n} values; close other programs or tabs and try again",
                    t.component, t.name
                ))
            })?;
        }
        self.received += bytes.len() as u64;
        // Values may straddle pieces: the bytes of a partial one wait in `carry`.
        let mut bytes = bytes;
        if !self.carry.is_empty() {
            let take = (size - self.carry.len()).min(bytes.len());
            self.carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.carry.len() == size {
                input::read_values(&self.carry, t, file, &mut self.values)?;
                self.carry.clear();
            }
        }
        let whole = bytes.len() / size * size;
        input::read_values(&bytes[..whole], t, file, &mut self.values)?;
        self.carry.extend_from_slice(&bytes[whole..]);
        if self.received < t.len {
            return Ok(Vec::new());
        }

        let values = std::mem::take(&mut self.values);
        (self.received, self.next) = (0, self.next + 1);
        if !self.carry.is_empty() {
            return Err(Error::BadWeights(format!(
                "{file}: tensor {}/{}: {} bytes are not a whole number of {}-byte values",
                t.component, t.name, t.len, size
            )));
        }
        input::check_finite(&values, t, file)?;
        let (mut dtype, mut reason) = policy::choose(t.component, &t.name, &t.shape, self.want);
        if let Some((wider, why)) = policy::widen_for_range(dtype, &values) {
            (dtype, reason) = (wider, Some(why));
        }
        if let Some(reason) = reason {
            let entry = self.kept.entry((reason, dtype)).or_default();
            entry.0 += 1;
            entry.1 += t.shape.iter().product::<usize>() as u64;
        }
        let mut done = Vec::new();
        let entry = store(
            &mut self.chunks,
            &mut done,
            t,
            dtype,
            values,
            self.max_tensor_bytes,
        )?;
        self.entries.push(entry);
        Ok(done)
    }

    /// After the last push: the last chunk, the tokenizer files and the validated manifest.
    /// [`Error::BadInput`] naming the next tensor when some were not pushed.
    pub fn finish(mut self) -> Result<Converted, Error> {
        if let Some(t) = self.order.get(self.next) {
            return Err(Error::BadInput(format!(
                "{} of {} tensors converted: tensor {}/{} was not pushed whole",
                self.next,
                self.order.len(),
                t.component,
                t.name
            )));
        }
        let chunks: Vec<Chunk> = self.chunks.finish_chunk().into_iter().collect();
        let kept = self
            .kept
            .iter()
            .map(|(&(reason, dtype), &(count, values))| Kept {
                count,
                values,
                dtype,
                want: self.want,
                reason,
            })
            .collect();
        let files: Vec<(String, Vec<u8>)> = self.tokenizer.into_iter().collect();
        let manifest = Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            family: self.family,
            quantization: self.want,
            chunk_size: self.chunk_size,
            configs: self.configs,
            files: files
                .iter()
                .map(|(path, bytes)| FileEntry {
                    path: path.clone(),
                    size: bytes.len() as u64,
                    sha256: sha256_hex(bytes),
                })
                .collect(),
            chunks: self.chunks.entries,
            tensors: self.entries,
        };
        manifest.validate()?;
        Ok(Converted {
            chunks,
            files,
            manifest,
            kept,
        })
    }
}

/// Encodes one tensor (split along its first dimension when bigger than `max` bytes, which is
/// [`MAX_TENSOR_BYTES`] but for tests) and packs it; filled chunks go to `done`.
fn store(
    chunks: &mut Chunks,
    done: &mut Vec<Chunk>,
    t: &InputTensor,
    dtype: Dtype,
    values: Vec<f32>,
    max: u64,
) -> Result<TensorEntry, Error> {
    let rows = t.shape.first().copied().unwrap_or(1).max(1);
    let inner = values.len() / rows;
    let mut entry = TensorEntry {
        component: t.component.to_string(),
        name: t.name.clone(),
        shape: t.shape.clone(),
        dtype,
        chunk: None,
        offset: None,
        length: None,
        parts: None,
    };
    if dtype.stored_len(values.len()) as u64 <= max {
        let bytes = encode(dtype, &values)?;
        // The values are not needed any more: free them before the chunk grows.
        drop(values);
        let length = bytes.len() as u64;
        let (chunk, offset) = chunks.add(bytes, done);
        (entry.chunk, entry.offset, entry.length) = (Some(chunk), Some(offset), Some(length));
        return Ok(entry);
    }
    let mut per_part = rows;
    while per_part > 1 && dtype.stored_len(per_part * inner) as u64 > max {
        per_part = per_part.div_ceil(2);
    }
    if dtype.stored_len(per_part * inner) as u64 > max {
        return Err(Error::BadWeights(format!(
            "tensor {}/{}: one row of {inner} values is over the {max}-byte limit",
            t.component, t.name
        )));
    }
    let mut parts = Vec::new();
    for start in (0..rows).step_by(per_part) {
        let n = per_part.min(rows - start);
        let bytes = encode(dtype, &values[start * inner..(start + n) * inner])?;
        let length = bytes.len() as u64;
        let (chunk, offset) = chunks.add(bytes, done);
        parts.push(Part {
            rows: n,
            chunk,
            offset,
            length,
        });
    }
    entry.parts = Some(parts);
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::decode;

    /// A tensor over the size limit is split along its first dimension; parts decode back.
    #[test]
    fn big_tensors_are_split() {
        let values: Vec<f32> = (0..10 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let t = InputTensor {
            component: "unet",
            name: "w".into(),
            shape: vec![10, 64],
            dtype: crate::safetensors::Dtype::F32,
            file: 0,
            start: 0,
            len: 0,
        };
        let mut chunks = Chunks::new(1 << 20);
        let mut done = Vec::new();
        // 3 rows of q8 = 192 values = 204 bytes fit in 250; 4 rows do not.
        let entry = store(&mut chunks, &mut done, &t, Dtype::Q8, values.clone(), 250).unwrap();
        assert!(done.is_empty());
        let data = chunks.finish_chunk().unwrap().bytes;
        let parts = entry.parts.clone().unwrap();
        assert_eq!(
            parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
        let mut back = Vec::new();
        for p in &parts {
            assert_eq!(p.offset % 16, 0);
            back.extend(
                decode(
                    Dtype::Q8,
                    &data[p.offset as usize..(p.offset + p.length) as usize],
                    p.rows * 64,
                )
                .unwrap(),
            );
        }
        assert!(crate::format::quant::relative_rms_error(&values, &back) < 0.01);
        let mut chunks = Chunks::new(1 << 20);
        assert!(
            store(&mut chunks, &mut done, &t, Dtype::F32, values, 100).is_err(),
            "a row over the limit"
        );
    }
}
