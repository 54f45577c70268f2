//! Converting a model to the chunked format of [`crate::format`]: a diffusers folder or a
//! single-file SD 1.x / 2.x checkpoint, to f32, f16, q8 or q4.
//!
//! No file system here: the same code runs in `sd-weights convert` and (in a Web Worker)
//! in the browser. The caller reads; the converter plans and encodes:
//!
//! 1. an [`Input`] from the small files and each safetensors file's header (the caller reads
//!    the first 8 bytes, [`header_len`], then the header for
//!    [`parse_header`](crate::safetensors::parse_header)): [`Input::diffusers`] +
//!    [`Input::add_diffusers_weights`] for a diffusers folder, [`ldm::single_file`] for a
//!    single file (with [`ldm::builtin_family`]'s [`Spec`], or a folder's configs);
//! 2. a [`Converter`]: the byte ranges to read ([`Converter::ranges`]), each pushed in turn
//!    ([`Converter::push`], which returns chunks as they fill up), then
//!    [`Converter::finish`] for the last chunk, the tokenizer files and the manifest.
//!
//! Files: `input.rs` (the input and its checks), `ldm.rs` (LDM names → diffusers'),
//! `spec.rs` (built-in architectures), `policy.rs` (which precision each tensor gets),
//! `encode.rs` (encoding on every core natively), `chunks.rs` (packing into chunks),
//! `converter.rs` (the push-based converter).

mod chunks;
mod converter;
pub mod encode;
pub mod input;
pub mod ldm;
pub mod policy;
pub mod spec;

pub use chunks::Chunk;
pub use converter::{Converted, Converter, Kept, Range};
pub use input::{Input, InputTensor, header_len};
pub use spec::Spec;

#[cfg(test)]
mod tests;
