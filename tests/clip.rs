//! CLIP text encoder against transformers' CLIPTextModel on the tiny fixtures:
//! - sd15-tiny: quick_gelu, `text_model.`-prefixed keys as in SD 1.5 checkpoints;
//! - sd2-tiny: gelu (OpenCLIP's activation, as in SD 2.x);
//! - both with clip_skip 1 and 2 (A1111's meaning: the penultimate layer, then the final norm).

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{check_close, npy, weights};
use sd_webgpu::clip::{ClipTextConfig, ClipTextModel};
use sd_webgpu::{Device, read_f32};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

const TOL: f64 = 1e-4;

struct Case {
    config: &'static [u8],
    weights: &'static [u8],
    ids: &'static [u8],
    embeddings: &'static [u8],
    embeddings_skip2: &'static [u8],
}

const SD15: Case = Case {
    config: fixture!("sd15-tiny/text_encoder/config.json"),
    weights: fixture!("sd15-tiny/text_encoder/model.safetensors"),
    ids: fixture!("sd15-tiny/golden/prompt_ids.npy"),
    embeddings: fixture!("sd15-tiny/golden/text_embeddings.npy"),
    embeddings_skip2: fixture!("sd15-tiny/golden/text_embeddings_clip_skip2.npy"),
};

const SD2: Case = Case {
    config: fixture!("sd2-tiny/text_encoder/config.json"),
    weights: fixture!("sd2-tiny/text_encoder/model.safetensors"),
    ids: fixture!("sd2-tiny/golden/prompt_ids.npy"),
    embeddings: fixture!("sd2-tiny/golden/text_embeddings.npy"),
    embeddings_skip2: fixture!("sd2-tiny/golden/text_embeddings_clip_skip2.npy"),
};

fn load(case: &Case, device: &Device) -> ClipTextModel {
    let config = ClipTextConfig::from_json(std::str::from_utf8(case.config).unwrap()).unwrap();
    ClipTextModel::load(&weights(case.weights, device), &config).unwrap_or_else(|e| panic!("{e}"))
}

fn ids(case: &Case, device: &Device) -> Tensor<2, Int> {
    let (shape, values) = npy(case.ids);
    let ids: Vec<i64> = values.iter().map(|v| *v as i64).collect();
    Tensor::from_data(TensorData::new(ids, [shape[0], shape[1]]), device)
}

async fn run(case: &Case, device: &Device) -> Result<(), String> {
    let model = load(case, device);
    for (skip, golden) in [(1, case.embeddings), (2, case.embeddings_skip2)] {
        let got = model
            .forward(ids(case, device), skip)
            .map_err(|e| e.to_string())?;
        let got = read_f32(got).await.map_err(|e| e.to_string())?;
        check_close(
            &format!("text embeddings, clip_skip {skip}"),
            &got,
            &npy(golden).1,
            TOL,
        )?;
    }
    Ok(())
}

async fn sd15(device: &Device) -> Result<(), String> {
    run(&SD15, device).await
}

async fn sd2(device: &Device) -> Result<(), String> {
    run(&SD2, device).await
}

on_every_device! {
    sd15_text_encoder => super::sd15;
    sd2_text_encoder => super::sd2;
}

/// The wrong activation (quick_gelu for SD 2's gelu) must fail the golden comparison.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn wrong_activation_is_caught() {
    let device = sd_webgpu::device::cpu();
    let json = std::str::from_utf8(SD2.config)
        .unwrap()
        .replace("\"gelu\"", "\"quick_gelu\"");
    let config = ClipTextConfig::from_json(&json).unwrap();
    let model = ClipTextModel::load(&weights(SD2.weights, &device), &config).unwrap();
    let got = pollster::block_on(read_f32(model.forward(ids(&SD2, &device), 1).unwrap())).unwrap();
    assert!(check_close("wrong act", &got, &npy(SD2.embeddings).1, TOL).is_err());
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn bad_config_and_clip_skip_are_errors() {
    let json = std::str::from_utf8(SD15.config)
        .unwrap()
        .replace("\"quick_gelu\"", "\"relu\"");
    let err = ClipTextConfig::from_json(&json).unwrap_err().to_string();
    assert!(err.contains("hidden_act"), "{err}");

    let device = sd_webgpu::device::cpu();
    let model = load(&SD15, &device);
    for skip in [0, 5] {
        let err = model
            .forward(ids(&SD15, &device), skip)
            .unwrap_err()
            .to_string();
        assert!(err.contains("clip_skip"), "{err}");
    }
}
