//! A safetensors file, and a safetensors header behind a correct length: any bytes give a
//! header or an error, never a panic (see `sd_webgpu::format::fuzzing::safetensors_header`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sd_webgpu::format::fuzzing::safetensors_header(data));
