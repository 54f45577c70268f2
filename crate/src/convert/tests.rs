//! The push API on small in-memory safetensors files, against a plain sequential reference.

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::format::{Dtype, Manifest, encode, read_tensor, sha256_hex};
use crate::safetensors::{self as st, parse_header};

/// A safetensors file in memory: (name, dtype name, shape, little-endian bytes) each.
fn safetensors(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let entry = serde_json::json!({
            "dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]
        });
        header.insert(name.to_string(), entry);
        data.extend_from_slice(bytes);
    }
    let json = serde_json::to_string(&header).unwrap();
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(json.as_bytes());
    file.extend(data);
    file
}

fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + seed) * 0.618).sin() * 0.03)
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// The tiny SD 1.5 fixture's configs; a stand-in tokenizer (only its presence is checked).
fn folder_files() -> (BTreeMap<String, Value>, BTreeMap<String, Vec<u8>>) {
    let configs = [
        (
            "model_index.json",
            include_str!("../../../tests/fixtures/sd15-tiny/model_index.json"),
        ),
        (
            "text_encoder/config.json",
            include_str!("../../../tests/fixtures/sd15-tiny/text_encoder/config.json"),
        ),
        (
            "unet/config.json",
            include_str!("../../../tests/fixtures/sd15-tiny/unet/config.json"),
        ),
        (
            "vae/config.json",
            include_str!("../../../tests/fixtures/sd15-tiny/vae/config.json"),
        ),
        (
            "scheduler/scheduler_config.json",
            include_str!("../../../tests/fixtures/sd15-tiny/scheduler/scheduler_config.json"),
        ),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_string(), serde_json::from_str(t).unwrap()))
    .collect();
    let tokenizer = [("tokenizer/tokenizer.json".to_string(), b"{}".to_vec())]
        .into_iter()
        .collect();
    (configs, tokenizer)
}

/// Two component files: a text encoder (with an integer buffer, skipped) and a UNet whose
/// big tensor is quantized on several threads natively and split into parts.
fn model() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let big = values(256 * 512, 1.0);
    let text_encoder = safetensors(&[
        ("embeddings.position_ids", "I64", vec![1, 4], vec![0u8; 32]),
        (
            "embeddings.token_embedding.weight",
            "F16",
            vec![64, 32],
            f16_bytes(&values(64 * 32, 2.0)),
        ),
        (
            "encoder.layers.0.mlp.fc1.weight",
            "F32",
            vec![128, 64],
            f32_bytes(&values(128 * 64, 3.0)),
        ),
        ("step", "I32", vec![], vec![0u8; 4]),
    ]);
    let unet = safetensors(&[
        ("big.weight", "F32", vec![256, 512], f32_bytes(&big)),
        (
            "conv_in.weight",
            "F16",
            vec![32, 4, 3, 3],
            f16_bytes(&values(32 * 36, 4.0)),
        ),
        ("norm.bias", "BF16", vec![40], vec![0x3f; 80]),
    ]);
    vec![
        ("text_encoder", "te.safetensors", text_encoder),
        ("unet", "unet.safetensors", unet),
    ]
}

fn input(files: &[(&'static str, &'static str, Vec<u8>)]) -> Input {
    let (configs, tokenizer) = folder_files();
    let mut input = Input::diffusers(configs, tokenizer, "mem").unwrap();
    for (component, name, bytes) in files {
        let len = header_len(&bytes[..8], bytes.len() as u64, name).unwrap();
        let header = parse_header(&bytes[..8 + len as usize], bytes.len() as u64, name).unwrap();
        input
            .add_diffusers_weights(component, name, &header)
            .unwrap();
    }
    input
}

/// Drives the converter as a caller would; returns the chunks as they came (with the number
/// of pushes that had been made when each came) and the rest.
fn drive(
    files: &[(&'static str, &'static str, Vec<u8>)],
    converter: &mut Converter,
) -> Vec<(usize, Chunk)> {
    let mut chunks = Vec::new();
    let mut pushes = 0;
    while let Some(r) = converter.next_range() {
        let bytes = &files[r.file].2[r.start as usize..(r.start + r.len) as usize];
        pushes += 1;
        chunks.extend(
            converter
                .push(bytes)
                .unwrap()
                .into_iter()
                .map(|c| (pushes, c)),
        );
    }
    chunks
}

