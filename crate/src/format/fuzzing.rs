//! The bodies of the fuzz targets in `crate/fuzz/` (`cargo +nightly fuzz run manifest`, see
//! docs/testing.md), shared with a deterministic stand-in that runs in every `cargo test`: tens of
//! thousands of seeded mutations of valid inputs, each of which must give a value or an error,
//! never a panic, a huge allocation or a hang.
//!
//! Each target parses bytes the way a loader does, then checks what the loaders rely on a
//! successful parse to mean (a part inside its chunk, a tensor inside the file, ...): a
//! failed `assert!` here is a bug in the parser's checks.
//!
//! Built only for this crate's tests and with the feature `fuzzing`, which `crate/fuzz`
//! turns on: no other build carries it.

use super::stream::StreamingLoader;
use super::{
    Dtype, FileEntry, MAX_MANIFEST_BYTES, MAX_TENSOR_BYTES, Manifest, Part, TensorEntry,
    read_tensor, sha256_hex,
};
use crate::safetensors::{SafeTensors, parse_header};

/// Streamed through the loader when all chunks together are at most this many bytes.
const STREAM_BYTES: u64 = 1 << 20;
/// Bytes of data after the header when the input is read as a header alone.
const DATA_BYTES: usize = 256;

/// Fuzz target `safetensors_header`: `data` read as a whole safetensors file, and read as
/// the JSON header alone (behind a correct length, before [`DATA_BYTES`] of data), so that
/// mutations reach the JSON and not only the length in front of it.
pub fn safetensors_header(data: &[u8]) {
    safetensors_file(data);
    safetensors_file(&safetensors_bytes(data, &[0; DATA_BYTES]));
}

/// A safetensors file: the length of `header`, `header`, `data`.
pub fn safetensors_bytes(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(data);
    file
}

fn safetensors_file(file: &[u8]) {
    // As the first bytes of a much longer file (how the converter reads headers).
    if let Ok(header) = parse_header(file, u64::MAX, "fuzz") {
        for info in header.tensors.values() {
            assert!(info.start <= info.end);
            let end = (header.data_start as u64).checked_add(info.end as u64);
            assert!(end.is_some(), "a tensor past the end of any file");
        }
    }
    // As a whole file: every tensor lies inside it and reads as its shape says.
    let Ok(st) = SafeTensors::from_bytes(file.to_vec(), "fuzz") else {
        return;
    };
    for name in st.names() {
        let Some(info) = st.info(name) else {
            panic!("a listed tensor has no info")
        };
        let bits = info
            .shape
            .iter()
            .try_fold(info.dtype.bits(), |a, d| a.checked_mul(*d));
        assert_eq!(
            bits,
            Some((info.end - info.start) * 8),
            "{name}: size does not match its shape"
        );
        if let Ok((shape, values)) = st.get_f32(name) {
            assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        }
    }
}

/// Fuzz target `manifest`: `data` as `manifest.json`. A manifest that parses must hold
/// what [`Manifest::validate`] promises, write back to JSON that parses again, and load
/// (zero-filled chunks, when small) through [`StreamingLoader`] on the CPU.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::from_json(text) else {
        return;
    };
    check_promises(&manifest);

    let json = manifest.to_json();
    if json.len() as u64 <= MAX_MANIFEST_BYTES {
        let again = Manifest::from_json(&json).expect("a valid manifest's JSON is valid");
        // (Config values are not compared: floats may come back one ulp off.)
        assert_eq!(
            (&again.chunks, &again.files, &again.tensors),
            (&manifest.chunks, &manifest.files, &manifest.tensors)
        );
    }

    let total = manifest.chunks.iter().map(|c| c.size).sum::<u64>();
    if total <= STREAM_BYTES {
        stream_zero_chunks(manifest);
    }
}

/// What the loaders rely on a validated manifest to mean.
fn check_promises(m: &Manifest) {
    for t in &m.tensors {
        let rows = t.shape.first().copied().unwrap_or(1);
        let parts = t.parts();
        assert!(!parts.is_empty(), "{}: no parts", t.full_name());
        assert_eq!(
            parts.iter().map(|p| p.rows).sum::<usize>(),
            rows,
            "{}",
            t.full_name()
        );
        let inner = t.numel().checked_div(rows).unwrap_or(0);
        for p in &parts {
            let chunk = &m.chunks[p.chunk];
            assert!(
                p.offset + p.length <= chunk.size,
                "{}: outside {}",
                t.full_name(),
                chunk.path
            );
            assert!(p.length <= MAX_TENSOR_BYTES);
            assert_eq!(
                p.length,
                t.dtype.stored_len(p.rows * inner) as u64,
                "{}",
                t.full_name()
            );
        }
        // Reading zeros gives as many values as the shape holds.
        let stored = parts.iter().map(|p| p.length).sum::<u64>();
        if stored <= STREAM_BYTES {
            let values = read_tensor(t, |p| Ok(vec![0; p.length as usize]))
                .expect("zeros of the right length decode");
            assert_eq!(values.len(), t.numel(), "{}", t.full_name());
        }
    }
}

