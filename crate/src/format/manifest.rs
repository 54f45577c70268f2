//! `manifest.json`: what a converted model holds and where each tensor lies ([`Manifest`],
//! its entries and limits), the checks a manifest from a stranger must pass before anything
//! relies on it ([`Manifest::from_json`], [`Manifest::validate`]), and reading one tensor's
//! parts ([`read_tensor`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::dtype::{Dtype, decode};
use crate::Error;

/// The manifest's file name inside a converted model directory.
pub const MANIFEST: &str = "manifest.json";
/// [`Manifest::format`]'s value.
pub const FORMAT_NAME: &str = "sd-webgpu-weights";
/// [`Manifest::version`]'s value; readers refuse other versions.
pub const FORMAT_VERSION: u32 = 1;
/// Alignment of every tensor inside its chunk, in bytes.
pub const ALIGN: u64 = 16;
/// The largest stored tensor or part: 128 MiB, the WebGPU `maxStorageBufferBindingSize`
/// default that every browser grants.
pub const MAX_TENSOR_BYTES: u64 = 128 << 20;
/// Default chunk size: 32 MiB.
pub const DEFAULT_CHUNK_BYTES: u64 = 32 << 20;
/// The largest allowed chunk size: 256 MiB.
pub const MAX_CHUNK_BYTES: u64 = 256 << 20;
/// The components whose weights a model holds, in loading order.
pub const COMPONENTS: [&str; 3] = ["text_encoder", "unet", "vae"];
/// The model families this version loads ([`Manifest::family`]).
pub const FAMILIES: [&str; 4] = ["sd1", "sd2", "sd1-inpaint", "sd2-inpaint"];
/// The diffusers configs every manifest carries (`configs`), by their path in the folder.
pub const REQUIRED_CONFIGS: [&str; 5] = [
    "model_index.json",
    "text_encoder/config.json",
    "unet/config.json",
    "vae/config.json",
    "scheduler/scheduler_config.json",
];
/// The largest manifest read: SD 1.5's is about 0.5 MB.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// What to do about a manifest that lies.
const CONVERT_AGAIN: &str =
    "the model is corrupted or was not written by sd-weights convert: download or convert it again";

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Always [`FORMAT_VERSION`].
    pub version: u32,
    /// The model family, for display: `sd1`, `sd2`, with `-inpaint` for 9-channel UNets.
    pub family: String,
    /// The precision asked for at conversion (`--quant`); tensors that quantization would
    /// hurt keep f16 (see each tensor's `dtype`).
    pub quantization: Dtype,
    /// The chunk size asked for, in bytes: no chunk is larger unless one tensor is.
    pub chunk_size: u64,
    /// The diffusers configs, by their path in a diffusers folder: `model_index.json`,
    /// `text_encoder/config.json`, `unet/config.json`, `vae/config.json`,
    /// `scheduler/scheduler_config.json`.
    pub configs: BTreeMap<String, serde_json::Value>,
    /// Other files of the model (the tokenizer's), relative to the manifest.
    pub files: Vec<FileEntry>,
    /// The chunk files, in order; tensors refer to them by index.
    pub chunks: Vec<FileEntry>,
    /// Every tensor, in storage order.
    pub tensors: Vec<TensorEntry>,
}

/// A file beside the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the manifest, `/`-separated (`chunk-000.bin`, `tokenizer/vocab.json`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the contents, lowercase hex.
    pub sha256: String,
}

/// One tensor. A tensor is stored whole (`chunk`, `offset`, `length`) or, when bigger than
/// [`MAX_TENSOR_BYTES`], as `parts` along its first dimension; exactly one of the two is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// `text_encoder`, `unet` or `vae`.
    pub component: String,
    /// The diffusers / transformers name inside the component (`conv_in.weight`).
    pub name: String,
    /// The tensor's shape. Quantized conv weights keep their 4-D shape; their blocks run
    /// over the flattened `[out, in*kh*kw]`.
    pub shape: Vec<usize>,
    /// How the values are stored.
    pub dtype: Dtype,
    /// Index into `chunks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<usize>,
    /// Byte offset inside the chunk (a multiple of [`ALIGN`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Stored bytes ([`Dtype::stored_len`] of the element count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// For a split tensor: its parts in order, each `rows` rows of the first dimension,
    /// stored (and quantized) as a tensor of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<Part>>,
}