/// Every chunk and the manifest's JSON of a convert driven a whole range at a time.
fn convert_whole(
    files: &[(&'static str, &'static str, Vec<u8>)],
    dtype: Dtype,
    chunk_size: u64,
) -> (Vec<Chunk>, String) {
    let mut converter = Converter::new(input(files), dtype, chunk_size).unwrap();
    let mut chunks: Vec<Chunk> = drive(files, &mut converter)
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let done = converter.finish().unwrap();
    chunks.extend(done.chunks);
    (chunks, done.manifest.to_json())
}

/// The push API gives, tensor by tensor, the plain sequential encoding of each tensor's
/// values at the dtype the policy picks, packed at aligned offsets with zeros between; each
/// chunk is handed out as soon as the next tensor does not fit, with its sha256.
#[test]
fn push_api_gives_the_sequential_encoding() {
    let files = model();
    for want in [Dtype::Q4, Dtype::Q8, Dtype::F16, Dtype::F32] {
        let input = input(&files);
        assert_eq!(
            input.notes,
            vec!["text_encoder: skipped `step`, stored as I32: integers are not weights"]
        );
        let ranges: Vec<Range> = input
            .tensors
            .iter()
            .map(|t| Range {
                file: t.file,
                start: t.start,
                len: t.len,
            })
            .collect();
        let sources: BTreeMap<String, (st::Dtype, Range)> = input
            .tensors
            .iter()
            .zip(&ranges)
            .map(|(t, r)| (format!("{}/{}", t.component, t.name), (t.dtype, *r)))
            .collect();
        // 64 KiB chunks: the 256×512 tensor gets a chunk (or parts) of its own.
        let mut converter = Converter::new(input, want, 64 << 10).unwrap();
        converter.max_tensor_bytes = 200 << 10;
        assert_eq!(converter.ranges().len(), 5);
        assert_eq!(
            converter.ranges()[0],
            sources["text_encoder/text_model.embeddings.token_embedding.weight"].1
        );
        let streamed = drive(&files, &mut converter);
        let done = converter.finish().unwrap();
        let manifest = Manifest::from_json(&done.manifest.to_json()).unwrap();
        assert_eq!(manifest, done.manifest);

        let mut chunks: Vec<Chunk> = streamed.iter().map(|(_, c)| c.clone()).collect();
        chunks.extend(done.chunks.clone());
        assert!(
            !streamed.is_empty(),
            "{want:?}: chunks came only at the end"
        );
        assert_eq!(manifest.chunks.len(), chunks.len());
        let mut used: Vec<Vec<bool>> = chunks.iter().map(|c| vec![false; c.bytes.len()]).collect();
        for (entry, chunk) in manifest.chunks.iter().zip(&chunks) {
            assert_eq!(
                (&entry.path, entry.size, &entry.sha256),
                (
                    &chunk.path,
                    chunk.bytes.len() as u64,
                    &sha256_hex(&chunk.bytes)
                )
            );
        }
        for t in &manifest.tensors {
            let (dtype, r) = sources[&t.full_name()];
            let raw = &files[r.file].2[r.start as usize..(r.start + r.len) as usize];
            let values = st::to_f32(dtype, raw).unwrap();
            let (mut expect, _) = policy::choose(&t.component, &t.name, &t.shape, want);
            if let Some((wider, _)) = policy::widen_for_range(expect, &values) {
                expect = wider;
            }
            assert_eq!(t.dtype, expect, "{}", t.full_name());
            let inner = values.len() / t.shape[0].max(1);
            let mut row = 0;
            for p in t.parts() {
                let stored =
                    &chunks[p.chunk].bytes[p.offset as usize..(p.offset + p.length) as usize];
                let reference =
                    encode(t.dtype, &values[row * inner..(row + p.rows) * inner]).unwrap();
                assert!(stored == reference.as_slice(), "{want:?} {}", t.full_name());
                used[p.chunk][p.offset as usize..(p.offset + p.length) as usize].fill(true);
                row += p.rows;
            }
            let back = read_tensor(t, |p| {
                Ok(
                    chunks[p.chunk].bytes[p.offset as usize..(p.offset + p.length) as usize]
                        .to_vec(),
                )
            })
            .unwrap();
            assert_eq!(back.len(), values.len());
        }
        // Between tensors: alignment padding only, zeros.
        for (chunk, used) in chunks.iter().zip(&used) {
            assert!(chunk.bytes.iter().zip(used).all(|(b, u)| *u || *b == 0));
        }
        let big = manifest.tensor("unet", "big.weight").unwrap();
        if want == Dtype::F32 || want == Dtype::F16 {
            assert!(
                big.parts.as_ref().is_some_and(|p| p.len() > 1),
                "{want:?}: split"
            );
        }
        // Each chunk was handed out by the push of the first tensor that did not fit.
        for (pushes, chunk) in &streamed {
            let index = manifest
                .chunks
                .iter()
                .position(|c| c.path == chunk.path)
                .unwrap();
            let next = &manifest.tensors[*pushes - 1];
            assert!(
                next.parts().iter().any(|p| p.chunk > index),
                "{}",
                chunk.path
            );
        }
        assert_eq!(
            done.files,
            vec![("tokenizer/tokenizer.json".to_string(), b"{}".to_vec())]
        );
        let kept: Vec<String> = done.kept.iter().map(ToString::to_string).collect();
        if want == Dtype::Q4 {
            assert!(
                kept.iter().any(|k| k.starts_with(
                    "1 tensors (0.00 M values) at f16 instead of q4: norms and biases"
                )),
                "{kept:?}"
            );
        } else if want == Dtype::F32 {
            assert!(kept.is_empty());
        }
    }
}

