//! The VAE (diffusers' AutoencoderKL) against diffusers on the sd15-tiny fixture
//! (block_out_channels [16, 32, 32, 32]: 8× downsampling, norm_num_groups 8, f16 weights):
//! encoding an image to the latent mean and decoding latents to an image. Also the sliced
//! attention that keeps the mid block's score matrix under the browser's buffer limit, config
//! validation, weight-name errors and legacy attention names, and that the comparison catches
//! typical VAE bugs.

mod common;

use common::{check_close, npy, npy_tensor, weights};
use sd_webgpu::vae::{AutoencoderKL, AutoencoderKLConfig};
use sd_webgpu::{Device, read_f32};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

const TOL: f64 = 1e-4;

const CONFIG: &[u8] = fixture!("sd15-tiny/vae/config.json");
const WEIGHTS: &[u8] = fixture!("sd15-tiny/vae/diffusion_pytorch_model.safetensors");
const IMAGE: &[u8] = fixture!("sd15-tiny/golden/vae_image.npy");
const LATENT_MEAN: &[u8] = fixture!("sd15-tiny/golden/vae_latent_mean.npy");
const LATENTS: &[u8] = fixture!("sd15-tiny/golden/vae_latents.npy");
const DECODED: &[u8] = fixture!("sd15-tiny/golden/vae_decoded.npy");