/// A slice of a split tensor: rows of its first dimension.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub rows: usize,
    pub chunk: usize,
    pub offset: u64,
    pub length: u64,
}

impl TensorEntry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Where the data lives: one part for a tensor stored whole.
    pub fn parts(&self) -> Vec<Part> {
        match (&self.parts, self.chunk, self.offset, self.length) {
            (Some(parts), ..) => parts.clone(),
            (None, Some(chunk), Some(offset), Some(length)) => {
                vec![Part {
                    rows: self.shape.first().copied().unwrap_or(1),
                    chunk,
                    offset,
                    length,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Stored bytes, all parts together.
    pub fn stored_bytes(&self) -> u64 {
        self.parts().iter().map(|p| p.length).sum()
    }

    /// `component/name`, for messages.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.component, self.name)
    }
}

/// Refuses another format, or another version of ours, with what to do.
fn check_format(format: &str, version: u64) -> Result<(), Error> {
    let bad = |why: String| Err(Error::BadWeights(format!("{MANIFEST}: {why}")));
    if format != FORMAT_NAME {
        return bad(format!(
            "format is {format:?}, not {FORMAT_NAME:?}: not a model converted by sd-weights convert"
        ));
    }
    let supported = u64::from(FORMAT_VERSION);
    if version > supported {
        return bad(format!(
            "format version {version} is newer than the version this sd-webgpu reads ({FORMAT_VERSION}): update sd-webgpu, \
             or convert the model with this version of sd-weights"
        ));
    }
    if version < supported {
        return bad(format!(
            "format version {version} is older than the version this sd-webgpu reads ({FORMAT_VERSION}): convert the model \
             again with this version of sd-weights"
        ));
    }
    Ok(())
}

/// A plain relative path: no leading `/`, no `..`, no empty part, no backslash.
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|s| s != ".." && !s.is_empty())
}

impl Manifest {
    /// Parses and [validates](Manifest::validate) a manifest. A manifest of another format
    /// version is refused naming the version, even when the rest would not parse; a key
    /// given twice in any object is an error (serde_json would keep the last one).
    pub fn from_json(text: &str) -> Result<Manifest, Error> {
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::BadWeights(format!(
                "{MANIFEST} has {} bytes, over the {MAX_MANIFEST_BYTES}-byte limit: {CONVERT_AGAIN}",
                text.len()
            )));
        }
        /// The fields that say how to read the rest.
        #[derive(Deserialize)]
        struct Probe {
            format: Option<serde_json::Value>,
            version: Option<serde_json::Value>,
        }
        if let Ok(Probe {
            format: Some(format),
            version: Some(version),
        }) = serde_json::from_str::<Probe>(text)
        {
            if let (Some(format), Some(version)) = (format.as_str(), version.as_u64()) {
                check_format(format, version)?;
            }
        }
        let invalid = |e: String| {
            Error::BadWeights(format!(
                "{MANIFEST} is not a valid manifest ({e}): {CONVERT_AGAIN}"
            ))
        };
        crate::json::check_unique_keys(text.as_bytes()).map_err(invalid)?;
        let manifest: Manifest = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serializes")
    }

    /// Checks everything that can be checked without the chunk files: format, version and
    /// family; file paths plain, relative and unique, sizes within limits, sha256s well
    /// formed; every tensor's length for its shape and dtype, every tensor inside its chunk,
    /// aligned, not overlapping another and not over [`MAX_TENSOR_BYTES`]; no duplicate names.
    /// All arithmetic on sizes is checked: a lying manifest is an error, never an overflow.
    pub fn validate(&self) -> Result<(), Error> {
        check_format(&self.format, u64::from(self.version))?;
        let bad = |why: String| {
            Err(Error::BadWeights(format!(
                "{MANIFEST}: {why}; {CONVERT_AGAIN}"
            )))
        };
        if !FAMILIES.contains(&self.family.as_str()) {
            return Err(Error::BadWeights(format!(
                "{MANIFEST}: model family {:?} is not one this sd-webgpu loads ({}): update sd-webgpu, or convert an SD 1.x / 2.x model",
                self.family,
                FAMILIES.join(", ")
            )));
        }
        let mut paths = BTreeSet::new();
        for (what, entry) in self
            .chunks
            .iter()
            .map(|c| ("chunk", c))
            .chain(self.files.iter().map(|f| ("file", f)))
        {
            let path = &entry.path;
            if !is_plain_relative(path) {
                return bad(format!("{what} path {path:?} is not a plain relative path"));
            }
            if !paths.insert(path.as_str()) {
                return bad(format!("{what} {path} is listed twice"));
            }
            if entry.size > MAX_CHUNK_BYTES {
                return bad(format!(
                    "{what} {path}: {} bytes, over the {MAX_CHUNK_BYTES}-byte limit",
                    entry.size
                ));
            }
            if entry.sha256.len() != 64
                || !entry
                    .sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return bad(format!(
                    "{what} {path}: sha256 {:?} is not 64 lowercase hex digits",
                    entry.sha256
                ));
            }
        }
        let mut names = BTreeSet::new();
        let mut ranges: Vec<Vec<(u64, u64, String)>> = vec![Vec::new(); self.chunks.len()];
        for t in &self.tensors {
            let name = t.full_name();
            if !names.insert(name.clone()) {
                return bad(format!("tensor {name} is listed twice"));
            }
            if !COMPONENTS.contains(&t.component.as_str()) {
                return bad(format!(
                    "tensor {name}: unknown component {:?}",
                    t.component
                ));
            }
            let numel = t.shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
            let Some(numel) = numel.filter(|n| (*n as u64) < (1u64 << 40)) else {
                return bad(format!("tensor {name}: shape {:?} is too large", t.shape));
            };
            let whole = t.chunk.is_some() || t.offset.is_some() || t.length.is_some();
            let parts = t.parts();
            if whole == t.parts.is_some() || parts.is_empty() {
                return bad(format!(
                    "tensor {name}: give either chunk/offset/length or parts"
                ));
            }
            let rows = t.shape.first().copied().unwrap_or(1);
            if parts
                .iter()
                .try_fold(0usize, |sum, p| sum.checked_add(p.rows))
                != Some(rows)
            {
                return bad(format!(
                    "tensor {name}: parts do not add up to its {rows} rows"
                ));
            }
            // Each part has at most `rows` rows, so `p.rows * inner` is at most `numel`.
            let inner = numel.checked_div(rows).unwrap_or(0);
            for p in &parts {
                let n = p.rows * inner;
                if t.dtype.is_quantized() && n % super::quant::BLOCK != 0 {
                    return bad(format!(
                        "tensor {name}: {n} values cannot be stored as {}",
                        t.dtype.name()
                    ));
                }
                if p.length != t.dtype.stored_len(n) as u64 {
                    return bad(format!(
                        "tensor {name}: length {} does not fit {n} values at {}",
                        p.length,
                        t.dtype.name()
                    ));
                }
                if p.length > MAX_TENSOR_BYTES {
                    return bad(format!(
                        "tensor {name}: {} bytes stored in one piece, over the {MAX_TENSOR_BYTES}-byte limit",
                        p.length
                    ));
                }
                let Some(chunk) = self.chunks.get(p.chunk) else {
                    return bad(format!("tensor {name}: chunk {} does not exist", p.chunk));
                };
                if p.offset % ALIGN != 0
                    || p.offset
                        .checked_add(p.length)
                        .is_none_or(|end| end > chunk.size)
                {
                    return bad(format!(
                        "tensor {name}: bytes {}..+{} are not an aligned range inside {} ({} bytes)",
                        p.offset, p.length, chunk.path, chunk.size
                    ));
                }
                ranges[p.chunk].push((p.offset, p.offset + p.length, name.clone()));
            }
        }
        for (chunk, mut list) in self.chunks.iter().zip(ranges) {
            list.sort();
            for pair in list.windows(2) {
                if pair[1].0 < pair[0].1 {
                    return bad(format!(
                        "tensors {} and {} overlap in {}",
                        pair[0].2, pair[1].2, chunk.path
                    ));
                }
            }
        }
        for path in REQUIRED_CONFIGS {
            if !self.configs.contains_key(path) {
                return bad(format!("config {path} is missing"));
            }
        }
        Ok(())
    }

    /// The tensor `name` of `component`.
    pub fn tensor(&self, component: &str, name: &str) -> Option<&TensorEntry> {
        self.tensors
            .iter()
            .find(|t| t.component == component && t.name == name)
    }
}

