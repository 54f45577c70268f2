//! A built-in architecture a single-file checkpoint converts with: the published diffusers
//! configs of SD 1.5, SD 1.5 inpainting or SD 2.1, the exact tensor list diffusers saves for
//! it, and the real CLIP tokenizer files.
//!
//! The crate does not embed them (the tokenizer alone is 1.5 MB, too much for the page's
//! wasm): the caller hands them in as text. `sd-weights` embeds them
//! (`weights-tools/src/specs.rs`, files under `weights-tools/synth/<family>/`); the browser
//! fetches them only when importing a checkpoint.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Error;
use crate::format::REQUIRED_CONFIGS;

/// The built-in families a single file can be: SD 1.5, SD 1.5 inpainting and SD 2.1
/// (which [`builtin_family`](super::ldm::builtin_family) picks from a header).
pub const SINGLE_FILE_FAMILIES: [&str; 3] = ["sd15", "sd15-inpaint", "sd21"];

/// One built-in architecture, parsed.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `sd15`, `sd15-inpaint`, `sd21`, ...
    pub family: String,
    /// The five configs by diffusers path ([`REQUIRED_CONFIGS`]).
    pub configs: BTreeMap<String, Value>,
    /// `(component, name, shape)` of every tensor, in diffusers' order.
    pub tensors: Vec<(String, String, Vec<usize>)>,
    /// Tokenizer files by path (`tokenizer/vocab.json`).
    pub tokenizer: BTreeMap<String, Vec<u8>>,
}

impl Spec {
    /// Parses a spec from its files: `configs` by path (each of [`REQUIRED_CONFIGS`], JSON
    /// text), `tensors` as `component name d0,d1,...` lines (`tensors.txt`), and the tokenizer
    /// files by path. [`Error::BadConfig`] naming the file when one is missing or malformed.
    pub fn parse(
        family: &str,
        configs: &BTreeMap<String, String>,
        tensors: &str,
        tokenizer: BTreeMap<String, Vec<u8>>,
    ) -> Result<Spec, Error> {
        let bad = |what: &str, why: String| {
            Error::BadConfig(format!("built-in {family} spec, {what}: {why}"))
        };
        let mut parsed = BTreeMap::new();
        for path in REQUIRED_CONFIGS {
            let text = configs
                .get(path)
                .ok_or_else(|| bad(path, "missing".into()))?;
            let value = serde_json::from_str(text)
                .map_err(|e| bad(path, format!("not valid JSON: {e}")))?;
            parsed.insert(path.to_string(), value);
        }
        Ok(Spec {
            family: family.to_string(),
            configs: parsed,
            tensors: parse_tensor_list(tensors).map_err(|why| bad("tensors.txt", why))?,
            tokenizer,
        })
    }
}

/// Parses `component name d0,d1,...` lines (a scalar has no third field).
pub fn parse_tensor_list(text: &str) -> Result<Vec<(String, String, Vec<usize>)>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut it = line.split(' ');
            let (Some(component), Some(name)) = (it.next(), it.next()) else {
                return Err(format!("line {line:?} is not `component name shape`"));
            };
            let shape = it
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| {
                    d.parse()
                        .map_err(|_| format!("line {line:?}: bad size {d:?}"))
                })
                .collect::<Result<Vec<usize>, String>>()?;
            Ok((component.to_string(), name.to_string(), shape))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_lists_parse_and_errors_name_the_line() {
        let list = parse_tensor_list("unet a.weight 4,3\nvae s\n\n").unwrap();
        assert_eq!(
            list,
            vec![
                ("unet".into(), "a.weight".into(), vec![4, 3]),
                ("vae".into(), "s".into(), vec![])
            ]
        );
        assert!(parse_tensor_list("unet").unwrap_err().contains("\"unet\""));
        assert!(
            parse_tensor_list("unet a 4,x")
                .unwrap_err()
                .contains("\"x\"")
        );
        let configs = BTreeMap::new();
        let err = Spec::parse("sd15", &configs, "", BTreeMap::new()).unwrap_err();
        assert!(
            err.to_string().contains("model_index.json: missing"),
            "{err}"
        );
    }
}
