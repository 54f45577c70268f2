//! The crate's error type. Every message says what went wrong and what to do about it.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// No usable GPU adapter: WebGPU missing in the browser, or no Vulkan driver natively.
    NoGpu(String),
    /// The GPU failed while running or reading back work.
    Gpu(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoGpu(why) => write!(f, "no usable GPU: {why}"),
            Error::Gpu(why) => write!(f, "GPU error: {why}"),
        }
    }
}

impl std::error::Error for Error {}