/// Every chunk, zero-filled (the manifest's sha256s changed to match), into the streaming
/// loader.
fn stream_zero_chunks(mut manifest: Manifest) {
    let chunks: Vec<Vec<u8>> = manifest
        .chunks
        .iter()
        .map(|c| vec![0; c.size as usize])
        .collect();
    for (entry, bytes) in manifest.chunks.iter_mut().zip(&chunks) {
        entry.sha256 = sha256_hex(bytes);
    }
    let files = manifest.files.len();
    let mut load =
        StreamingLoader::new(manifest, &crate::device::cpu()).expect("still a valid manifest");
    for (i, bytes) in chunks.iter().enumerate() {
        load.add_chunk(i, bytes)
            .expect("a chunk that matches its sha256 loads");
    }
    assert_eq!(load.missing().len(), files, "every chunk is in");
}

/// A small valid manifest: every dtype, a tensor in parts, two chunks and a file.
pub fn seed_manifest() -> Manifest {
    let configs = super::manifest::REQUIRED_CONFIGS
        .into_iter()
        .map(|p| {
            (
                p.to_string(),
                serde_json::json!({"in_channels": 4, "sizes": [1, 2.5, null], "name": "x"}),
            )
        })
        .collect();
    let tensor = |component: &str,
                  name: &str,
                  shape: Vec<usize>,
                  dtype: Dtype,
                  at: Option<(usize, u64, u64)>,
                  parts: Option<Vec<Part>>| {
        TensorEntry {
            component: component.into(),
            name: name.into(),
            shape,
            dtype,
            chunk: at.map(|a| a.0),
            offset: at.map(|a| a.1),
            length: at.map(|a| a.2),
            parts,
        }
    };
    let file = |path: &str, size: u64| FileEntry {
        path: path.into(),
        size,
        sha256: sha256_hex(&vec![0; size as usize]),
    };
    Manifest {
        format: super::FORMAT_NAME.into(),
        version: super::FORMAT_VERSION,
        family: "sd1".into(),
        quantization: Dtype::Q4,
        chunk_size: 128,
        configs,
        files: vec![file("tokenizer/vocab.json", 2)],
        chunks: vec![file("chunk-000.bin", 96), file("chunk-001.bin", 96)],
        tensors: vec![
            tensor(
                "unet",
                "a.weight",
                vec![2, 32],
                Dtype::Q4,
                Some((0, 0, 36)),
                None,
            ),
            tensor(
                "unet",
                "a.bias",
                vec![2],
                Dtype::F16,
                None,
                Some(vec![
                    Part {
                        rows: 1,
                        chunk: 0,
                        offset: 48,
                        length: 2,
                    },
                    Part {
                        rows: 1,
                        chunk: 1,
                        offset: 80,
                        length: 2,
                    },
                ]),
            ),
            tensor(
                "vae",
                "b.weight",
                vec![1, 2, 32],
                Dtype::Q8,
                Some((1, 0, 68)),
                None,
            ),
            tensor(
                "text_encoder",
                "c",
                vec![3],
                Dtype::F32,
                Some((0, 64, 12)),
                None,
            ),
            tensor(
                "text_encoder",
                "empty",
                vec![0, 5],
                Dtype::F16,
                Some((0, 80, 0)),
                None,
            ),
        ],
    }
}

/// A small valid safetensors header: every dtype, metadata, a scalar and an empty tensor.
pub fn seed_safetensors_header() -> String {
    serde_json::json!({
        "__metadata__": {"format": "pt"},
        "a.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "a.bias": {"dtype": "F16", "shape": [3], "data_offsets": [24, 30]},
        "b": {"dtype": "BF16", "shape": [], "data_offsets": [30, 32]},
        "ids": {"dtype": "I64", "shape": [1, 2], "data_offsets": [32, 48]},
        "empty": {"dtype": "F32", "shape": [0, 7], "data_offsets": [48, 48]},
    })
    .to_string()
}