fn config() -> AutoencoderKLConfig {
    AutoencoderKLConfig::from_json(std::str::from_utf8(CONFIG).unwrap())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn load(device: &Device) -> AutoencoderKL {
    AutoencoderKL::load(&weights(WEIGHTS, device), &config()).unwrap_or_else(|e| panic!("{e}"))
}

/// The max abs error relative to the golden's scale, printed so runs show the margin.
fn report(what: &str, got: &[f32], want: &[f32]) {
    let scale = sd_webgpu::compare::max_abs(want);
    let err = sd_webgpu::compare::max_abs_diff(got, want);
    println!(
        "{what}: max abs error {err:.3e} (scale {scale:.3e}, relative {:.3e})",
        err / scale
    );
}

/// `vae.encode(image).latent_dist.mean`: [1, 3, 64, 64] -> [1, 4, 8, 8].
async fn encode(device: &Device) -> Result<(), String> {
    let vae = load(device);
    let mean = vae.encode_mean(npy_tensor(IMAGE, device));
    if mean.dims() != [1, 4, 8, 8] {
        return Err(format!(
            "latent mean has shape {:?}, want [1, 4, 8, 8]",
            mean.dims()
        ));
    }
    let got = read_f32(mean).await.map_err(|e| e.to_string())?;
    let want = npy(LATENT_MEAN).1;
    report("encode mean", &got, &want);
    check_close("encode mean", &got, &want, TOL)
}

/// `vae.decode(latents).sample`: [1, 4, 8, 8] -> [1, 3, 64, 64].
async fn decode(device: &Device) -> Result<(), String> {
    let vae = load(device);
    let image = vae.decode(npy_tensor(LATENTS, device));
    if image.dims() != [1, 3, 64, 64] {
        return Err(format!(
            "decoded image has shape {:?}, want [1, 3, 64, 64]",
            image.dims()
        ));
    }
    let got = read_f32(image).await.map_err(|e| e.to_string())?;
    let want = npy(DECODED).1;
    report("decode", &got, &want);
    check_close("decode", &got, &want, TOL)
}

/// A batch of two decodes (one image at a time inside) gives the same image twice.
async fn decode_batch(device: &Device) -> Result<(), String> {
    let vae = load(device);
    let z = npy_tensor::<4>(LATENTS, device);
    let image = vae.decode(burn::tensor::Tensor::cat(vec![z.clone(), z], 0));
    if image.dims() != [2, 3, 64, 64] {
        return Err(format!(
            "decoded batch has shape {:?}, want [2, 3, 64, 64]",
            image.dims()
        ));
    }
    let got = read_f32(image).await.map_err(|e| e.to_string())?;
    let want = npy(DECODED).1;
    let (first, second) = got.split_at(want.len());
    check_close("decode batch, image 0", first, &want, TOL)?;
    check_close("decode batch, image 1", second, &want, TOL)
}

/// Encoding and decoding in strips of one latent row each (a 1-byte budget: 8 strips at
/// this size) gives the golden outputs and what the whole-map path computes, to rounding:
/// the halo rows, the two-pass group norm over strips and the downsampling's bottom row are
/// right.
async fn strips(device: &Device) -> Result<(), String> {
    let vae = load(device);
    let image = npy_tensor::<4>(IMAGE, device);
    let latents = npy_tensor::<4>(LATENTS, device);
    let err = |e: sd_webgpu::Error| e.to_string();
    let mean_whole = read_f32(vae.encode_moments(image.clone()))
        .await
        .map_err(err)?;
    let mean_strips = read_f32(vae.encode_moments_in_strips(image, 1))
        .await
        .map_err(err)?;
    let decoded_whole = read_f32(vae.decode(latents.clone())).await.map_err(err)?;
    let decoded_strips = read_f32(vae.decode_in_strips(latents, 1))
        .await
        .map_err(err)?;
    let want_mean = npy(LATENT_MEAN).1;
    report(
        "encode in strips",
        &mean_strips[..want_mean.len()],
        &want_mean,
    );
    check_close(
        "encode mean in strips",
        &mean_strips[..want_mean.len()],
        &want_mean,
        TOL,
    )?;
    check_close("encode in strips vs whole", &mean_strips, &mean_whole, 1e-5)?;
    report("decode in strips", &decoded_strips, &npy(DECODED).1);
    check_close("decode in strips", &decoded_strips, &npy(DECODED).1, TOL)?;
    check_close(
        "decode in strips vs whole",
        &decoded_strips,
        &decoded_whole,
        1e-5,
    )?;
    // A size that is a multiple of 8 but of nothing larger (24×40 pixels, 3×5 latents): odd
    // strip counts and an odd number of latent rows.
    let odd = latents_odd(device);
    let whole = read_f32(vae.decode(odd.clone())).await.map_err(err)?;
    let strips = read_f32(vae.decode_in_strips(odd, 1)).await.map_err(err)?;
    check_close("24×40 decode in strips vs whole", &strips, &whole, 1e-5)?;
    let image = npy_tensor::<4>(IMAGE, device)
        .narrow(2, 0, 40)
        .narrow(3, 0, 24);
    let whole = read_f32(vae.encode_moments(image.clone()))
        .await
        .map_err(err)?;
    let strips = read_f32(vae.encode_moments_in_strips(image, 1))
        .await
        .map_err(err)?;
    check_close("24×40 encode in strips vs whole", &strips, &whole, 1e-5)
}

/// The golden latents' top-left 5 rows × 3 columns.
fn latents_odd(device: &Device) -> burn::tensor::Tensor<4> {
    npy_tensor::<4>(LATENTS, device)
        .narrow(2, 0, 5)
        .narrow(3, 0, 3)
}

on_every_device! {
    strips => super::strips;
    encode => super::encode;
    decode => super::decode;
    decode_batch => super::decode_batch;
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::sync::Arc;

    use sd_webgpu::Error;
    use sd_webgpu::safetensors::SafeTensors;
    use sd_webgpu::weights::{VarBuilder, WeightSource};

    use super::*;

    fn config_with(key: &str, value: serde_json::Value) -> Result<AutoencoderKLConfig, Error> {
        let mut json: serde_json::Value = serde_json::from_slice(CONFIG).unwrap();
        json[key] = value;
        AutoencoderKLConfig::from_json(&json.to_string())
    }

    fn assert_bad_config(key: &str, value: serde_json::Value) {
        match config_with(key, value.clone()) {
            Err(Error::BadConfig(why)) => {
                assert!(
                    why.contains(key),
                    "the error for {key} = {value} does not name it: {why}"
                )
            }
            other => panic!("{key} = {value} should be rejected as BadConfig, got {other:?}"),
        }
    }

    #[test]
    fn fixture_config_parses() {
        let c = config();
        assert_eq!(c.block_out_channels, [16, 32, 32, 32]);
        assert_eq!(
            (c.layers_per_block, c.latent_channels, c.norm_num_groups),
            (1, 4, 8)
        );
        assert_eq!(c.scaling_factor, 0.18215);
        assert!(c.use_quant_conv && c.use_post_quant_conv && c.mid_block_add_attention);
        assert_eq!(c.downscale_factor(), 8);
        // diffusers' defaults fill what a config leaves out.
        let minimal = AutoencoderKLConfig::from_json("{}").unwrap();
        assert_eq!(
            (minimal.block_out_channels, minimal.norm_num_groups),
            (vec![64], 32)
        );
        assert!(
            minimal.mid_block_add_attention
                && minimal.use_quant_conv
                && minimal.use_post_quant_conv
        );
    }

    #[test]
    fn unsupported_config_names_the_field() {
        use serde_json::json;
        assert_bad_config("act_fn", json!("gelu"));
        assert_bad_config(
            "down_block_types",
            json!([
                "DownEncoderBlock2D",
                "AttnDownEncoderBlock2D",
                "DownEncoderBlock2D",
                "DownEncoderBlock2D"
            ]),
        );
        assert_bad_config("up_block_types", json!(["UpDecoderBlock2D"]));
        assert_bad_config("shift_factor", json!(0.1159));
        assert_bad_config("latents_mean", json!([0.0, 0.0, 0.0, 0.0]));
        assert_bad_config("norm_num_groups", json!(5));
        assert_bad_config("_class_name", json!("AutoencoderTiny"));
        // A malformed file is BadConfig too, not a panic.
        assert!(matches!(
            AutoencoderKLConfig::from_json("{\"layers_per_block\": \"two\""),
            Err(Error::BadConfig(_))
        ));
    }

    /// A weight source that renames or hides tensors of the fixture.
    struct Edited {
        inner: SafeTensors,
        /// Maps a requested name to the fixture's name, or `None` to report it missing.
        map: fn(&str) -> Option<String>,
    }

    impl WeightSource for Edited {
        fn get(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>, Error> {
            match (self.map)(name) {
                Some(name) => self.inner.get(&name),
                None => Ok(None),
            }
        }
    }

    fn edited(map: fn(&str) -> Option<String>, device: &Device) -> VarBuilder {
        let inner = SafeTensors::from_bytes(WEIGHTS.to_vec(), "fixture").unwrap();
        VarBuilder::new(Arc::new(Edited { inner, map }), device)
    }

    #[test]
    fn missing_tensor_is_named() {
        let device = sd_webgpu::device::cpu();
        let vb = edited(
            |name| {
                (name != "decoder.up_blocks.3.resnets.0.conv_shortcut.weight")
                    .then(|| name.to_string())
            },
            &device,
        );
        match AutoencoderKL::load(&vb, &config()) {
            Err(Error::BadWeights(why)) => {
                assert!(
                    why.contains("decoder.up_blocks.3.resnets.0.conv_shortcut.weight"),
                    "{why}"
                )
            }
            other => panic!("a missing tensor should be BadWeights, got {other:?}"),
        }
    }

    /// Old VAE checkpoints name the attention weights query/key/value/proj_attn.
    #[test]
    fn legacy_attention_names_load() {
        let device = sd_webgpu::device::cpu();
        let vb = edited(
            |name| {
                const RENAMES: [(&str, &str); 4] = [
                    (".query.", ".to_q."),
                    (".key.", ".to_k."),
                    (".value.", ".to_v."),
                    (".proj_attn.", ".to_out.0."),
                ];
                for (old, new) in RENAMES {
                    if name.contains(new) {
                        return None; // a legacy file has no new names
                    }
                    if name.contains(old) {
                        return Some(name.replace(old, new));
                    }
                }
                Some(name.to_string())
            },
            &device,
        );
        let vae = AutoencoderKL::load(&vb, &config()).unwrap_or_else(|e| panic!("{e}"));
        let got =
            pollster::block_on(read_f32(vae.encode_mean(npy_tensor(IMAGE, &device)))).unwrap();
        check_close("encode mean, legacy names", &got, &npy(LATENT_MEAN).1, TOL).unwrap();
    }

    /// The comparison must catch typical VAE bugs: decoding latents scaled once more by
    /// 1 / scaling_factor, and encoding to the log-variance half instead of the mean.
    #[test]
    fn typical_vae_bugs_are_caught() {
        let device = sd_webgpu::device::cpu();
        let vae = load(&device);

        let z = npy_tensor::<4>(LATENTS, &device);
        let twice = vae.decode(z.div_scalar(vae.scaling_factor()));
        let got = pollster::block_on(read_f32(twice)).unwrap();
        assert!(check_close("decode, scaled twice", &got, &npy(DECODED).1, TOL).is_err());

        let moments = vae.encode_moments(npy_tensor(IMAGE, &device));
        let [_, c, _, _] = moments.dims();
        assert_eq!(c, 8);
        let logvar = pollster::block_on(read_f32(moments.clone().narrow(1, 4, 4))).unwrap();
        assert!(
            check_close(
                "encode, log-variance half",
                &logvar,
                &npy(LATENT_MEAN).1,
                TOL
            )
            .is_err()
        );
        // ... while the mean half passes, so the rejection is about the bug.
        let mean = pollster::block_on(read_f32(moments.narrow(1, 0, 4))).unwrap();
        assert!(check_close("encode, mean half", &mean, &npy(LATENT_MEAN).1, TOL).is_ok());
    }
}
