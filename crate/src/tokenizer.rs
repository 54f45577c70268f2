//! CLIP's BPE tokenizer, giving exactly the ids transformers' `CLIPTokenizer` gives when a
//! diffusers pipeline calls it with `padding="max_length", max_length=77, truncation=True`.
//!
//! The pipeline is rebuilt here from the vocabulary and merges (rather than trusting whatever
//! a `tokenizer.json` says) so every checkpoint folder tokenizes the same way:
//! NFC, whitespace runs to one space, lowercase; CLIP's word split; byte-level BPE with a
//! `</w>` end-of-word suffix. The special tokens (bos, eos and the pad token) are added
//! tokens, so their literal text in a prompt maps straight to their ids — which is why SD 2's
//! pad token `!` also changes how a prompt's `!` is tokenized.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::Error;

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// CLIP's word pattern (transformers' `tokenization_clip.py`): the special tokens, English
/// contractions, letter runs, single digits and runs of anything else but whitespace.
const WORD_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The tokenizer and the ids a text encoder input is built from.
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
}

impl ClipTokenizer {
    /// The text encoder's sequence length: bos, 75 prompt tokens, eos.
    pub const MAX_LENGTH: usize = 77;

    /// From the contents of a diffusers `tokenizer/` folder: vocab.json + merges.txt, with the
    /// pad token taken from special_tokens_map.json or tokenizer_config.json (see
    /// [`ClipTokenizer::pad_token_from_config`]); `None` means `<|endoftext|>`, SD 1.x's pad.
    pub fn from_files(
        vocab_json: &str,
        merges_txt: &str,
        pad_token: Option<&str>,
    ) -> Result<Self, Error> {
        let vocab: HashMap<String, u32> = serde_json::from_str(vocab_json).map_err(|e| {
            Error::Tokenizer(format!(
                "vocab.json is not a JSON object of token -> id: {e}"
            ))
        })?;
        let merges = parse_merges(merges_txt)?;
        Self::build(vocab.into_iter().collect(), merges, pad_token)
    }

