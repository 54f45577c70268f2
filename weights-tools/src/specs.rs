//! Built-in architecture specs: the published configs of SD 1.5, SD 2.1, SD-Turbo and SD 1.5
//! inpainting, and the benchmark's quarter-width SD 1.5 (UNet block_out_channels 80/160/320/320,
//! 16 norm groups, 57.4 M parameters; SD 1.5's text encoder and VAE), with the exact tensor
//! list diffusers saves for each (made by
//! `weights-tools/synth/make_specs.py`), and the real CLIP tokenizer files. `synth` writes
//! models from them; `convert` uses them as the configs of single-file checkpoints.

use std::collections::BTreeMap;

use sd_webgpu::Error;
use sd_webgpu::convert::{self, spec::parse_tensor_list};

pub struct Spec {
    pub family: &'static str,
    /// Config files by diffusers path.
    pub configs: [(&'static str, &'static str); 5],
    /// `component name d0,d1,...` lines.
    pub tensors: &'static str,
    /// SD 2.x tokenizers pad with "!", SD 1.x with the end token.
    pub sd2_tokenizer: bool,
}

macro_rules! spec {
    ($family:literal, $sd2:expr) => {
        Spec {
            family: $family,
            configs: [
                (
                    "model_index.json",
                    include_str!(concat!("../synth/", $family, "/model_index.json")),
                ),
                (
                    "text_encoder/config.json",
                    include_str!(concat!("../synth/", $family, "/text_encoder/config.json")),
                ),
                (
                    "unet/config.json",
                    include_str!(concat!("../synth/", $family, "/unet/config.json")),
                ),
                (
                    "vae/config.json",
                    include_str!(concat!("../synth/", $family, "/vae/config.json")),
                ),
                (
                    "scheduler/scheduler_config.json",
                    include_str!(concat!(
                        "../synth/",
                        $family,
                        "/scheduler/scheduler_config.json"
                    )),
                ),
            ],
            tensors: include_str!(concat!("../synth/", $family, "/tensors.txt")),
            sd2_tokenizer: $sd2,
        }
    };
}

pub const FAMILIES: [&str; 5] = ["sd15", "sd21", "turbo", "sd15-inpaint", "sd15-quarter"];

/// The built-in spec a single file of `family` ([`convert::ldm::builtin_family`]) converts
/// with.
pub fn single_file_spec(family: &str) -> Result<convert::Spec, Error> {
    spec(family)
        .ok_or_else(|| Error::BadInput(format!("no built-in spec for {family}")))?
        .parsed()
}

pub fn spec(family: &str) -> Option<Spec> {
    Some(match family {
        "sd15" => spec!("sd15", false),
        "sd21" => spec!("sd21", true),
        "turbo" => spec!("turbo", true),
        "sd15-inpaint" => spec!("sd15-inpaint", false),
        "sd15-quarter" => spec!("sd15-quarter", false),
        _ => return None,
    })
}

const VOCAB: &[u8] = include_bytes!("../../tests/fixtures/sd15-tiny/tokenizer/vocab.json");
const MERGES: &[u8] = include_bytes!("../../tests/fixtures/sd15-tiny/tokenizer/merges.txt");
const SD1_SPECIAL: &[u8] =
    include_bytes!("../../tests/fixtures/sd15-tiny/tokenizer/special_tokens_map.json");
const SD1_CONFIG: &[u8] =
    include_bytes!("../../tests/fixtures/sd15-tiny/tokenizer/tokenizer_config.json");
const SD2_SPECIAL: &[u8] =
    include_bytes!("../../tests/fixtures/sd2-tiny/tokenizer/special_tokens_map.json");
const SD2_CONFIG: &[u8] =
    include_bytes!("../../tests/fixtures/sd2-tiny/tokenizer/tokenizer_config.json");

impl Spec {
    #[cfg(test)]
    pub fn config_values(&self) -> BTreeMap<String, serde_json::Value> {
        self.configs
            .iter()
            .map(|(path, text)| {
                (
                    path.to_string(),
                    serde_json::from_str(text).expect("built-in configs are JSON"),
                )
            })
            .collect()
    }

    /// `(component, name, shape)` of every tensor, in diffusers' order.
    pub fn tensor_list(&self) -> Vec<(String, String, Vec<usize>)> {
        parse_tensor_list(self.tensors).expect("built-in tensor lists parse")
    }

    /// The spec as the crate's converter takes it.
    pub fn parsed(&self) -> Result<convert::Spec, Error> {
        let configs = self
            .configs
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect();
        convert::Spec::parse(self.family, &configs, self.tensors, self.tokenizer())
    }

    /// The tokenizer files by path (`tokenizer/vocab.json`).
    pub fn tokenizer(&self) -> BTreeMap<String, Vec<u8>> {
        let (special, config) = if self.sd2_tokenizer {
            (SD2_SPECIAL, SD2_CONFIG)
        } else {
            (SD1_SPECIAL, SD1_CONFIG)
        };
        [
            ("vocab.json", VOCAB),
            ("merges.txt", MERGES),
            ("special_tokens_map.json", special),
            ("tokenizer_config.json", config),
        ]
        .into_iter()
        .map(|(n, b)| (format!("tokenizer/{n}"), b.to_vec()))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page fetches a single file's spec from the files weights-tools/synth/single-file-specs.json
    /// names (scripts/build-wasm.py ships them): exactly the files embedded here, byte for byte.
    #[test]
    fn the_pages_spec_files_are_the_ones_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let list: serde_json::Value =
            serde_json::from_str(include_str!("../synth/single-file-specs.json")).unwrap();
        for family in convert::spec::SINGLE_FILE_FAMILIES {
            let spec = spec(family).unwrap();
            let mut embedded: BTreeMap<String, Vec<u8>> = spec.tokenizer();
            for (path, text) in spec.configs {
                embedded.insert(path.to_string(), text.as_bytes().to_vec());
            }
            embedded.insert("tensors.txt".into(), spec.tensors.as_bytes().to_vec());
            let listed: BTreeMap<String, Vec<u8>> = list[family]
                .as_object()
                .unwrap_or_else(|| panic!("{family} is not listed"))
                .iter()
                .map(|(path, file)| {
                    let file = root.join(file.as_str().unwrap());
                    (
                        path.clone(),
                        std::fs::read(&file).unwrap_or_else(|e| panic!("{file:?}: {e}")),
                    )
                })
                .collect();
            assert_eq!(
                listed.keys().collect::<Vec<_>>(),
                embedded.keys().collect::<Vec<_>>(),
                "{family}"
            );
            for (path, bytes) in &listed {
                assert!(bytes == &embedded[path], "{family}: {path} differs");
            }
        }
    }

    #[test]
    fn specs_parse_and_configs_load() {
        for family in FAMILIES {
            let spec = spec(family).unwrap();
            let configs = spec.config_values();
            convert::input::check_configs(&configs, family).unwrap();
            let parsed = spec.parsed().unwrap();
            assert_eq!(parsed.configs, configs);
            let list = spec.tensor_list();
            assert!(list.len() > 1000, "{family}");
            let params: usize = list
                .iter()
                .map(|(_, _, s)| s.iter().product::<usize>())
                .sum();
            // The published ones are over a billion parameters; the quarter model's UNet is
            // 57.4 M of its 264 M.
            let least = if family == "sd15-quarter" {
                260_000_000
            } else {
                1_000_000_000
            };
            assert!(params > least, "{family}: {params}");
        }
    }
}