/// The same bytes twice: nothing depends on threads or timing.
#[test]
fn converting_twice_gives_the_same_bytes() {
    let files = model();
    let run = || convert_whole(&files, Dtype::Q4, 1 << 20);
    assert_eq!(run(), run());
}

/// Pieces of any size, values cut between two of them included, give the same bytes as whole
/// ranges; `next_range` says what is left.
#[test]
fn pushing_in_pieces_gives_the_same_bytes() {
    let files = model();
    let whole = convert_whole(&files, Dtype::Q8, 32 << 10);
    for piece in [1, 3, 1000] {
        let mut converter = Converter::new(input(&files), Dtype::Q8, 32 << 10).unwrap();
        let mut chunks = Vec::new();
        while let Some(r) = converter.next_range() {
            let len = r.len.min(piece);
            let bytes = &files[r.file].2[r.start as usize..(r.start + len) as usize];
            chunks.extend(converter.push(bytes).unwrap());
        }
        let done = converter.finish().unwrap();
        chunks.extend(done.chunks);
        assert!(
            (chunks, done.manifest.to_json()) == whole,
            "pieces of {piece}"
        );
    }
}

#[test]
fn pushes_out_of_step_are_errors() {
    let files = model();
    let mut converter = Converter::new(input(&files), Dtype::Q8, 1 << 20).unwrap();
    let r = converter.next_range().unwrap();
    let err = converter.push(&vec![0u8; r.len as usize + 1]).unwrap_err();
    assert!(
        err.to_string().contains(
            "te.safetensors: tensor text_encoder/text_model.embeddings.token_embedding.weight: 4097 bytes pushed, its range has 4096 left"
        ),
        "{err}"
    );
    let bytes = &files[r.file].2[r.start as usize..(r.start + r.len) as usize];
    converter.push(&bytes[..10]).unwrap();
    assert_eq!(converter.next_range().unwrap().start, r.start + 10);
    converter.push(&bytes[10..]).unwrap();
    let r = converter.next_range().unwrap();
    converter
        .push(&files[r.file].2[r.start as usize..(r.start + 7) as usize])
        .unwrap();
    let err = converter.finish().unwrap_err();
    assert!(
        err.to_string().contains(
            "1 of 5 tensors converted: tensor text_encoder/text_model.encoder.layers.0.mlp.fc1.weight was not pushed whole"
        ),
        "{err}"
    );

    // NaN: an error naming the file and the tensor.
    let mut converter = Converter::new(input(&files), Dtype::Q8, 1 << 20).unwrap();
    let r = converter.next_range().unwrap();
    let err = converter.push(&vec![0xff; r.len as usize]).unwrap_err();
    assert!(
        err.to_string().contains(
            "te.safetensors: tensor text_encoder/text_model.embeddings.token_embedding.weight holds NaN"
        ),
        "{err}"
    );
    assert!(Converter::new(input(&files), Dtype::Q8, 0).is_err());
}

