//! Encoding on every core: quantizing (q4's scale search especially) is the slow part of a
//! convert, and blocks are independent. WebAssembly has no threads: there [`encode_parallel`]
//! is the plain [`encode`]. The bytes are the same either way.

use crate::Error;
#[cfg(not(target_arch = "wasm32"))]
use crate::format::quant::BLOCK;
use crate::format::{Dtype, encode};

/// [`encode`] on one thread (WebAssembly).
#[cfg(target_arch = "wasm32")]
pub fn encode_parallel(dtype: Dtype, values: &[f32]) -> Result<Vec<u8>, Error> {
    encode(dtype, values)
}

/// [`encode`], split across threads for big quantized tensors; the bytes are identical.
#[cfg(not(target_arch = "wasm32"))]
pub fn encode_parallel(dtype: Dtype, values: &[f32]) -> Result<Vec<u8>, Error> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if !dtype.is_quantized()
        || threads == 1
        || values.len() < 1 << 16
        || !values.len().is_multiple_of(BLOCK)
    {
        return encode(dtype, values);
    }
    // Pieces of a multiple of 64 values: an even number of f16 scales, so no padding inside.
    let per = (values.len() / threads).div_ceil(2 * BLOCK) * 2 * BLOCK;
    let pieces: Vec<Result<Vec<u8>, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = values
            .chunks(per)
            .map(|c| s.spawn(move || encode(dtype, c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an encoder thread panicked"))
            .collect()
    });
    // Each piece is [codes][scales][padding]; the whole is [all codes][all scales][padding].
    let code_len = |n: usize| if dtype == Dtype::Q4 { n / 2 } else { n };
    let mut codes = Vec::with_capacity(dtype.stored_len(values.len()));
    let mut scales = Vec::with_capacity(values.len() / BLOCK * 2);
    for (piece, chunk) in pieces.into_iter().zip(values.chunks(per)) {
        let piece = piece?;
        let (n, c) = (chunk.len(), code_len(chunk.len()));
        codes.extend_from_slice(&piece[..c]);
        scales.extend_from_slice(&piece[c..c + n / BLOCK * 2]);
    }
    codes.extend_from_slice(&scales);
    while !codes.len().is_multiple_of(4) {
        codes.push(0);
    }
    Ok(codes)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_as_one_thread() {
        for n in [1 << 16, (1 << 17) + 96, 3 * 32 * 1001] {
            let values: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618).sin() * 0.03).collect();
            for dtype in [Dtype::Q4, Dtype::Q8, Dtype::F16] {
                assert!(
                    encode_parallel(dtype, &values).unwrap() == encode(dtype, &values).unwrap(),
                    "{dtype:?} {n}"
                );
            }
        }
    }
}
