//! The UNet against diffusers' `UNet2DConditionModel` (0.42) on the tiny fixtures made by
//! `tests/fixtures/make_fixtures.py`: one call with CFG batch 2 on 8×8 latents. Which
//! fixture exercises which config knob:
//!
//! | knob                                              | sd15-tiny | sd2-tiny  | sd15-inpaint-tiny |
//! | ------------------------------------------------- | --------- | --------- | ----------------- |
//! | down/up blocks: CrossAttn*, DownBlock2D/UpBlock2D | 3 levels  | 3 levels  | 2 levels          |
//! | block_out_channels                                | 32,64,64  | 32,64,64  | 32,64             |
//! | layers_per_block                                  | 2         | 2         | 1                 |
//! | attention_head_dim (legacy: heads per block)      | 8 (int)   | [2,4,8]   | 4 (int)           |
//! | use_linear_projection (proj_in/out as Linear)     | false     | true      | false             |
//! | upcast_attention                                  | false     | true      | false             |
//! | norm_num_groups                                   | 8         | 4         | 16                |
//! | norm_eps                                          | 1e-5      | 1e-5      | 1e-6              |
//! | in_channels                                       | 4         | 4         | 9 (inpainting)    |
//! | flip_sin_to_cos / freq_shift                      | true / 0  | true / 0  | false / 1         |
//! | time_cond_proj_dim (LCM, timestep_cond)           | 16        | -         | -                 |
//! | cross_attention_dim, downsample_padding,          | 32, 1, 1  | 32, 1, 1  | 32, 1, 1          |
//! |   mid_block_scale_factor                          |           |           |                   |
//!
//! Natively only: a flipped `flip_sin_to_cos` or a dropped `timestep_cond` must fail the
//! golden comparison; unsupported config values are `BadConfig` naming the field; a missing
//! tensor is an error naming it.

mod common;

use common::{check_close, npy, npy_tensor, weights};
use sd_webgpu::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use sd_webgpu::{Device, Tensor, read_f32};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

const TOL: f64 = 1e-4;

struct Case {
    name: &'static str,
    config: &'static [u8],
    weights: &'static [u8],
    latents: &'static [u8],
    timestep: &'static [u8],
    text: &'static [u8],
    timestep_cond: Option<&'static [u8]>,
    out: &'static [u8],
}

const SD15: Case = Case {
    name: "sd15-tiny",
    config: fixture!("sd15-tiny/unet/config.json"),
    weights: fixture!("sd15-tiny/unet/diffusion_pytorch_model.safetensors"),
    latents: fixture!("sd15-tiny/golden/unet_latents.npy"),
    timestep: fixture!("sd15-tiny/golden/unet_timestep.npy"),
    text: fixture!("sd15-tiny/golden/text_embeddings.npy"),
    timestep_cond: Some(fixture!("sd15-tiny/golden/unet_timestep_cond.npy")),
    out: fixture!("sd15-tiny/golden/unet_out.npy"),
};

const SD2: Case = Case {
    name: "sd2-tiny",
    config: fixture!("sd2-tiny/unet/config.json"),
    weights: fixture!("sd2-tiny/unet/diffusion_pytorch_model.safetensors"),
    latents: fixture!("sd2-tiny/golden/unet_latents.npy"),
    timestep: fixture!("sd2-tiny/golden/unet_timestep.npy"),
    text: fixture!("sd2-tiny/golden/text_embeddings.npy"),
    timestep_cond: None,
    out: fixture!("sd2-tiny/golden/unet_out.npy"),
};

const INPAINT: Case = Case {
    name: "sd15-inpaint-tiny",
    config: fixture!("sd15-inpaint-tiny/unet/config.json"),
    weights: fixture!("sd15-inpaint-tiny/unet/diffusion_pytorch_model.safetensors"),
    latents: fixture!("sd15-inpaint-tiny/golden/unet_latents.npy"),
    timestep: fixture!("sd15-inpaint-tiny/golden/unet_timestep.npy"),
    text: fixture!("sd15-inpaint-tiny/golden/text_embeddings.npy"),
    timestep_cond: None,
    out: fixture!("sd15-inpaint-tiny/golden/unet_out.npy"),
};

