//! Single-file checkpoints with the built-in specs, which live here (`crate::specs`): the
//! mapping of full-size LDM tensor lists and the configs diffusers loads for them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sd_webgpu::convert::Input;
use serde_json::Value;

use super::files::single_file;
use crate::specs;

/// A sparse safetensors file with the full-size LDM tensor list of a real checkpoint
/// (made by tests/fixtures/ldm/make_ldm_fixtures.py and checked there with diffusers'
/// converters): no data is read, only names and shapes are mapped.
fn sparse_checkpoint(list: &str, path: &Path) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for line in list.lines() {
        let mut it = line.split(' ');
        let (name, dtype, shape) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap_or(""),
        );
        let shape: Vec<usize> = shape
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| d.parse().unwrap())
            .collect();
        let bytes = shape.iter().product::<usize>() * if dtype == "I64" { 8 } else { 2 };
        header.insert(name.into(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    let json = serde_json::to_string(&header).unwrap();
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    let file = std::fs::File::create(path).unwrap();
    std::io::Write::write_all(&mut &file, &bytes).unwrap();
    file.set_len((bytes.len() + offset) as u64).unwrap();
}

/// The prediction type a converted model's scheduler config gives (absent: epsilon).
fn prediction_type(input: &Input) -> &str {
    input.configs["scheduler/scheduler_config.json"]["prediction_type"]
        .as_str()
        .unwrap_or("epsilon")
}

#[test]
fn full_size_checkpoints_map_to_diffusers_names_and_shapes() {
    let dir = std::env::temp_dir().join(format!("sd-weights-ldm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "sd15",
            include_str!("../../synth/sd15/ldm_tensors.txt"),
            "sd1",
            "epsilon",
        ),
        (
            "sd21",
            include_str!("../../synth/sd21/ldm_tensors.txt"),
            "sd2",
            "v_prediction",
        ),
        (
            "sd15-inpaint",
            include_str!("../../synth/sd15-inpaint/ldm_tensors.txt"),
            "sd1-inpaint",
            "epsilon",
        ),
    ];
    for (family, list, want_family, prediction) in cases {
        let path = dir.join(format!("{family}.safetensors"));
        sparse_checkpoint(list, &path);
        // single_file checks the mapped names and shapes against diffusers' list itself.
        let input = single_file(&path, None, None).unwrap_or_else(|e| panic!("{family}: {e}"));
        assert_eq!(input.family, want_family);
        let spec = specs::spec(family).unwrap();
        assert_eq!(input.tensors.len(), spec.tensor_list().len(), "{family}");
        assert_eq!(prediction_type(&input), prediction, "{family}");
        assert_eq!(
            input.configs["unet/config.json"],
            spec.config_values()["unet/config.json"],
            "{family}"
        );
        assert!(input.tokenizer.contains_key("tokenizer/vocab.json"));
        // The q/k/v split of OpenCLIP's in_proj: three consecutive thirds.
        if family == "sd21" {
            let q = input
                .tensors
                .iter()
                .find(|t| t.name == "text_model.encoder.layers.0.self_attn.q_proj.weight")
                .unwrap();
            let k = input
                .tensors
                .iter()
                .find(|t| t.name == "text_model.encoder.layers.0.self_attn.k_proj.weight")
                .unwrap();
            assert_eq!(
                (q.shape.clone(), k.start - q.start, q.len),
                (vec![1024, 1024], 1024 * 1024 * 2, 1024 * 1024 * 2)
            );
        }
        let input = single_file(&path, None, Some(family != "sd21")).unwrap();
        let want = if family == "sd21" {
            "epsilon"
        } else {
            "v_prediction"
        };
        assert_eq!(prediction_type(&input), want);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A config's fields as diffusers reads them: all but the private `_…` ones (versions,
/// `_sd_webgpu_defaults`), except `_class_name`, which picks the model's own scheduler.
fn read_fields(config: &Value) -> BTreeMap<String, Value> {
    let fields = config.as_object().expect("a JSON object");
    fields
        .iter()
        .filter(|(k, _)| !k.starts_with('_') || *k == "_class_name")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every field where `ours` and `reference` differ, one line each.
fn differences(ours: &BTreeMap<String, Value>, reference: &BTreeMap<String, Value>) -> Vec<String> {
    let keys: BTreeSet<&String> = ours.keys().chain(reference.keys()).collect();
    let show = |v: Option<&Value>| v.map_or("absent".to_string(), Value::to_string);
    keys.into_iter()
        .filter(|k| ours.get(*k) != reference.get(*k))
        .map(|k| {
            format!(
                "{k}: ours {}, diffusers {}",
                show(ours.get(k)),
                show(reference.get(k))
            )
        })
        .collect()
}

/// Issue 16: the configs a single file converts with are, field for field, those diffusers'
/// single-file loader gives it (tests/fixtures/single_file_configs, with their sources):
/// SD 1.5's lacked clip_sample false, so DDIM clipped x₀ to [-1, 1] at every step, and
/// carried a timestep_spacing the published one does not have. The same for the Turbo
/// spec, which `synth` uses.
#[test]
fn built_in_configs_are_those_diffusers_loads_for_single_files() {
    let dir = std::env::temp_dir().join(format!("sd-weights-ldm-configs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let reference = |name: &str| -> Value {
        let text = match name {
            "sd15" => include_str!("../../../tests/fixtures/single_file_configs/sd15.json"),
            "sd21-v" => include_str!("../../../tests/fixtures/single_file_configs/sd21-v.json"),
            "sd21-base" => {
                include_str!("../../../tests/fixtures/single_file_configs/sd21-base.json")
            }
            "sd15-inpaint" => {
                include_str!("../../../tests/fixtures/single_file_configs/sd15-inpaint.json")
            }
            "turbo" => include_str!("../../../tests/fixtures/single_file_configs/turbo.json"),
            _ => unreachable!(),
        };
        serde_json::from_str(text).unwrap()
    };
    // (LDM tensor list, --prediction-type, reference): an SD 2.x checkpoint is the 768-v
    // model unless --prediction-type epsilon marks it as a 512-pixel base model.
    let cases = [
        (
            "sd15",
            include_str!("../../synth/sd15/ldm_tensors.txt"),
            None,
            "sd15",
        ),
        (
            "sd15-inpaint",
            include_str!("../../synth/sd15-inpaint/ldm_tensors.txt"),
            None,
            "sd15-inpaint",
        ),
        (
            "sd21",
            include_str!("../../synth/sd21/ldm_tensors.txt"),
            None,
            "sd21-v",
        ),
        (
            "sd21",
            include_str!("../../synth/sd21/ldm_tensors.txt"),
            Some(false),
            "sd21-base",
        ),
    ];
    let mut failures = Vec::new();
    let mut compare = |what: &str, configs: &BTreeMap<String, Value>, reference: &Value| {
        for path in ["scheduler/scheduler_config.json", "model_index.json"] {
            let mut ours = read_fields(&configs[path]);
            let want = read_fields(&reference[path]);
            if path == "model_index.json" {
                // Only the pipeline and the five components we ship.
                ours.retain(|k, _| want.contains_key(k));
            }
            failures.extend(
                differences(&ours, &want)
                    .into_iter()
                    .map(|d| format!("{what} {path}: {d}")),
            );
        }
    };
    for (family, list, v_prediction, name) in cases {
        let path = dir.join(format!("{family}.safetensors"));
        sparse_checkpoint(list, &path);
        let input =
            single_file(&path, None, v_prediction).unwrap_or_else(|e| panic!("{name}: {e}"));
        compare(name, &input.configs, &reference(name));
    }
    compare(
        "turbo",
        &specs::spec("turbo").unwrap().config_values(),
        &reference("turbo"),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "built-in configs differ from diffusers':\n{}",
        failures.join("\n")
    );
}
