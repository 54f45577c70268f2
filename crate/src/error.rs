//! The crate's error type. Every message says what went wrong and what to do about it.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// No usable GPU adapter: WebGPU missing in the browser, or no Vulkan driver natively.
    NoGpu(String),
    /// The GPU failed while running or reading back work.
    Gpu(String),
    /// The GPU device was lost (driver reset, GPU reclaimed): what was on it is gone.
    DeviceLost(String),
    /// The GPU could not allocate memory for the model or the work.
    OutOfMemory(String),
    /// A weights file is unreadable, truncated, or lies about its contents.
    BadWeights(String),
    /// A model config asks for something we do not implement (names the field), or is malformed.
    BadConfig(String),
    /// A parameter or input from the user is invalid (names it and the allowed values).
    BadInput(String),
    /// A file could not be read or written.
    Io(String),
    /// The tokenizer files are missing, malformed or do not fit together.
    Tokenizer(String),
    /// Generation was stopped by the caller (its progress callback returned false).
    Cancelled,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoGpu(why) => write!(f, "no usable GPU: {why}"),
            Error::Gpu(why) => write!(f, "GPU error: {why}"),
            Error::DeviceLost(why) => write!(
                f,
                "the GPU device was lost ({why}); {}",
                "load the model again: a new device is made on the next call"
            ),
            Error::OutOfMemory(why) => write!(
                f,
                "the GPU ran out of memory ({why}); make a smaller image, use a q4 model, or close other programs or tabs \
                 that use the GPU, then try again: a new device is made on the next call"
            ),
            Error::Tokenizer(why) => write!(
                f,
                "tokenizer error: {why} (use the checkpoint's tokenizer/ folder: vocab.json + merges.txt, or tokenizer.json)"
            ),
            Error::BadWeights(why) => write!(f, "bad weights: {why}"),
            Error::BadConfig(why) => write!(f, "unsupported model config: {why}"),
            Error::BadInput(why) => write!(f, "invalid input: {why}"),
            Error::Io(why) => write!(f, "{why}"),
            Error::Cancelled => write!(f, "cancelled"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The same error with `advice` added to its reason.
    pub fn with_advice(self, advice: &str) -> Error {
        let add = |why: String| format!("{why}; {advice}");
        match self {
            Error::NoGpu(w) => Error::NoGpu(add(w)),
            Error::Gpu(w) => Error::Gpu(add(w)),
            Error::DeviceLost(w) => Error::DeviceLost(add(w)),
            Error::OutOfMemory(w) => Error::OutOfMemory(add(w)),
            Error::BadWeights(w) => Error::BadWeights(add(w)),
            Error::BadConfig(w) => Error::BadConfig(add(w)),
            Error::BadInput(w) => Error::BadInput(add(w)),
            Error::Io(w) => Error::Io(add(w)),
            Error::Tokenizer(w) => Error::Tokenizer(add(w)),
            Error::Cancelled => Error::Cancelled,
        }
    }
}