fn config(case: &Case) -> UNet2DConditionConfig {
    UNet2DConditionConfig::from_json(std::str::from_utf8(case.config).unwrap())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `case` with `config` (possibly edited), with or without its `timestep_cond`.
async fn run_with(
    case: &Case,
    config: &UNet2DConditionConfig,
    use_cond: bool,
    device: &Device,
) -> Result<(), String> {
    let model = UNet2DConditionModel::load(&weights(case.weights, device), config)
        .map_err(|e| e.to_string())?;
    let latents: Tensor<4> = npy_tensor(case.latents, device);
    let batch = latents.dims()[0];
    // The fixture holds one timestep for the whole batch; diffusers broadcasts it.
    let timestep = vec![npy(case.timestep).1[0]; batch];
    let text: Tensor<3> = npy_tensor(case.text, device);
    let cond = case
        .timestep_cond
        .filter(|_| use_cond)
        .map(|c| npy_tensor::<2>(c, device));
    let got = model
        .forward(latents, &timestep, text, cond)
        .map_err(|e| e.to_string())?;
    let got = read_f32(got).await.map_err(|e| e.to_string())?;
    let want = npy(case.out).1;
    // Shown with --nocapture: how close we are, relative to the output's scale.
    let scale = sd_webgpu::compare::max_abs(&want);
    let worst = sd_webgpu::compare::max_abs_diff(&got, &want);
    let msg = format!(
        "{}: max abs error {worst:.2e} = {:.2e} x scale {scale:.3}",
        case.name,
        worst / scale
    );
    #[cfg(target_arch = "wasm32")]
    wasm_bindgen_test::console_log!("{msg}");
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{msg}");
    check_close(&format!("{} UNet output", case.name), &got, &want, TOL)
}

async fn run(case: &Case, device: &Device) -> Result<(), String> {
    run_with(case, &config(case), true, device).await
}

async fn sd15(device: &Device) -> Result<(), String> {
    run(&SD15, device).await
}

async fn sd2(device: &Device) -> Result<(), String> {
    run(&SD2, device).await
}

async fn inpaint(device: &Device) -> Result<(), String> {
    run(&INPAINT, device).await
}

on_every_device! {
    sd15_unet => super::sd15;
    sd2_unet => super::sd2;
    sd15_inpaint_unet => super::inpaint;
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::sync::Arc;

    use sd_webgpu::Error;
    use sd_webgpu::safetensors::SafeTensors;
    use sd_webgpu::weights::{VarBuilder, WeightSource};
    use serde_json::{Value, json};

    use super::*;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        pollster::block_on(f)
    }

    /// The golden comparison must catch typical bugs, or passing it proves little.
    #[test]
    fn flipped_sin_cos_is_caught() {
        let device = sd_webgpu::device::cpu();
        let mut config = config(&SD15);
        config.flip_sin_to_cos = !config.flip_sin_to_cos;
        let result = block_on(run_with(&SD15, &config, true, &device));
        assert!(
            result.is_err(),
            "a flipped flip_sin_to_cos passed the golden test"
        );
    }

    #[test]
    fn dropped_timestep_cond_is_caught() {
        let device = sd_webgpu::device::cpu();
        let result = block_on(run_with(&SD15, &config(&SD15), false, &device));
        assert!(
            result.is_err(),
            "dropping LCM's timestep_cond passed the golden test"
        );
    }

    /// `key = value` in sd15-tiny's config.json, parsed.
    fn with(key: &str, value: Value) -> Result<UNet2DConditionConfig, Error> {
        let mut json: Value = serde_json::from_slice(SD15.config).unwrap();
        json[key] = value;
        UNet2DConditionConfig::from_json(&json.to_string())
    }

    #[test]
    fn unsupported_config_values_name_the_field() {
        let cases = [
            ("class_embed_type", json!("timestep")),
            ("num_class_embeds", json!(10)),
            ("addition_embed_type", json!("text_time")),
            ("encoder_hid_dim", json!(768)),
            ("encoder_hid_dim_type", json!("text_proj")),
            ("dual_cross_attention", json!(true)),
            ("only_cross_attention", json!(true)),
            ("only_cross_attention", json!([false, true, false])),
            ("transformer_layers_per_block", json!(2)),
            ("transformer_layers_per_block", json!([1, 2, 10])),
            ("resnet_time_scale_shift", json!("scale_shift")),
            ("time_embedding_type", json!("fourier")),
            ("time_embedding_act_fn", json!("silu")),
            ("timestep_post_act", json!("silu")),
            ("act_fn", json!("gelu")),
            ("conv_in_kernel", json!(1)),
            ("conv_out_kernel", json!(5)),
            ("center_input_sample", json!(true)),
            ("attention_type", json!("gated")),
            ("cross_attention_norm", json!("group_norm")),
            ("class_embeddings_concat", json!(true)),
            (
                "down_block_types",
                json!([
                    "CrossAttnDownBlock2D",
                    "SimpleCrossAttnDownBlock2D",
                    "DownBlock2D"
                ]),
            ),
            (
                "up_block_types",
                json!(["UpBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D"]),
            ),
            ("mid_block_type", json!("UNetMidBlock2DSimpleCrossAttn")),
            ("mid_block_type", Value::Null),
            ("cross_attention_dim", json!([32, 32, 32])),
            ("layers_per_block", json!([2, 2, 2])),
            ("num_attention_heads", json!(8)),
            ("norm_num_groups", Value::Null),
            ("attention_head_dim", json!([2, 4])),
            // Wrong types are named too.
            ("layers_per_block", json!("two")),
            ("attention_head_dim", json!("8")),
            ("use_linear_projection", json!(1)),
        ];
        for (field, value) in cases {
            match with(field, value.clone()) {
                Err(Error::BadConfig(msg)) => {
                    assert!(
                        msg.contains(field),
                        "{field} = {value}: the message does not name the field: {msg}"
                    );
                    eprintln!("{msg}");
                }
                other => panic!("{field} = {value}: expected BadConfig, got {other:?}"),
            }
        }
    }

    #[test]
    fn equivalent_spellings_are_accepted() {
        // Per-block lists that say the same as the scalar, and diffusers' "swish" for silu.
        for (field, value) in [
            ("transformer_layers_per_block", json!([1, 1, 1])),
            ("only_cross_attention", json!([false, false, false])),
            ("act_fn", json!("swish")),
            ("attention_head_dim", json!([8, 8, 8])),
        ] {
            with(field, value.clone()).unwrap_or_else(|e| panic!("{field} = {value}: {e}"));
        }
        // A config with only the architecture keys takes diffusers' defaults for the rest.
        let minimal = UNet2DConditionConfig::from_json("{}").unwrap();
        assert_eq!(minimal.block_out_channels, [320, 640, 1280, 1280]);
        assert!(minimal.flip_sin_to_cos);
    }

    /// A config whose heads do not fit the block width is refused when loading.
    #[test]
    fn too_many_heads_is_bad_config() {
        let device = sd_webgpu::device::cpu();
        let config = with("attention_head_dim", json!(40)).unwrap();
        match UNet2DConditionModel::load(&weights(SD15.weights, &device), &config) {
            Err(Error::BadConfig(msg)) => assert!(msg.contains("attention_head_dim"), "{msg}"),
            other => panic!("expected BadConfig, got {:?}", other.map(|_| ())),
        }
    }

    /// The fixture's weights with one tensor left out.
    struct Without {
        inner: SafeTensors,
        missing: &'static str,
    }

    impl WeightSource for Without {
        fn get(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>, Error> {
            if name == self.missing {
                Ok(None)
            } else {
                self.inner.get(name)
            }
        }
    }

    #[test]
    fn missing_tensor_is_named() {
        let device = sd_webgpu::device::cpu();
        for missing in [
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            "up_blocks.2.resnets.2.conv_shortcut.weight",
            "time_embedding.cond_proj.weight",
            "down_blocks.0.downsamplers.0.conv.bias",
        ] {
            let inner = SafeTensors::from_bytes(SD15.weights.to_vec(), "fixture").unwrap();
            assert!(
                inner.info(missing).is_some(),
                "{missing} is not in the fixture"
            );
            let vb = VarBuilder::new(Arc::new(Without { inner, missing }), &device);
            match UNet2DConditionModel::load(&vb, &config(&SD15)) {
                Err(Error::BadWeights(msg)) => assert!(msg.contains(missing), "{msg}"),
                other => panic!(
                    "{missing}: expected BadWeights, got {:?}",
                    other.map(|_| ())
                ),
            }
        }
    }

    #[test]
    fn latent_sizes_need_not_fit_the_downsamplings() {
        let device = sd_webgpu::device::cpu();
        let model =
            UNet2DConditionModel::load(&weights(SD15.weights, &device), &config(&SD15)).unwrap();
        assert_eq!(model.downsamplings(), 2);
        assert!(model.check_latent_size(8, 12).is_ok());
        assert!(model.check_latent_size(5, 3).is_ok());
        assert!(matches!(
            model.check_latent_size(0, 6),
            Err(Error::BadInput(_))
        ));
        // An odd size comes back at its own size: 5×3 -> 3×2 -> 2×1 and back.
        let out = model
            .forward(
                Tensor::<4>::zeros([1, 4, 5, 3], &device),
                &[0.0],
                Tensor::<3>::zeros([1, 77, 32], &device),
                Some(Tensor::<2>::zeros([1, 16], &device)),
            )
            .unwrap();
        assert_eq!(out.dims(), [1, 4, 5, 3]);
    }

    /// Inputs that do not fit the model are `BadInput` naming what is wrong, not a panic.
    #[test]
    fn mismatched_inputs_are_bad_input() {
        let device = sd_webgpu::device::cpu();
        let lcm =
            UNet2DConditionModel::load(&weights(SD15.weights, &device), &config(&SD15)).unwrap();
        let plain =
            UNet2DConditionModel::load(&weights(SD2.weights, &device), &config(&SD2)).unwrap();
        let zeros4 = |s: [usize; 4]| Tensor::<4>::zeros(s, &device);
        let t = || &[0.0f32][..];
        let text = |b: usize, d: usize| Tensor::<3>::zeros([b, 77, d], &device);
        let cond = |b: usize, d: usize| Some(Tensor::<2>::zeros([b, d], &device));
        let cases: [(&str, Result<Tensor<4>, Error>); 6] = [
            (
                "in_channels",
                lcm.forward(zeros4([1, 9, 8, 8]), t(), text(1, 32), cond(1, 16)),
            ),
            (
                "at least 1",
                lcm.forward(zeros4([1, 4, 8, 0]), t(), text(1, 32), cond(1, 16)),
            ),
            (
                "encoder_hidden_states",
                lcm.forward(zeros4([2, 4, 8, 8]), t(), text(1, 32), cond(1, 16)),
            ),
            (
                "cross_attention_dim",
                lcm.forward(zeros4([1, 4, 8, 8]), t(), text(1, 24), cond(1, 16)),
            ),
            (
                "time_cond_proj_dim = 16",
                lcm.forward(zeros4([1, 4, 8, 8]), t(), text(1, 32), cond(1, 8)),
            ),
            (
                "not an LCM model",
                plain.forward(zeros4([1, 4, 8, 8]), t(), text(1, 32), cond(1, 16)),
            ),
        ];
        for (what, got) in cases {
            match got {
                Err(Error::BadInput(msg)) => assert!(msg.contains(what), "{what}: {msg}"),
                other => panic!(
                    "{what}: expected BadInput, got {:?}",
                    other.map(|t| t.dims())
                ),
            }
        }
    }
}