/// A crafted header length is named as such, before anything else is read.
#[test]
fn header_lengths_are_checked() {
    assert!(
        header_len(&[1, 2], 100, "x")
            .unwrap_err()
            .to_string()
            .contains("x: shorter than")
    );
    let err = header_len(&200u64.to_le_bytes(), 100, "x").unwrap_err();
    assert!(
        err.to_string()
            .contains("declares a 200-byte header in a 100-byte file"),
        "{err}"
    );
    assert_eq!(header_len(&92u64.to_le_bytes(), 100, "x").unwrap(), 92);
}

/// Which file holds a component's weights, as both drivers ask (a folder on disk, the files a
/// visitor picked): the plain file, else the fp16 one; sharded and pickle files are refused
/// saying what to do; a missing one names the layout.
#[test]
fn weights_paths_follow_the_folder_layout() {
    let path = |files: &[&str]| input::weights_path("unet", |p| files.contains(&p), "m");
    assert_eq!(
        path(&[
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors"
        ])
        .unwrap(),
        "unet/diffusion_pytorch_model.safetensors"
    );
    assert_eq!(
        path(&["unet/diffusion_pytorch_model.fp16.safetensors"]).unwrap(),
        "unet/diffusion_pytorch_model.fp16.safetensors"
    );
    let err = path(&["unet/diffusion_pytorch_model.safetensors.index.json"]).unwrap_err();
    assert!(err.to_string().contains("m/unet: sharded weights"), "{err}");
    let err = path(&["unet/diffusion_pytorch_model.bin"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("m/unet/diffusion_pytorch_model.bin: refused: pickle files"),
        "{err}"
    );
    let err = path(&[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("m/unet/diffusion_pytorch_model.safetensors is missing: a diffusers"),
        "{err}"
    );
    assert!(input::weights_path("tokenizer", |_| true, "m").is_err());
}

/// A folder's files by path: the five configs parsed, the tokenizer files it has; a missing or
/// malformed config is named.
#[test]
fn folder_files_are_read_by_path() {
    let (configs, _) = folder_files();
    let texts: BTreeMap<String, Vec<u8>> = configs
        .iter()
        .map(|(p, v)| (p.clone(), v.to_string().into_bytes()))
        .chain([("tokenizer/vocab.json".to_string(), b"{}".to_vec())])
        .collect();
    let (read, tokenizer) = input::folder_files(|p| Ok(texts.get(p).cloned()), "m").unwrap();
    assert_eq!(read, configs);
    assert_eq!(
        tokenizer.keys().collect::<Vec<_>>(),
        ["tokenizer/vocab.json"]
    );
    let err = input::folder_files(
        |p| {
            Ok((p != "vae/config.json")
                .then(|| texts.get(p).cloned())
                .flatten())
        },
        "m",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("m/vae/config.json is missing"),
        "{err}"
    );
    let err = input::folder_files(|_| Ok(Some(b"{".to_vec())), "m").unwrap_err();
    assert!(
        err.to_string()
            .contains("m/model_index.json: not valid JSON"),
        "{err}"
    );
}

/// A header announcing a tensor over [`input::MAX_TENSOR_VALUES`] is refused while planning,
/// naming it: nothing that size is ever allocated.
#[test]
fn huge_tensors_are_refused_before_reading() {
    let (configs, tokenizer) = folder_files();
    let mut input = Input::diffusers(configs, tokenizer, "mem").unwrap();
    // 2^28 f16 values announced, the bytes to match (the header is all that is parsed).
    let n = 1u64 << 28;
    let json = format!(
        r#"{{"w":{{"dtype":"F16","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
        2 * n
    );
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    let header = parse_header(&bytes, bytes.len() as u64 + 2 * n, "big.safetensors").unwrap();
    let err = input
        .add_diffusers_weights("unet", "big.safetensors", &header)
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "big.safetensors: tensor `w` has shape [268435456], over the 134217728 values"
        ),
        "{err}"
    );
}
