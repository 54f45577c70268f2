//! A strict reader for the safetensors format: an 8-byte little-endian header length, a JSON
//! header naming each tensor's dtype, shape and byte range, then the data.
//!
//! Files come from strangers, so every size and offset is checked before use: a crafted
//! header gives an error naming the problem, never a panic or a huge allocation.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Error;

/// Headers larger than this are refused (real SD checkpoints have < 1 MiB of header).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

/// What to do about a file whose header is broken.
const GET_A_GOOD_COPY: &str =
    "the file is truncated, corrupted or not a safetensors file: download or export it again";

/// Every element type the safetensors format defines (its `Dtype`, as of safetensors 0.6),
/// so that any valid file parses: a tensor the model does not use may be of any of them.
/// Weights are read as f32 from the float types torch converts exactly (or, F64, by
/// rounding): see [`Dtype::is_readable_float`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dtype {
    Bool,
    /// 4-bit float (MX FP4, E2M1).
    F4,
    /// 6-bit floats (MX FP6).
    F6E2M3,
    F6E3M2,
    U8,
    I8,
    /// 8-bit floats: torch's `float8_e5m2` and `float8_e4m3fn`.
    F8E5M2,
    F8E4M3,
    /// 8-bit power of two (MX scales).
    F8E8M0,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    /// Complex, two f32 parts.
    C64,
    F64,
    I64,
    U64,
}

/// The dtypes [`to_f32`] reads, for messages.
pub const READABLE_FLOATS: &str = "F32, F16, BF16, F64, F8_E4M3 or F8_E5M2";

impl Dtype {
    /// All of them, in the format's order.
    pub const ALL: [Dtype; 20] = [
        Dtype::Bool,
        Dtype::F4,
        Dtype::F6E2M3,
        Dtype::F6E3M2,
        Dtype::U8,
        Dtype::I8,
        Dtype::F8E5M2,
        Dtype::F8E4M3,
        Dtype::F8E8M0,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::C64,
        Dtype::F64,
        Dtype::I64,
        Dtype::U64,
    ];

    /// The name in a safetensors header (`"F8_E4M3"`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::F4 => "F4",
            Dtype::F6E2M3 => "F6_E2M3",
            Dtype::F6E3M2 => "F6_E3M2",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E8M0 => "F8_E8M0",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::C64 => "C64",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    fn parse(s: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Bits per element (4 and 6 for the packed MX floats).
    pub fn bits(self) -> usize {
        match self {
            Dtype::F4 => 4,
            Dtype::F6E2M3 | Dtype::F6E3M2 => 6,
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E8M0 => {
                8
            }
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 16,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 32,
            Dtype::C64 | Dtype::F64 | Dtype::I64 | Dtype::U64 => 64,
        }
    }

    /// Integers and booleans: buffers (position ids, step counters), never weights.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            Dtype::Bool
                | Dtype::U8
                | Dtype::I8
                | Dtype::I16
                | Dtype::U16
                | Dtype::I32
                | Dtype::U32
                | Dtype::I64
                | Dtype::U64
        )
    }

    /// Whether [`to_f32`] reads it ([`READABLE_FLOATS`]), as torch's `.float()` would.
    pub fn is_readable_float(self) -> bool {
        matches!(
            self,
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 | Dtype::F8E4M3 | Dtype::F8E5M2
        )
    }
}

/// The error for a tensor that must be read as weights but is stored as `dtype`, which
/// [`to_f32`] does not read. `what` names the file.
pub fn unreadable(what: &str, name: &str, dtype: Dtype) -> Error {
    Error::BadWeights(format!(
        "{what}: tensor `{name}` is stored as {}, which cannot be read as weights (readable: {READABLE_FLOATS}); \
         save the model with float weights (in PyTorch, `.half()` or `.float()` before saving)",
        dtype.name()
    ))
}

/// Where one tensor lives in the file's data section.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range relative to the start of the data section.
    pub start: usize,
    pub end: usize,
}

/// A parsed header: tensor names in sorted order, and where the data section starts.
#[derive(Debug, Clone)]
pub struct Header {
    pub tensors: BTreeMap<String, TensorInfo>,
    pub data_start: usize,
}

