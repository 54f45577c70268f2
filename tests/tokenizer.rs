//! The CLIP tokenizer against transformers' `CLIPTokenizer`: every prompt of
//! `fixtures/tokenizer_corpus.json` (made by `fixtures/make_fixtures.py`) must give exactly the
//! recorded ids, with SD 1.x padding (`<|endoftext|>`) and SD 2.x padding (`!`). Runs natively
//! and in the browser, so the files are compiled in rather than read from disk.

use sd_webgpu::Error;
use sd_webgpu::tokenizer::ClipTokenizer;
use serde::Deserialize;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

const CORPUS: &str = include_str!("fixtures/tokenizer_corpus.json");
const SD1_VOCAB: &str = include_str!("fixtures/sd15-tiny/tokenizer/vocab.json");
const SD1_MERGES: &str = include_str!("fixtures/sd15-tiny/tokenizer/merges.txt");
const SD1_SPECIAL: &str = include_str!("fixtures/sd15-tiny/tokenizer/special_tokens_map.json");
const SD2_VOCAB: &str = include_str!("fixtures/sd2-tiny/tokenizer/vocab.json");
const SD2_MERGES: &str = include_str!("fixtures/sd2-tiny/tokenizer/merges.txt");
const SD2_SPECIAL: &str = include_str!("fixtures/sd2-tiny/tokenizer/special_tokens_map.json");
const SD2_CONFIG: &str = include_str!("fixtures/sd2-tiny/tokenizer/tokenizer_config.json");

#[derive(Deserialize)]
struct Row {
    prompt: String,
    sd1: Vec<u32>,
    sd2: Vec<u32>,
}

fn corpus() -> Vec<Row> {
    serde_json::from_str(CORPUS).expect("tokenizer_corpus.json is a list of {prompt, sd1, sd2}")
}

fn sd1() -> ClipTokenizer {
    let pad =
        ClipTokenizer::pad_token_from_config(SD1_SPECIAL).expect("sd1 special_tokens_map.json");
    ClipTokenizer::from_files(SD1_VOCAB, SD1_MERGES, pad.as_deref()).expect("sd1 tokenizer")
}

fn sd2() -> ClipTokenizer {
    let pad =
        ClipTokenizer::pad_token_from_config(SD2_SPECIAL).expect("sd2 special_tokens_map.json");
    ClipTokenizer::from_files(SD2_VOCAB, SD2_MERGES, pad.as_deref()).expect("sd2 tokenizer")
}

