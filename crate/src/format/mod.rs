//! The converted model format: what `sd-weights convert` writes and the browser downloads.
//!
//! A converted model is a directory:
//!
//! ```text
//! manifest.json        this module's [`Manifest`]: configs, files, chunks and tensors
//! tokenizer/...        the tokenizer files, listed in `files` with their sha256
//! chunk-000.bin ...    tensor data, listed in `chunks` with their sha256
//! ```
//!
//! A chunk is the unit of download, caching and verification: tensors are packed into chunk
//! files in order, each tensor at a 16-byte aligned offset, never straddling two chunks (a
//! tensor bigger than the chunk size gets a chunk of its own). No stored tensor (or part) is
//! larger than [`MAX_TENSOR_BYTES`], the storage-buffer binding browsers can be relied on to
//! allow; a bigger one is split along its first dimension into [`Part`]s.
//!
//! Files: `manifest.rs` ([`Manifest`], its entries, limits and checks), `dtype.rs` (how
//! values are stored, [`Dtype`], and [`encode`] / [`decode`]), `quant.rs` (the q8 / q4 block
//! layouts), `source.rs` (a directory read on the CPU), `stream.rs` (the browser's
//! chunk-by-chunk loader). The types and functions callers use are re-exported here.
//!
//! `manifest.json` is written last, so a directory with one is complete (the converter also
//! writes into a temporary directory and renames it at the end).

mod dtype;
// The fuzz targets' bodies: for crate/fuzz (feature `fuzzing`) and this crate's tests only.
#[cfg(all(not(target_arch = "wasm32"), any(test, feature = "fuzzing")))]
#[doc(hidden)]
pub mod fuzzing;
mod manifest;
pub mod quant;
#[cfg(not(target_arch = "wasm32"))]
pub mod source;
pub mod stream;

pub use dtype::{Dtype, decode, decode_rows, encode};
pub use manifest::{
    ALIGN, COMPONENTS, DEFAULT_CHUNK_BYTES, FAMILIES, FORMAT_NAME, FORMAT_VERSION, FileEntry,
    MANIFEST, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, MAX_TENSOR_BYTES, Manifest, Part,
    REQUIRED_CONFIGS, TensorEntry, hex, read_tensor, sha256_hex,
};