/// Parses the header of a safetensors file of `file_len` bytes, given at least its first
/// `8 + header length` bytes in `bytes`. `what` names the file in errors.
///
/// Every tensor is checked to lie inside the file, with as many bytes as its dtype and
/// shape need (checked arithmetic throughout); a name listed twice is an error.
pub fn parse_header(bytes: &[u8], file_len: u64, what: &str) -> Result<Header, Error> {
    let bad = |why: String| Error::BadWeights(format!("{what}: {why}; {GET_A_GOOD_COPY}"));
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("shorter than a safetensors header (8 bytes)".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    // `header_len` is at most MAX_HEADER_BYTES before the addition: no overflow.
    if header_len > MAX_HEADER_BYTES || header_len + 8 > file_len {
        return Err(bad(format!(
            "declares a {header_len}-byte header in a {file_len}-byte file"
        )));
    }
    let header_end = 8 + header_len as usize;
    let json = bytes
        .get(8..header_end)
        .ok_or_else(|| bad(format!("the {header_len}-byte header is cut short")))?;
    crate::json::check_unique_keys(json)
        .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let parsed: BTreeMap<String, Value> = serde_json::from_slice(json)
        .map_err(|e| bad(format!("header is not a JSON object of tensors: {e}")))?;
    let data_len = usize::try_from(file_len - header_end as u64).map_err(|_| {
        bad(format!(
            "{file_len} bytes is too large a file for this machine"
        ))
    })?;

    let mut tensors = BTreeMap::new();
    for (name, entry) in parsed {
        if name == "__metadata__" {
            continue;
        }
        let info =
            parse_entry(&entry, data_len).map_err(|why| bad(format!("tensor `{name}`: {why}")))?;
        tensors.insert(name, info);
    }
    Ok(Header {
        tensors,
        data_start: header_end,
    })
}

fn parse_entry(entry: &Value, data_len: usize) -> Result<TensorInfo, String> {
    let dtype_name = entry["dtype"].as_str().ok_or("no dtype")?;
    let dtype = Dtype::parse(dtype_name)
        .ok_or_else(|| format!("dtype {dtype_name:?} is not one the safetensors format defines"))?;
    let shape = entry["shape"]
        .as_array()
        .ok_or("no shape")?
        .iter()
        .map(|d| {
            d.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or("shape is not a list of sizes")
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let offsets = entry["data_offsets"].as_array().ok_or("no data_offsets")?;
    let offset = |i: usize| {
        offsets
            .get(i)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or("data_offsets is not [start, end]")
    };
    let (start, end) = (offset(0)?, offset(1)?);
    if offsets.len() != 2 || start > end || end > data_len {
        return Err(format!(
            "data_offsets [{start}, {end}] fall outside the {data_len}-byte data section"
        ));
    }
    let bits = shape
        .iter()
        .try_fold(dtype.bits(), |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    // As safetensors does: packed sub-byte types must fill whole bytes.
    if bits % 8 != 0 {
        return Err(format!(
            "shape {shape:?} of {dtype_name} is not a whole number of bytes"
        ));
    }
    let bytes = bits / 8;
    if bytes != end - start {
        return Err(format!(
            "shape {shape:?} of {dtype_name} needs {bytes} bytes, data_offsets give {}",
            end - start
        ));
    }
    Ok(TensorInfo {
        dtype,
        shape,
        start,
        end,
    })
}

/// Converts stored little-endian values to f32 as torch's `.float()` does: exactly, but for
/// F64, which rounds to nearest (values beyond f32's range become infinite). Dtypes that are
/// not [readable floats](Dtype::is_readable_float) give `None`.
pub fn to_f32(dtype: Dtype, raw: &[u8]) -> Option<Vec<f32>> {
    let mut out = Vec::new();
    extend_f32(dtype, raw, &mut out).then_some(out)
}

/// [`to_f32`] appending to `out` (no copy through a temporary vector); `false`, with `out`
/// unchanged, for a dtype that is not a readable float.
pub fn extend_f32(dtype: Dtype, raw: &[u8], out: &mut Vec<f32>) -> bool {
    match dtype {
        Dtype::F32 => out.extend(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        Dtype::F16 => out.extend(
            raw.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        Dtype::BF16 => out.extend(
            raw.chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        Dtype::F64 => out.extend(
            raw.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
        ),
        // E5M2 is the top byte of an f16 (same exponent, same infinities and NaNs).
        Dtype::F8E5M2 => out.extend(
            raw.iter()
                .map(|&b| half::f16::from_bits(u16::from(b) << 8).to_f32()),
        ),
        Dtype::F8E4M3 => out.extend(raw.iter().map(|&b| f8_e4m3fn(b))),
        _ => return false,
    }
    true
}

/// torch's `float8_e4m3fn`: exponent bias 7, no infinities, NaN only at S.1111.111.
fn f8_e4m3fn(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (exp, man) = (i32::from((b >> 3) & 15), f32::from(b & 7));
    match exp {
        15 if man == 7.0 => f32::NAN,
        0 => sign * man * 2f32.powi(-9),
        _ => sign * (8.0 + man) * 2f32.powi(exp - 10),
    }
}

/// A whole safetensors file in memory.
pub struct SafeTensors {
    header: Header,
    bytes: Vec<u8>,
    what: String,
}

impl SafeTensors {
    pub fn from_bytes(bytes: Vec<u8>, what: &str) -> Result<Self, Error> {
        let header = parse_header(&bytes, bytes.len() as u64, what)?;
        Ok(SafeTensors {
            header,
            bytes,
            what: what.to_string(),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.header.tensors.keys().map(String::as_str)
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensors.get(name)
    }

    /// The tensor's values as f32, and its shape. A missing tensor, or one of a dtype that
    /// is not a [readable float](Dtype::is_readable_float), is an error naming it.
    pub fn get_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), Error> {
        let info = self.info(name).ok_or_else(|| {
            Error::BadWeights(format!("{}: tensor `{name}` is missing", self.what))
        })?;
        let start = self.header.data_start + info.start;
        let raw = &self.bytes[start..self.header.data_start + info.end];
        let values =
            to_f32(info.dtype, raw).ok_or_else(|| unreadable(&self.what, name, info.dtype))?;
        Ok((info.shape.clone(), values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_f32_and_f16() {
        let mut data = 1.5f32.to_le_bytes().to_vec();
        data.extend_from_slice(&half::f16::from_f32(-2.0).to_le_bytes());
        let st = SafeTensors::from_bytes(
            file(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[1,1],"data_offsets":[4,6]},"__metadata__":{"format":"pt"}}"#,
                &data,
            ),
            "t",
        )
        .unwrap();
        assert_eq!(st.get_f32("a").unwrap(), (vec![1], vec![1.5]));
        assert_eq!(st.get_f32("b").unwrap(), (vec![1, 1], vec![-2.0]));
        assert!(
            st.get_f32("c")
                .unwrap_err()
                .to_string()
                .contains("`c` is missing")
        );
    }

    /// Every dtype of the format parses with its size (`[2, 4]` elements, so F4 and F6 fill
    /// whole bytes); the readable floats convert as torch's `.float()` does, the others are
    /// an error naming the tensor and its dtype, without calling the file broken.
    #[test]
    fn every_safetensors_dtype_parses() {
        let mut header = serde_json::Map::new();
        let mut offset = 0;
        for dtype in Dtype::ALL {
            let bytes = match dtype.name() {
                "F4" => 4,
                "F6_E2M3" | "F6_E3M2" => 6,
                "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
                "I16" | "U16" | "F16" | "BF16" => 16,
                "I32" | "U32" | "F32" => 32,
                "C64" | "F64" | "I64" | "U64" => 64,
                other => panic!("{other} has no size here"),
            };
            let entry = serde_json::json!({"dtype": dtype.name(), "shape": [2, 4], "data_offsets": [offset, offset + bytes]});
            header.insert(dtype.name().to_string(), entry);
            offset += bytes;
        }
        let st = SafeTensors::from_bytes(
            file(&serde_json::to_string(&header).unwrap(), &vec![0; offset]),
            "all.safetensors",
        )
        .unwrap();
        assert_eq!(st.names().count(), 20);
        for dtype in Dtype::ALL {
            assert_eq!(st.info(dtype.name()).unwrap().dtype, dtype);
            match st.get_f32(dtype.name()) {
                Ok((shape, values)) => {
                    assert!(dtype.is_readable_float(), "{dtype:?}");
                    assert_eq!((shape, values), (vec![2, 4], vec![0.0; 8]));
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(!dtype.is_readable_float(), "{dtype:?}: {e}");
                    assert!(
                        e.contains(&format!(
                            "tensor `{}` is stored as {}",
                            dtype.name(),
                            dtype.name()
                        )),
                        "{e}"
                    );
                    assert!(
                        e.contains("all.safetensors") && !e.contains("corrupted"),
                        "{e}"
                    );
                }
            }
        }
    }

    /// Values of each readable float dtype, as torch converts them to float32.
    #[test]
    fn readable_floats_convert_as_torch_does() {
        let f64s: Vec<u8> = [0.1f64, -3.0, 1e300]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let got = to_f32(Dtype::F64, &f64s).unwrap();
        assert_eq!(got[..2], [0.1f32, -3.0]);
        assert!(
            got[2].is_infinite(),
            "beyond f32: infinite, which convert then refuses"
        );
        let bf16: Vec<u8> = [1.0f32, -2.5e30]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(
            to_f32(Dtype::BF16, &bf16).unwrap(),
            [1.0, half::bf16::from_f32(-2.5e30).to_f32()]
        );
        // float8_e4m3fn: 0x38 = 1.0, 0x7e = 448 (its largest), 0x01 = 2^-9 (smallest subnormal),
        // 0xc4 = -3.0 (exponent 8, mantissa 4: 1.5 * 2), 0x80 = -0.0, 0x7f = NaN.
        let e4m3 = to_f32(Dtype::F8E4M3, &[0x38, 0x7e, 0x01, 0xc4, 0x80, 0x7f]).unwrap();
        assert_eq!(e4m3[..4], [1.0, 448.0, 2f32.powi(-9), -3.0]);
        assert!(e4m3[4] == 0.0 && e4m3[4].is_sign_negative() && e4m3[5].is_nan());
        // float8_e5m2: 0x3c = 1.0, 0x7b = 57344 (its largest), 0x01 = 2^-16, 0x7c = infinity.
        let e5m2 = to_f32(Dtype::F8E5M2, &[0x3c, 0x7b, 0x01, 0xc0, 0x7c]).unwrap();
        assert_eq!(e5m2, [1.0, 57344.0, 2f32.powi(-16), -2.0, f32::INFINITY]);
        // Every e4m3 code but the two NaNs is finite and within ±448.
        let all: Vec<u8> = (0..=255).collect();
        let finite = to_f32(Dtype::F8E4M3, &all)
            .unwrap()
            .into_iter()
            .filter(|v| v.is_finite() && v.abs() <= 448.0)
            .count();
        assert_eq!(finite, 254);
        assert!(to_f32(Dtype::I32, &[0; 4]).is_none() && to_f32(Dtype::C64, &[0; 8]).is_none());
    }

    #[test]
    fn lying_headers_are_errors() {
        let max = u64::MAX;
        let cases = [
            (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_string(), "outside"),
            (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#.into(), "needs 8 bytes"),
            (r#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#.into(), "overflows"),
            (format!(r#"{{"a":{{"dtype":"F32","shape":[{max},{max},0],"data_offsets":[0,0]}}}}"#), "overflows"),
            (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#.into(), "outside"),
            (format!(r#"{{"a":{{"dtype":"F32","shape":[1],"data_offsets":[{max},{max}]}}}}"#), "outside"),
            (format!(r#"{{"a":{{"dtype":"F32","shape":[1],"data_offsets":[0,{max}]}}}}"#), "outside"),
            (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}}"#.into(), "not [start, end]"),
            (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#.into(), "outside"),
            (r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#.into(), "not a list of sizes"),
            (r#"{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}"#.into(), "dtype \"Q9\" is not one"),
            (r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#.into(), "not a whole number of bytes"),
            (r#"{"a":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[0,4]}}"#.into(), "needs 3 bytes"),
            (r#"{"a":[]}"#.into(), "no dtype"),
            (r#"[1,2]"#.into(), "not a JSON object"),
            // serde_json alone keeps the second `a` and loses the first.
            (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#.into(), "\"a\" appears twice"),
            ("{\"a\":".into(), "not valid JSON"),
        ];
        for (header, want) in cases {
            let err = SafeTensors::from_bytes(file(&header, &[0; 4]), "t.safetensors")
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(want), "{header}: {err}");
            assert!(
                err.contains("a.safetensors") || err.contains("t.safetensors"),
                "names the file: {err}"
            );
            let names_a = err.contains("tensor `a`") || err.contains("key \"a\"");
            assert!(
                names_a || !header.contains("shape"),
                "names the tensor: {err}"
            );
            assert!(
                err.contains("download or export it again"),
                "says what to do: {err}"
            );
        }
        // Header lengths beyond the file, or huge.
        for len in [u64::MAX, u64::MAX - 7, MAX_HEADER_BYTES + 1, 3] {
            let mut bytes = len.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            let err = SafeTensors::from_bytes(bytes, "t")
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains(&format!("declares a {len}-byte header in a 10-byte file")),
                "{err}"
            );
        }
        // Fewer bytes at hand than the header needs (the file itself is long enough).
        assert!(
            parse_header(&file("{}", &[])[..9], 100, "t")
                .unwrap_err()
                .to_string()
                .contains("cut short")
        );
        assert!(
            SafeTensors::from_bytes(vec![1, 2, 3], "t")
                .err()
                .unwrap()
                .to_string()
                .contains("shorter")
        );
    }
}