/// A tensor's values as f32, all parts decoded and joined; `bytes` fetches one part's stored
/// bytes (from a file natively, from downloaded chunks in the browser).
pub fn read_tensor(
    tensor: &TensorEntry,
    mut bytes: impl FnMut(&Part) -> Result<Vec<u8>, Error>,
) -> Result<Vec<f32>, Error> {
    let inner = tensor.numel() / tensor.shape.first().copied().unwrap_or(1).max(1);
    let mut values = Vec::with_capacity(tensor.numel());
    for part in tensor.parts() {
        let decoded = decode(tensor.dtype, &bytes(&part)?, part.rows * inner)
            .map_err(|e| Error::BadWeights(format!("tensor {}: {e}", tensor.full_name())))?;
        values.extend(decoded);
    }
    Ok(values)
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Lowercase hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let configs = REQUIRED_CONFIGS
            .into_iter()
            .map(|p| (p.to_string(), serde_json::json!({})))
            .collect();
        Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            family: "sd1".into(),
            quantization: Dtype::Q4,
            chunk_size: 64,
            configs,
            files: vec![],
            chunks: vec![FileEntry {
                path: "chunk-000.bin".into(),
                size: 96,
                sha256: "ab".repeat(32),
            }],
            tensors: vec![
                TensorEntry {
                    component: "unet".into(),
                    name: "a.weight".into(),
                    shape: vec![2, 32],
                    dtype: Dtype::Q4,
                    chunk: Some(0),
                    offset: Some(0),
                    length: Some(36),
                    parts: None,
                },
                TensorEntry {
                    component: "unet".into(),
                    name: "a.bias".into(),
                    shape: vec![2],
                    dtype: Dtype::F16,
                    chunk: None,
                    offset: None,
                    length: None,
                    parts: Some(vec![
                        Part {
                            rows: 1,
                            chunk: 0,
                            offset: 48,
                            length: 2,
                        },
                        Part {
                            rows: 1,
                            chunk: 0,
                            offset: 64,
                            length: 2,
                        },
                    ]),
                },
            ],
        }
    }

    #[test]
    fn round_trips_through_json() {
        let m = sample();
        m.validate().unwrap();
        let json = m.to_json();
        assert!(json.contains("\"dtype\": \"q4\"") && !json.contains("\"parts\": null"));
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
        assert_eq!(m.tensors[1].parts().len(), 2);
        assert_eq!(m.tensors[0].parts()[0].rows, 2);
    }

    #[test]
    fn lies_are_caught() {
        let cases: Vec<(fn(&mut Manifest), &str)> = vec![
            (|m| m.version = 9, "version 9 is newer"),
            (|m| m.version = 0, "version 0 is older"),
            (|m| m.format = "x".into(), "format"),
            (|m| m.family = "sdxl".into(), "family \"sdxl\""),
            (|m| m.tensors[0].length = Some(40), "does not fit"),
            (|m| m.tensors[0].length = Some(u64::MAX), "does not fit"),
            (|m| m.tensors[0].offset = Some(8), "aligned range"),
            (|m| m.tensors[0].offset = Some(80), "aligned range"),
            (
                |m| m.tensors[0].offset = Some(u64::MAX - 15),
                "aligned range",
            ),
            (|m| m.tensors[0].chunk = Some(3), "does not exist"),
            (|m| m.tensors[0].chunk = Some(usize::MAX), "does not exist"),
            (|m| m.tensors[0].shape = vec![usize::MAX, 2], "too large"),
            (|m| m.tensors[0].shape = vec![1 << 20, 1 << 20], "too large"),
            (
                |m| m.tensors[1].name = "a.weight".into(),
                "tensor unet/a.weight is listed twice",
            ),
            (
                |m| m.tensors[1].parts.as_mut().unwrap()[1].offset = 32,
                "overlap",
            ),
            (
                |m| m.tensors[1].parts.as_mut().unwrap()[1].rows = 2,
                "add up",
            ),
            // Rows that add up to 2 only by wrapping around.
            (
                |m| m.tensors[1].parts.as_mut().unwrap()[0].rows = usize::MAX,
                "add up",
            ),
            (|m| m.tensors[1].chunk = Some(0), "either"),
            (|m| m.tensors[1].parts = Some(vec![]), "either"),
            (|m| m.tensors[0].shape = vec![1, 31], "cannot be stored"),
            (|m| m.chunks[0].path = "../x".into(), "relative path"),
            (|m| m.chunks[0].size = u64::MAX, "over the"),
            (|m| m.chunks[0].sha256 = "AB".repeat(32), "sha256"),
            (
                |m| m.chunks.push(m.chunks[0].clone()),
                "chunk chunk-000.bin is listed twice",
            ),
            (
                |m| m.files.push(m.chunks[0].clone()),
                "file chunk-000.bin is listed twice",
            ),
            (|m| m.tensors[0].component = "safety".into(), "component"),
            (
                |m| {
                    m.configs.remove("unet/config.json");
                },
                "unet/config.json",
            ),
        ];
        for (edit, want) in cases {
            let mut m = sample();
            edit(&mut m);
            let err = m.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
            // Every error says what to do.
            assert!(
                err.contains("convert") || err.contains("update sd-webgpu"),
                "{err}"
            );
        }
        assert!(Manifest::from_json("{\"format\": 3}").is_err());
    }

    /// What the JSON text can hide from `validate`: a key given twice, a newer version whose
    /// layout this version cannot parse, a huge file.
    #[test]
    fn json_lies_are_caught() {
        let json = sample().to_json();
        let from_json = |text: &str| Manifest::from_json(text).unwrap_err().to_string();
        // serde_json alone would keep the second "unet/config.json" (and lose the first).
        let twice = json.replacen(
            "\"unet/config.json\": {}",
            "\"unet/config.json\": {}, \"unet/config.json\": {\"x\": 1}",
            1,
        );
        assert_ne!(twice, json);
        let err = from_json(&twice);
        assert!(
            err.contains("\"unet/config.json\" appears twice") && err.contains("convert"),
            "{err}"
        );
        let err =
            from_json(&json.replacen("\"version\": 1,", "\"version\": 1, \"version\": 2,", 1));
        assert!(err.contains("\"version\" appears twice"), "{err}");
        // A newer format is named as such, though its tensors are laid out differently.
        let newer =
            r#"{"format": "sd-webgpu-weights", "version": 2, "tensors": {"unet": "elsewhere"}}"#;
        let err = from_json(newer);
        assert!(
            err.contains("version 2 is newer") && err.contains("update sd-webgpu"),
            "{err}"
        );
        let err = from_json(&(json.clone() + &" ".repeat(MAX_MANIFEST_BYTES as usize)));
        assert!(err.contains("limit"), "{err}");
        assert!(from_json("").contains("not a valid manifest"));
    }

    #[test]
    fn split_tensors_read_in_order() {
        let t = &sample().tensors[1];
        let halves = [
            half::f16::from_f32(1.5).to_le_bytes().to_vec(),
            half::f16::from_f32(-2.0).to_le_bytes().to_vec(),
        ];
        assert_eq!(
            read_tensor(t, |p| Ok(halves[(p.offset / 64) as usize].clone())).unwrap(),
            vec![1.5, -2.0]
        );
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
