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
const GET_A_GOOD_COPY: &str = "the file is truncated, corrupted or not a safetensors file: download or export it again";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    /// Integer buffers such as CLIP's `position_ids`: listed, never loaded as weights.
    I64,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I64" => Dtype::I64,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I64 => 8,
        }
    }
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
        return Err(bad(format!("declares a {header_len}-byte header in a {file_len}-byte file")));
    }
    let header_end = 8 + header_len as usize;
    let json = bytes
        .get(8..header_end)
        .ok_or_else(|| bad(format!("the {header_len}-byte header is cut short")))?;
    crate::json::check_unique_keys(json).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let parsed: BTreeMap<String, Value> = serde_json::from_slice(json)
        .map_err(|e| bad(format!("header is not a JSON object of tensors: {e}")))?;
    let data_len = usize::try_from(file_len - header_end as u64)
        .map_err(|_| bad(format!("{file_len} bytes is too large a file for this machine")))?;

    let mut tensors = BTreeMap::new();
    for (name, entry) in parsed {
        if name == "__metadata__" {
            continue;
        }
        let info = parse_entry(&entry, data_len).map_err(|why| bad(format!("tensor `{name}`: {why}")))?;
        tensors.insert(name, info);
    }
    Ok(Header { tensors, data_start: header_end })
}

fn parse_entry(entry: &Value, data_len: usize) -> Result<TensorInfo, String> {
    let dtype_name = entry["dtype"].as_str().ok_or("no dtype")?;
    let dtype = Dtype::parse(dtype_name).ok_or_else(|| format!("unsupported dtype {dtype_name} (F32, F16, BF16 and I64 are read)"))?;
    let shape = entry["shape"]
        .as_array()
        .ok_or("no shape")?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()).ok_or("shape is not a list of sizes"))
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
        return Err(format!("data_offsets [{start}, {end}] fall outside the {data_len}-byte data section"));
    }
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if bytes != end - start {
        return Err(format!("shape {shape:?} of {dtype_name} needs {bytes} bytes, data_offsets give {}", end - start));
    }
    Ok(TensorInfo { dtype, shape, start, end })
}

/// Converts stored little-endian values to f32.
pub fn to_f32(dtype: Dtype, raw: &[u8]) -> Result<Vec<f32>, Error> {
    Ok(match dtype {
        Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::I64 => return Err(Error::BadWeights("an integer tensor cannot be loaded as weights".into())),
    })
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
        Ok(SafeTensors { header, bytes, what: what.to_string() })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.header.tensors.keys().map(String::as_str)
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensors.get(name)
    }

    /// The tensor's values as f32, and its shape.
    pub fn get_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), Error> {
        let info = self
            .info(name)
            .ok_or_else(|| Error::BadWeights(format!("{}: tensor `{name}` is missing", self.what)))?;
        let start = self.header.data_start + info.start;
        let raw = &self.bytes[start..self.header.data_start + info.end];
        Ok((info.shape.clone(), to_f32(info.dtype, raw)?))
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
        assert!(st.get_f32("c").unwrap_err().to_string().contains("`c` is missing"));
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
            (r#"{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}"#.into(), "unsupported dtype"),
            (r#"{"a":[]}"#.into(), "no dtype"),
            (r#"[1,2]"#.into(), "not a JSON object"),
            // serde_json alone keeps the second `a` and loses the first.
            (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#.into(), "\"a\" appears twice"),
            ("{\"a\":".into(), "not valid JSON"),
        ];
        for (header, want) in cases {
            let err = SafeTensors::from_bytes(file(&header, &[0; 4]), "t.safetensors").err().unwrap().to_string();
            assert!(err.contains(want), "{header}: {err}");
            assert!(err.contains("a.safetensors") || err.contains("t.safetensors"), "names the file: {err}");
            let names_a = err.contains("tensor `a`") || err.contains("key \"a\"");
            assert!(names_a || !header.contains("shape"), "names the tensor: {err}");
            assert!(err.contains("download or export it again"), "says what to do: {err}");
        }
        // Header lengths beyond the file, or huge.
        for len in [u64::MAX, u64::MAX - 7, MAX_HEADER_BYTES + 1, 3] {
            let mut bytes = len.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            let err = SafeTensors::from_bytes(bytes, "t").err().unwrap().to_string();
            assert!(err.contains(&format!("declares a {len}-byte header in a 10-byte file")), "{err}");
        }
        // Fewer bytes at hand than the header needs (the file itself is long enough).
        assert!(parse_header(&file("{}", &[])[..9], 100, "t").unwrap_err().to_string().contains("cut short"));
        assert!(SafeTensors::from_bytes(vec![1, 2, 3], "t").err().unwrap().to_string().contains("shorter"));
    }
}