    /// From a tokenizer.json (transformers' fast tokenizer file) when a folder has that
    /// instead. Only its BPE vocabulary and merges are used; pad token as in
    /// [`ClipTokenizer::from_files`].
    pub fn from_tokenizer_json(json: &str, pad_token: Option<&str>) -> Result<Self, Error> {
        let root: Value = serde_json::from_str(json)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json is not valid JSON: {e}")))?;
        let model = &root["model"];
        if let Some(kind) = model["type"].as_str() {
            if kind != "BPE" {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.json holds a {kind} model, CLIP needs BPE"
                )));
            }
        }
        let vocab: HashMap<String, u32> =
            serde_json::from_value(model["vocab"].clone()).map_err(|e| {
                Error::Tokenizer(format!(
                    "tokenizer.json's model.vocab is not an object of token -> id: {e}"
                ))
            })?;
        let merges = model["merges"]
            .as_array()
            .ok_or_else(|| Error::Tokenizer("tokenizer.json has no model.merges list".into()))?
            .iter()
            .enumerate()
            .map(|(i, merge)| {
                json_merge(merge).ok_or_else(|| {
                    Error::Tokenizer(format!("tokenizer.json's merge {i} is not a pair: {merge}"))
                })
            })
            .collect::<Result<Merges, Error>>()?;
        Self::build(vocab.into_iter().collect(), merges, pad_token)
    }

    /// Loads a diffusers tokenizer folder: vocab.json + merges.txt when present, else
    /// tokenizer.json; the pad token from special_tokens_map.json, else tokenizer_config.json.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self, Error> {
        let read = |name: &str| -> Result<Option<String>, Error> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::Tokenizer(format!(
                    "cannot read {}: {e}",
                    path.display()
                ))),
            }
        };
        // transformers lets special_tokens_map.json override tokenizer_config.json.
        let mut pad_token = None;
        for config in ["special_tokens_map.json", "tokenizer_config.json"] {
            if let Some(text) = read(config)? {
                pad_token = Self::pad_token_from_config(&text).map_err(|e| {
                    Error::Tokenizer(format!("{}: {e}", dir.join(config).display()))
                })?;
                if pad_token.is_some() {
                    break;
                }
            }
        }
        match (read("vocab.json")?, read("merges.txt")?) {
            (Some(vocab), Some(merges)) => Self::from_files(&vocab, &merges, pad_token.as_deref()),
            _ => match read("tokenizer.json")? {
                Some(json) => Self::from_tokenizer_json(&json, pad_token.as_deref()),
                None => Err(Error::Tokenizer(format!(
                    "{} has neither vocab.json + merges.txt nor tokenizer.json; point at the checkpoint's tokenizer/ folder",
                    dir.display()
                ))),
            },
        }
    }

    /// The pad token named by a special_tokens_map.json or tokenizer_config.json, where
    /// `"pad_token"` is a string or an object with `"content"`. `None` when it names none.
    pub fn pad_token_from_config(config_json: &str) -> Result<Option<String>, Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum TokenSpec {
            Text(String),
            Object { content: String },
        }
        #[derive(Deserialize)]
        struct Config {
            pad_token: Option<TokenSpec>,
        }
        let config: Config = serde_json::from_str(config_json).map_err(|e| {
            Error::Tokenizer(format!(
                "tokenizer config is not valid JSON with a string pad_token: {e}"
            ))
        })?;
        Ok(config.pad_token.map(|spec| match spec {
            TokenSpec::Text(text) | TokenSpec::Object { content: text } => text,
        }))
    }

    /// Ids padded or truncated to 77: `[bos, up to 75 prompt tokens, eos, pad...]`, as
    /// diffusers' pipelines call the tokenizer.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, Error> {
        let content = self.content_ids(prompt)?;
        let kept = content.len().min(Self::MAX_LENGTH - 2);
        let mut ids = Vec::with_capacity(Self::MAX_LENGTH);
        ids.push(self.bos_id);
        ids.extend_from_slice(&content[..kept]);
        ids.push(self.eos_id);
        ids.resize(Self::MAX_LENGTH, self.pad_id);
        Ok(ids)
    }

    /// Number of prompt tokens (without bos/eos) before truncation, for a "tokens used / 75"
    /// counter: anything past 75 is cut off.
    pub fn count_tokens(&self, prompt: &str) -> Result<usize, Error> {
        Ok(self.content_ids(prompt)?.len())
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The prompt's token ids without bos/eos; literal special tokens in it still count.
    fn content_ids(&self, prompt: &str) -> Result<Vec<u32>, Error> {
        let encoding = self
            .tokenizer
            .encode(prompt, false)
            .map_err(|e| Error::Tokenizer(format!("cannot tokenize the prompt: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Assembles transformers' CLIP pipeline around the vocabulary and merges.
    fn build(vocab: Vocab, merges: Merges, pad_token: Option<&str>) -> Result<Self, Error> {
        let pad_token = pad_token.unwrap_or(EOS);
        let id_of = |token: &str, role: &str| {
            vocab.get(token).copied().ok_or_else(|| {
                Error::Tokenizer(format!("the {role} token {token:?} is not in vocab.json; check the tokenizer folder's special tokens"))
            })
        };
        let bos_id = id_of(BOS, "bos")?;
        let eos_id = id_of(EOS, "eos")?;
        let pad_id = id_of(pad_token, "pad")?;

        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .fuse_unk(false)
            .unk_token(EOS.into())
            .build()
            .map_err(|e| {
                Error::Tokenizer(format!(
                    "vocab.json and merges.txt do not fit together: {e}"
                ))
            })?;

        let pipeline_error = |e: tokenizers::Error| {
            Error::Tokenizer(format!("building CLIP's pipeline failed: {e}"))
        };
        let whitespace =
            Replace::new(ReplacePattern::Regex(r"\s+".into()), " ").map_err(pipeline_error)?;
        let words = Split::new(
            SplitPattern::Regex(WORD_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(pipeline_error)?;

        let mut tokenizer = Tokenizer::new(model);
        tokenizer
            .with_normalizer(Some(NormalizerSequence::new(vec![
                NFC.into(),
                whitespace.into(),
                Lowercase.into(),
            ])))
            .with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
                words.into(),
                ByteLevel::new(false, true, true).into(),
            ])));
        // Matched in the raw prompt before normalization, like transformers' special tokens.
        let specials: Vec<AddedToken> = [BOS, EOS, pad_token]
            .iter()
            .map(|token| AddedToken::from(*token, true))
            .collect();
        tokenizer.add_special_tokens(&specials);

        Ok(ClipTokenizer {
            tokenizer,
            bos_id,
            eos_id,
            pad_id,
        })
    }
}

/// merges.txt: an optional `#version` line, then one `left right` pair per line, in rank order.
fn parse_merges(merges_txt: &str) -> Result<Merges, Error> {
    let mut merges = Merges::new();
    for (index, line) in merges_txt.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || (index == 0 && line.starts_with("#version")) {
            continue;
        }
        match line.split(' ').collect::<Vec<_>>()[..] {
            [left, right] if !left.is_empty() && !right.is_empty() => {
                merges.push((left.into(), right.into()))
            }
            _ => {
                return Err(Error::Tokenizer(format!(
                    "merges.txt line {} is not a `left right` pair: {line:?}; is it really CLIP's merges.txt?",
                    index + 1
                )));
            }
        }
    }
    if merges.is_empty() {
        return Err(Error::Tokenizer(
            "merges.txt has no merges; is it really CLIP's merges.txt?".into(),
        ));
    }
    Ok(merges)
}

/// A tokenizer.json merge: `"left right"` (older files) or `["left", "right"]` (newer ones).
fn json_merge(merge: &Value) -> Option<(String, String)> {
    match merge {
        Value::String(pair) => {
            let (left, right) = pair.split_once(' ')?;
            Some((left.into(), right.into()))
        }
        Value::Array(pair) => match &pair[..] {
            [Value::String(left), Value::String(right)] => Some((left.clone(), right.clone())),
            _ => None,
        },
        _ => None,
    }
}