/// Compares every corpus prompt; the error names how many differ and shows the first one.
fn check_corpus(tok: &ClipTokenizer, want: impl Fn(&Row) -> &[u32]) -> Result<usize, String> {
    let rows = corpus();
    let mut first = None;
    let mut mismatches = 0;
    for row in &rows {
        let got = tok
            .encode(&row.prompt)
            .map_err(|e| format!("{:?}: {e}", row.prompt))?;
        if got != want(row) {
            mismatches += 1;
            first.get_or_insert_with(|| {
                format!("{:?}\n  got  {got:?}\n  want {:?}", row.prompt, want(row))
            });
        }
    }
    match first {
        None => Ok(rows.len()),
        Some(first) => Err(format!(
            "{mismatches} of {} prompts differ; first: {first}",
            rows.len()
        )),
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn sd1_matches_transformers() {
    let tok = sd1();
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (49406, 49407, 49407)
    );
    let matched = check_corpus(&tok, |row| &row.sd1).unwrap_or_else(|e| panic!("sd1: {e}"));
    assert_eq!(matched, 246, "the corpus should hold 246 prompts");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn sd2_matches_transformers() {
    let tok = sd2();
    check_corpus(&tok, |row| &row.sd2).unwrap_or_else(|e| panic!("sd2: {e}"));
}

/// SD 2.x pads with "!" (id 0); the folder's config files say so, in either form.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn sd2_pad_token_is_bang() {
    for config in [
        SD2_SPECIAL,
        SD2_CONFIG,
        r#"{"pad_token": {"content": "!", "lstrip": false}}"#,
    ] {
        let pad = ClipTokenizer::pad_token_from_config(config).expect("valid config");
        assert_eq!(pad.as_deref(), Some("!"));
    }
    assert_eq!(
        ClipTokenizer::pad_token_from_config(r#"{"pad_token": null}"#),
        Ok(None)
    );
    assert_eq!(ClipTokenizer::pad_token_from_config("{}"), Ok(None));
    assert_eq!(sd2().pad_id(), 0);
}

/// The typical bug — ignoring SD 2's pad token and padding with `<|endoftext|>` — is caught.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn wrong_pad_token_is_caught() {
    let tok = ClipTokenizer::from_files(SD2_VOCAB, SD2_MERGES, None).expect("tokenizer");
    assert!(
        check_corpus(&tok, |row| &row.sd2).is_err(),
        "sd1 padding must not pass the sd2 golden"
    );
}

/// A tokenizer.json with the same vocabulary and merges (both merge spellings) tokenizes the same.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn tokenizer_json_matches_transformers() {
    let vocab: serde_json::Value = serde_json::from_str(SD2_VOCAB).expect("vocab.json");
    let pairs: Vec<(&str, &str)> = SD2_MERGES
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(' '))
        .collect();
    let as_strings: Vec<String> = pairs.iter().map(|(a, b)| format!("{a} {b}")).collect();
    let as_arrays: Vec<[&str; 2]> = pairs.iter().map(|(a, b)| [*a, *b]).collect();
    for merges in [serde_json::json!(as_strings), serde_json::json!(as_arrays)] {
        let json = serde_json::json!({"model": {"type": "BPE", "vocab": vocab, "merges": merges}})
            .to_string();
        let tok = ClipTokenizer::from_tokenizer_json(&json, Some("!")).expect("tokenizer.json");
        check_corpus(&tok, |row| &row.sd2).unwrap_or_else(|e| panic!("tokenizer.json: {e}"));
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn counts_tokens_before_truncation() {
    let tok = sd1();
    assert_eq!(tok.count_tokens("").unwrap(), 0);
    assert_eq!(tok.count_tokens("a photo of an astronaut").unwrap(), 5);
    let long = "a red circle ".repeat(40);
    assert_eq!(tok.count_tokens(&long).unwrap(), 120);
    let ids = tok.encode(&long).unwrap();
    assert_eq!(ids.len(), ClipTokenizer::MAX_LENGTH);
    assert_eq!(
        ids[76],
        tok.eos_id(),
        "truncated prompts still end with eos"
    );
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn from_dir_reads_a_diffusers_folder() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let sd2 = ClipTokenizer::from_dir(&fixtures.join("sd2-tiny/tokenizer")).expect("sd2 folder");
    assert_eq!(sd2.pad_id(), 0);
    check_corpus(&sd2, |row| &row.sd2).unwrap_or_else(|e| panic!("from_dir sd2: {e}"));
    let sd1 = ClipTokenizer::from_dir(&fixtures.join("sd15-tiny/tokenizer")).expect("sd1 folder");
    assert_eq!(sd1.pad_id(), 49407);
    let missing = ClipTokenizer::from_dir(&fixtures.join("no-such-folder")).err();
    assert!(matches!(missing, Some(Error::Tokenizer(_))), "{missing:?}");
}

/// Bad files are errors that say what is wrong, never panics.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn bad_inputs_are_errors() {
    let expect_err = |what: &str, result: Result<ClipTokenizer, Error>| match result {
        Err(Error::Tokenizer(why)) => assert!(!why.is_empty(), "{what}: empty message"),
        Err(other) => panic!("{what}: wrong error kind {other:?}"),
        Ok(_) => panic!("{what}: accepted"),
    };
    expect_err(
        "invalid vocab JSON",
        ClipTokenizer::from_files("{not json", SD2_MERGES, None),
    );
    expect_err(
        "vocab not an object",
        ClipTokenizer::from_files("[1, 2]", SD2_MERGES, None),
    );
    expect_err(
        "pad not in vocab",
        ClipTokenizer::from_files(SD2_VOCAB, SD2_MERGES, Some("<pad>")),
    );
    expect_err(
        "merge line without a pair",
        ClipTokenizer::from_files(SD2_VOCAB, "#version: 0.2\ni n x\n", None),
    );
    expect_err(
        "empty merges",
        ClipTokenizer::from_files(SD2_VOCAB, "", None),
    );
    expect_err(
        "merge out of vocab",
        ClipTokenizer::from_files(SD2_VOCAB, "#version: 0.2\nqq zz\n", None),
    );
    expect_err(
        "vocab without specials",
        ClipTokenizer::from_files(r#"{"a": 0}"#, "a a\n", None),
    );
    expect_err(
        "invalid tokenizer.json",
        ClipTokenizer::from_tokenizer_json("{", None),
    );
    expect_err(
        "tokenizer.json without a model",
        ClipTokenizer::from_tokenizer_json("{}", None),
    );
    expect_err(
        "tokenizer.json with a non-BPE model",
        ClipTokenizer::from_tokenizer_json(
            r#"{"model": {"type": "WordPiece", "vocab": {}}}"#,
            None,
        ),
    );
    let bad_config = ClipTokenizer::pad_token_from_config(r#"{"pad_token": 3}"#);
    assert!(
        matches!(bad_config, Err(Error::Tokenizer(_))),
        "{bad_config:?}"
    );
}
