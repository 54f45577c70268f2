//! A converted model's `manifest.json`: any bytes give a manifest that keeps the promises
//! of `Manifest::validate`, or an error, never a panic (see
//! `sd_webgpu::format::fuzzing::manifest`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sd_webgpu::format::fuzzing::manifest(data));
