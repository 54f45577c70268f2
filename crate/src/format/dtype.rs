//! How a tensor's values are stored ([`Dtype`]): f32, f16, or the block-quantized q8 and q4
//! (their layouts in [`super::quant`]), and the conversions between stored bytes and f32.

use serde::{Deserialize, Serialize};

use super::quant;
use crate::Error;

/// How a tensor's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// Little-endian IEEE f32.
    F32,
    /// Little-endian IEEE f16.
    F16,
    /// int8 in blocks of 32 with an f16 scale each (see [`quant`]).
    Q8,
    /// 4-bit in blocks of 32 with an f16 scale each, q4_0-like (see [`quant`]).
    Q4,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Q8 => "q8",
            Dtype::Q4 => "q4",
        }
    }

    pub fn parse(s: &str) -> Result<Dtype, Error> {
        Ok(match s {
            "f32" => Dtype::F32,
            "f16" => Dtype::F16,
            "q8" => Dtype::Q8,
            "q4" => Dtype::Q4,
            _ => {
                return Err(Error::BadInput(format!(
                    "unknown precision {s:?}: use f32, f16, q8 or q4"
                )));
            }
        })
    }

    /// Bits per stored value, scales aside: 32, 16, 8 or 4.
    pub fn bits(self) -> u32 {
        match self {
            Dtype::F32 => 32,
            Dtype::F16 => 16,
            Dtype::Q8 => 8,
            Dtype::Q4 => 4,
        }
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, Dtype::Q8 | Dtype::Q4)
    }

    /// The largest magnitude stored finitely: f16's 65504; for q8 and q4, whose blocks keep
    /// an f16 scale of absmax / 127 and absmax / 8, 127 and 8 times that ([`quant::Q8_MAX`],
    /// [`quant::Q4_MAX`]). [`encode`] refuses larger values.
    pub fn max_abs(self) -> f32 {
        match self {
            Dtype::F32 => f32::MAX,
            Dtype::F16 => quant::F16_MAX,
            Dtype::Q8 => quant::Q8_MAX,
            Dtype::Q4 => quant::Q4_MAX,
        }
    }

    /// Stored bytes of `n` values (for q8/q4, `n` must be a multiple of 32).
    pub fn stored_len(self, n: usize) -> usize {
        match self {
            Dtype::F32 => n * 4,
            Dtype::F16 => n * 2,
            Dtype::Q8 => quant::q8_len(n),
            Dtype::Q4 => quant::q4_len(n),
        }
    }
}

/// Decodes one stored part (`n` values) to f32.
pub fn decode(dtype: Dtype, bytes: &[u8], n: usize) -> Result<Vec<f32>, Error> {
    match dtype {
        Dtype::F32 | Dtype::F16 if bytes.len() != dtype.stored_len(n) => {
            Err(Error::BadWeights(format!(
                "{} data of {n} values must be {} bytes, found {}",
                dtype.name(),
                dtype.stored_len(n),
                bytes.len()
            )))
        }
        Dtype::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        Dtype::F16 => Ok(bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        Dtype::Q8 => quant::q8_decode(bytes, n),
        Dtype::Q4 => quant::q4_decode(bytes, n),
    }
}

/// Decodes rows `rows` of one stored part of `total_rows` rows of `inner` values, so a big
/// part can be expanded a block at a time.
pub fn decode_rows(
    dtype: Dtype,
    bytes: &[u8],
    total_rows: usize,
    inner: usize,
    rows: std::ops::Range<usize>,
) -> Result<Vec<f32>, Error> {
    match dtype {
        Dtype::Q8 | Dtype::Q4 => quant::decode_rows(dtype, bytes, total_rows, inner, rows),
        Dtype::F32 | Dtype::F16 => {
            let size = dtype.stored_len(1);
            let n = total_rows * inner;
            if bytes.len() != dtype.stored_len(n) || rows.end > total_rows || rows.start > rows.end
            {
                return Err(Error::BadWeights(format!(
                    "{} data of {total_rows}×{inner} values must be {} bytes, found {} (rows {rows:?})",
                    dtype.name(),
                    dtype.stored_len(n),
                    bytes.len()
                )));
            }
            let slice = &bytes[rows.start * inner * size..rows.end * inner * size];
            decode(dtype, slice, rows.len() * inner)
        }
    }
}

/// Encodes `values` at `dtype` (for q8/q4 a multiple of 32 values). A value of magnitude
/// over [`Dtype::max_abs`], or NaN, is an error: it would be stored as infinity or NaN.
pub fn encode(dtype: Dtype, values: &[f32]) -> Result<Vec<u8>, Error> {
    match dtype {
        Dtype::F32 | Dtype::F16 => quant::check_range(values, dtype.max_abs(), dtype.name())?,
        // The quantizers check their own range.
        Dtype::Q8 | Dtype::Q4 => {}
    }
    match dtype {
        Dtype::F32 => Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        Dtype::F16 => Ok(values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect()),
        Dtype::Q8 => quant::q8_encode(values),
        Dtype::Q4 => quant::q4_encode(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let v: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
        for dtype in [Dtype::F32, Dtype::F16, Dtype::Q8, Dtype::Q4] {
            let bytes = encode(dtype, &v).unwrap();
            assert_eq!(bytes.len(), dtype.stored_len(64));
            let back = decode(dtype, &bytes, 64).unwrap();
            let tol = match dtype {
                Dtype::F32 => 0.0,
                Dtype::F16 => 1e-3,
                Dtype::Q8 => 1e-2,
                Dtype::Q4 => 0.1,
            };
            assert!(quant::relative_rms_error(&v, &back) <= tol, "{dtype:?}");
        }
        assert!(decode(Dtype::F16, &[0; 3], 2).is_err());
        // Values beyond a dtype's range are refused, not stored as infinity.
        let mut big = v.clone();
        big[3] = 1e5;
        assert!(
            encode(Dtype::F16, &big)
                .unwrap_err()
                .to_string()
                .contains("f16 cannot store the value 100000")
        );
        assert_eq!(
            decode(Dtype::F32, &encode(Dtype::F32, &big).unwrap(), 64).unwrap(),
            big
        );
        big[3] = f32::INFINITY;
        assert!(encode(Dtype::F32, &big).is_err());
        for dtype in [Dtype::F16, Dtype::Q8, Dtype::Q4] {
            let mut edge = v.clone();
            edge[5] = -dtype.max_abs();
            let back = decode(dtype, &encode(dtype, &edge).unwrap(), 64).unwrap();
            assert!(back.iter().all(|x| x.is_finite()), "{dtype:?}");
            edge[5] = dtype.max_abs() * 1.001;
            assert!(encode(dtype, &edge).is_err(), "{dtype:?}");
        }
    }
}