/// Seeded mutations of valid inputs through both targets: the CI stand-in for fuzzing.
#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::time::{Duration, Instant};

    use super::*;

    /// splitmix64: small, seeded, the same on every machine.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// A number in `0..n` (`n` > 0).
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Numbers that break careless arithmetic, written over a number of the input.
    const NUMBERS: [&str; 14] = [
        "0",
        "1",
        "-1",
        "16",
        "4294967295",
        "4294967296",
        "9007199254740993",
        "9223372036854775807",
        "18446744073709551615",
        "18446744073709551616",
        "1099511627776",
        "134217728",
        "1e300",
        "0.5",
    ];
    /// Tokens inserted anywhere.
    const TOKENS: [&str; 12] = [
        "{",
        "}",
        "[",
        "]",
        "\"",
        ",",
        ":",
        "null",
        "\"\\u0000\"",
        "\\",
        "\"x\":1,",
        "[[[[[[[[",
    ];

    /// One random mutation of `input`; `other` is another valid input to splice from.
    fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        let len = out.len().max(1);
        match rng.below(7) {
            // A few flipped bits.
            0 => {
                for _ in 0..1 + rng.below(4) {
                    if !out.is_empty() {
                        let i = rng.below(out.len());
                        out[i] ^= 1 << rng.below(8);
                    }
                }
            }
            // Cut short.
            1 => out.truncate(rng.below(len)),
            // A piece of another input in place of a piece of this one.
            2 => {
                let (at, cut) = (rng.below(len), rng.below(64));
                let from = rng.below(other.len().max(1));
                let piece = &other[from.min(other.len())..(from + rng.below(64)).min(other.len())];
                let end = (at + cut).min(out.len());
                out.splice(at.min(out.len())..end, piece.iter().copied());
            }
            // A number replaced by a huge, negative or fractional one.
            3 => {
                let digits: Vec<usize> = (0..out.len())
                    .filter(|&i| out[i].is_ascii_digit())
                    .collect();
                if let Some(&i) = digits.get(rng.below(digits.len().max(1))) {
                    let end = (i..out.len())
                        .find(|&j| !out[j].is_ascii_digit())
                        .unwrap_or(out.len());
                    out.splice(i..end, NUMBERS[rng.below(NUMBERS.len())].bytes());
                }
            }
            // A `"key": value` member repeated: a duplicate key.
            4 => {
                let quotes: Vec<usize> = (0..out.len()).filter(|&i| out[i] == b'"').collect();
                if let Some(&start) = quotes.get(rng.below(quotes.len().max(1))) {
                    if let Some(end) = (start..out.len()).find(|&j| out[j] == b',') {
                        let member = out[start..=end].to_vec();
                        out.splice(start..start, member);
                    }
                }
            }
            // A JSON token inserted.
            5 => {
                let at = rng.below(len).min(out.len());
                out.splice(at..at, TOKENS[rng.below(TOKENS.len())].bytes());
            }
            // A random range deleted.
            _ => {
                let at = rng.below(len).min(out.len());
                let end = (at + rng.below(32)).min(out.len());
                out.drain(at..end);
            }
        }
        out
    }

    /// `count` inputs, each one to four mutations of a seed, through `target`: none panics,
    /// none takes long. Returns how many of them `accepts`.
    fn run(
        name: &str,
        seeds: &[Vec<u8>],
        count: usize,
        seed: u64,
        target: fn(&[u8]),
        accepts: fn(&[u8]) -> bool,
    ) -> usize {
        let mut rng = Rng(seed);
        let start = Instant::now();
        let mut accepted = 0;
        for i in 0..count {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(2) * rng.below(4) {
                let other = &seeds[rng.below(seeds.len())];
                input = mutate(&mut rng, &input, other);
            }
            let one = Instant::now();
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                panic!(
                    "{name}: input {i} panics: {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
            assert!(
                one.elapsed() < Duration::from_secs(2),
                "{name}: input {i} takes {:?}",
                one.elapsed()
            );
            accepted += usize::from(accepts(&input));
        }
        eprintln!(
            "{name}: {count} mutated inputs in {:?}, {accepted} of them valid",
            start.elapsed()
        );
        accepted
    }

    /// Values that break careless arithmetic on sizes and offsets.
    const HUGE: [u64; 8] = [
        0,
        15,
        16,
        1 << 32,
        1 << 40,
        (1 << 63) - 1,
        u64::MAX - 15,
        u64::MAX,
    ];

    /// A manifest that lies in one number (a shape, offset, length, row count, chunk index
    /// or chunk size) or in its list of tensors, written as JSON.
    fn lying_manifest(rng: &mut Rng, seed: &Manifest) -> Vec<u8> {
        let mut m = seed.clone();
        let n = HUGE[rng.below(HUGE.len())];
        let t = rng.below(m.tensors.len());
        let c = rng.below(m.chunks.len());
        let tensor = &mut m.tensors[t];
        let mut parts = tensor.parts();
        let p = rng.below(parts.len());
        match rng.below(9) {
            0 if !tensor.shape.is_empty() => {
                let i = rng.below(tensor.shape.len());
                tensor.shape[i] = n as usize;
            }
            lie @ 1..=4 => {
                match lie {
                    1 => parts[p].offset = n,
                    2 => parts[p].length = n,
                    3 => parts[p].rows = n as usize,
                    _ => parts[p].chunk = n as usize,
                }
                match &parts[..] {
                    [whole] if tensor.parts.is_none() => {
                        (tensor.chunk, tensor.offset, tensor.length) =
                            (Some(whole.chunk), Some(whole.offset), Some(whole.length));
                    }
                    _ => tensor.parts = Some(parts),
                }
            }
            5 => m.chunks[c].size = n,
            6 => {
                let copy = tensor.clone();
                m.tensors.push(copy);
            }
            7 => {
                m.tensors.remove(t);
            }
            _ => tensor.dtype = [Dtype::F32, Dtype::F16, Dtype::Q8, Dtype::Q4][rng.below(4)],
        }
        m.to_json().into_bytes()
    }

    fn manifest_seeds() -> Vec<Vec<u8>> {
        // The fixture model's manifest cut to its first chunk: real configs, real names.
        let fixture = include_str!("../../../tests/fixtures/converted/sd15-tiny-q8/manifest.json");
        let mut real = Manifest::from_json(fixture).unwrap();
        real.tensors
            .retain(|t| t.parts().iter().all(|p| p.chunk == 0));
        real.chunks.truncate(1);
        let small = seed_manifest();
        let compact = |m: &Manifest| serde_json::to_vec(m).unwrap();
        vec![
            small.to_json().into_bytes(),
            compact(&small),
            real.to_json().into_bytes(),
        ]
    }

    fn header_seeds() -> Vec<Vec<u8>> {
        let header = seed_safetensors_header();
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&header).unwrap(),
        )
        .unwrap();
        let data: Vec<u8> = (0..48u8).collect();
        // Headers alone (the target puts a length in front) and whole files.
        vec![
            header.clone().into_bytes(),
            pretty.into_bytes(),
            safetensors_bytes(header.as_bytes(), &data),
        ]
    }

    #[test]
    fn seeds_are_valid() {
        for seed in manifest_seeds() {
            Manifest::from_json(std::str::from_utf8(&seed).unwrap()).unwrap();
            manifest(&seed);
        }
        let st = SafeTensors::from_bytes(header_seeds().pop().unwrap(), "seed").unwrap();
        assert_eq!(st.names().count(), 5);
        for seed in header_seeds() {
            safetensors_header(&seed);
        }
    }

    #[test]
    fn mutated_manifests_never_panic() {
        let valid = |data: &[u8]| {
            std::str::from_utf8(data).is_ok_and(|text| Manifest::from_json(text).is_ok())
        };
        let accepted = run("manifest", &manifest_seeds(), 20_000, 1, manifest, valid);
        assert!(
            accepted > 500,
            "too few mutations stay valid to reach the loaders: {accepted}"
        );
        // Lies in single numbers, mutated further or not.
        let mut rng = Rng(3);
        let seeds: Vec<Manifest> = manifest_seeds()
            .iter()
            .map(|s| Manifest::from_json(std::str::from_utf8(s).unwrap()).unwrap())
            .collect();
        let lies: Vec<Vec<u8>> = (0..2000)
            .map(|i| lying_manifest(&mut rng, &seeds[i % seeds.len()]))
            .collect();
        for lie in &lies {
            if catch_unwind(AssertUnwindSafe(|| manifest(lie))).is_err() {
                panic!("manifest panics: {}", String::from_utf8_lossy(lie));
            }
        }
        run("lying manifest", &lies, 5_000, 4, manifest, valid);
    }

    #[test]
    fn mutated_safetensors_headers_never_panic() {
        let valid = |data: &[u8]| {
            let file = safetensors_bytes(data, &[0; DATA_BYTES]);
            SafeTensors::from_bytes(data.to_vec(), "t").is_ok()
                || SafeTensors::from_bytes(file, "t").is_ok()
        };
        let accepted = run(
            "safetensors_header",
            &header_seeds(),
            20_000,
            2,
            safetensors_header,
            valid,
        );
        assert!(accepted > 200, "too few mutations stay valid: {accepted}");
    }

    /// The fuzz targets' starting corpus (`crate/fuzz/seeds/`) is these seeds; with
    /// `UPDATE_FUZZ_SEEDS=1` the test writes them instead.
    #[test]
    fn committed_fuzz_seeds_are_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let update = std::env::var_os("UPDATE_FUZZ_SEEDS").is_some();
        for (target, seeds) in [
            ("manifest", manifest_seeds()),
            ("safetensors_header", header_seeds()),
        ] {
            let dir = root.join(target);
            for (i, seed) in seeds.iter().enumerate() {
                let path = dir.join(format!("seed-{i}"));
                if update {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(&path, seed).unwrap();
                } else {
                    let committed = std::fs::read(&path).unwrap_or_default();
                    assert!(
                        committed == *seed,
                        "{} is stale: run with UPDATE_FUZZ_SEEDS=1",
                        path.display()
                    );
                }
            }
        }
    }
}
