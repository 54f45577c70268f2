//! Floating-point operations of the networks, counted from their configs, as torch's
//! `torch.utils.flop_counter.FlopCounterMode` counts them, so that achieved FLOP/s can be
//! compared with other engines.
//!
//! The convention (torch's): a multiply-add is 2 FLOPs, and only these are counted —
//!
//! - a convolution, `2 · batch · h_out · w_out · c_out · c_in · k²` (bias ignored);
//! - a matrix product (`mm`, `addmm`, `bmm`, a linear layer) of `[m, k] · [k, n]`,
//!   `2 · m · k · n` (bias ignored);
//! - scaled dot-product attention over `n` queries and `m` keys of width `d` per head,
//!   `4 · batch · heads · n · m · d` (the two products `q·kᵀ` and `scores·v`).
//!
//! Norms, softmax, activations, the timestep's sines, upsampling and other pointwise work
//! count 0, as torch counts them. The figures are what diffusers' and transformers' modules
//! compute (`UNet2DConditionModel`, `AutoencoderKL.decode`, `CLIPTextModel`); our own code
//! computes the same products, with attention in slices ([`crate::ops::sliced_attention`])
//! that add up to the same count. `scripts/flops_reference.py` writes torch's counts for
//! the test fixtures to `tests/fixtures/flops_reference.json`, and the tests here hold these
//! functions equal to them, exactly.
//!
//! For SD 1.5 (`weights-tools/synth/sd15`): a UNet call with guidance (batch 2) is 0.36 TFLOP
//! at 256×256 and 1.61 TFLOP at 512×512; a VAE decode at 512×512 is 2.51 TFLOP.

use crate::clip::ClipTextConfig;
use crate::unet::UNet2DConditionConfig;
use crate::vae::AutoencoderKLConfig;

/// `[rows, d_in] · [d_in, d_out]`: `2 · rows · d_in · d_out`.
fn linear(rows: u64, d_in: u64, d_out: u64) -> u64 {
    2 * rows * d_in * d_out
}

/// A `k × k` convolution whose output is `batch × c_out × h_out × w_out`.
fn conv(batch: u64, c_in: u64, c_out: u64, k: u64, h_out: u64, w_out: u64) -> u64 {
    2 * batch * h_out * w_out * c_out * c_in * k * k
}

/// The output side of a 3×3 convolution with padding 1 and stride 2 (torch's rounding).
fn halved(side: u64) -> u64 {
    (side + 2 - 3) / 2 + 1
}

/// Scaled dot-product attention, `n` queries over `m` keys, `inner = heads · d` wide.
fn attention(batch: u64, n: u64, m: u64, inner: u64) -> u64 {
    4 * batch * n * m * inner
}

/// `ResnetBlock2D` on an `h × w` map: two 3×3 convs, the time embedding's projection (UNet
/// only, `temb` wide) and a 1×1 shortcut where the channel count changes.
fn resnet(batch: u64, c_in: u64, c_out: u64, temb: Option<u64>, h: u64, w: u64) -> u64 {
    let shortcut = if c_in != c_out {
        conv(batch, c_in, c_out, 1, h, w)
    } else {
        0
    };
    conv(batch, c_in, c_out, 3, h, w)
        + temb.map_or(0, |t| linear(batch, t, c_out))
        + conv(batch, c_out, c_out, 3, h, w)
        + shortcut
}

/// `Transformer2DModel` with one `BasicTransformerBlock` on an `h × w` map of `channels`,
/// `heads` heads of `channels / heads`, cross-attending to `tokens` tokens `cross_dim` wide:
/// `proj_in`, self-attention (q, k, v, out and the attention), cross-attention (q and out on
/// the pixels, k and v on the text), the GEGLU feed-forward (`inner → 8·inner`,
/// `4·inner → inner`) and `proj_out`. A 1×1 conv projection counts as the linear one.
fn transformer(
    batch: u64,
    channels: u64,
    heads: u64,
    h: u64,
    w: u64,
    tokens: u64,
    cross_dim: u64,
) -> u64 {
    let inner = heads * (channels / heads);
    let n = h * w;
    let rows = batch * n;
    let self_attention = 4 * linear(rows, inner, inner) + attention(batch, n, n, inner);
    let cross_attention = 2 * linear(rows, inner, inner)
        + 2 * linear(batch * tokens, cross_dim, inner)
        + attention(batch, n, tokens, inner);
    let feed_forward = linear(rows, inner, 8 * inner) + linear(rows, 4 * inner, inner);
    linear(rows, channels, inner)
        + self_attention
        + cross_attention
        + feed_forward
        + linear(rows, inner, channels)
}

/// FLOPs of one UNet call on `batch` latents of `latent_height × latent_width` with text of
/// `tokens` tokens (77 for SD): what the pipeline runs per denoising step, with `batch` 2
/// under classifier-free guidance. LCM-style UNets (`time_cond_proj_dim`) include the
/// guidance embedding's projection, which the pipeline always passes to them.
///
/// The latent sides must be multiples of `2^(blocks − 1)`, as the UNet requires
/// ([`crate::unet::UNet2DConditionModel::check_latent_size`]). `config` must have passed
/// [`UNet2DConditionConfig::validate`].
pub fn unet_call(
    config: &UNet2DConditionConfig,
    batch: u64,
    latent_height: u64,
    latent_width: u64,
    tokens: u64,
) -> u64 {
    let b = batch;
    let channels: Vec<u64> = config
        .block_out_channels
        .iter()
        .map(|&c| c as u64)
        .collect();
    let n = channels.len();
    let heads: Vec<u64> = config.heads_per_block().iter().map(|&h| h as u64).collect();
    let layers = config.layers() as u64;
    let cross = config.cross_dim() as u64;
    let c0 = channels[0];
    let temb = config.time_embed_dim() as u64;

    // Time embedding: [LCM's cond_proj], linear_1, linear_2.
    let mut total = config
        .time_cond_proj_dim
        .map_or(0, |d| linear(b, d as u64, c0));
    total += linear(b, c0, temb) + linear(b, temb, temb);

    let (mut h, mut w) = (latent_height, latent_width);
    total += conv(b, config.in_channels as u64, c0, 3, h, w); // conv_in
    for i in 0..n {
        let c_out = channels[i];
        for j in 0..layers {
            let c_in = if j == 0 && i > 0 {
                channels[i - 1]
            } else {
                c_out
            };
            total += resnet(b, c_in, c_out, Some(temb), h, w);
            if config.down_has_attention(i) {
                total += transformer(b, c_out, heads[i], h, w, tokens, cross);
            }
        }
        if i + 1 < n {
            (h, w) = (halved(h), halved(w));
            total += conv(b, c_out, c_out, 3, h, w); // the stride-2 downsampler
        }
    }

    let c_last = channels[n - 1];
    total += 2 * resnet(b, c_last, c_last, Some(temb), h, w)
        + transformer(b, c_last, heads[n - 1], h, w, tokens, cross);

    let mut prev_out = c_last;
    for i in 0..n {
        let c_out = channels[n - 1 - i];
        let skip_last = channels[(n - 1).saturating_sub(i + 1)];
        for j in 0..layers + 1 {
            let skip = if j == layers { skip_last } else { c_out };
            let c_in = if j == 0 { prev_out } else { c_out };
            total += resnet(b, c_in + skip, c_out, Some(temb), h, w);
            if config.up_has_attention(i) {
                total += transformer(b, c_out, heads[n - 1 - i], h, w, tokens, cross);
            }
        }
        if i + 1 < n {
            (h, w) = (2 * h, 2 * w);
            total += conv(b, c_out, c_out, 3, h, w); // the upsampler's conv after nearest ×2
        }
        prev_out = c_out;
    }
    total + conv(b, c0, config.out_channels as u64, 3, h, w) // conv_out
}

/// FLOPs of decoding `batch` latents of `latent_height × latent_width` with the VAE
/// (diffusers' `AutoencoderKL.decode`): `post_quant_conv`, the decoder's `conv_in`, its mid
/// block (two resnets and, with `mid_block_add_attention`, one single-head attention over
/// every latent pixel: q, k, v, out and the attention), the up blocks (`layers_per_block + 1`
/// resnets each, then nearest ×2 and a 3×3 conv but in the last) and `conv_out`. The image is
/// `downscale_factor` times larger on each side.
pub fn vae_decode(
    config: &AutoencoderKLConfig,
    batch: u64,
    latent_height: u64,
    latent_width: u64,
) -> u64 {
    let b = batch;
    let latent = config.latent_channels as u64;
    let reversed: Vec<u64> = config
        .block_out_channels
        .iter()
        .rev()
        .map(|&c| c as u64)
        .collect();
    let (mut h, mut w) = (latent_height, latent_width);
    let mut total = if config.use_post_quant_conv {
        conv(b, latent, latent, 1, h, w)
    } else {
        0
    };
    let c = reversed[0];
    total += conv(b, latent, c, 3, h, w); // conv_in
    total += 2 * resnet(b, c, c, None, h, w);
    if config.mid_block_add_attention {
        let n = h * w;
        total += 4 * linear(b * n, c, c) + attention(b, n, n, c);
    }
    let mut c_prev = c;
    for (i, &c_out) in reversed.iter().enumerate() {
        for j in 0..config.layers_per_block + 1 {
            let c_in = if j == 0 { c_prev } else { c_out };
            total += resnet(b, c_in, c_out, None, h, w);
        }
        if i + 1 < reversed.len() {
            (h, w) = (2 * h, 2 * w);
            total += conv(b, c_out, c_out, 3, h, w);
        }
        c_prev = c_out;
    }
    let c_first = config.block_out_channels[0] as u64;
    total + conv(b, c_first, config.out_channels as u64, 3, h, w) // conv_out
}

/// FLOPs of the CLIP text encoder on `batch` prompts of `tokens` tokens (77 for SD): per
/// layer q, k, v and out (`hidden → hidden`), the causal attention (counted over all
/// `tokens × tokens` scores, as torch counts it) and the MLP (`hidden → intermediate →
/// hidden`). The embeddings are lookups (0 FLOPs).
pub fn text_encoder(config: &ClipTextConfig, batch: u64, tokens: u64) -> u64 {
    let (hidden, intermediate) = (config.hidden_size as u64, config.intermediate_size as u64);
    let rows = batch * tokens;
    let layer = 4 * linear(rows, hidden, hidden)
        + attention(batch, tokens, tokens, hidden)
        + linear(rows, hidden, intermediate)
        + linear(rows, intermediate, hidden);
    config.num_hidden_layers as u64 * layer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The configs of a diffusers folder.
    fn configs(folder: &Path) -> (ClipTextConfig, UNet2DConditionConfig, AutoencoderKLConfig) {
        (
            ClipTextConfig::from_json(&read(&folder.join("text_encoder/config.json"))).unwrap(),
            UNet2DConditionConfig::from_json(&read(&folder.join("unet/config.json"))).unwrap(),
            AutoencoderKLConfig::from_json(&read(&folder.join("vae/config.json"))).unwrap(),
        )
    }

    fn field(v: &serde_json::Value, key: &str) -> u64 {
        v[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing in {v}"))
    }

    /// Every figure torch's FlopCounterMode gave for the fixtures (text encoder, UNet at
    /// batch 1 and 2 at two sizes, VAE decode at two sizes) is ours, exactly.
    #[test]
    fn counts_equal_torch_flop_counter() {
        let reference: serde_json::Value =
            serde_json::from_str(&read(&root().join("tests/fixtures/flops_reference.json")))
                .unwrap();
        let tokens = field(&reference, "text_tokens");
        let models = reference["models"].as_object().unwrap();
        assert_eq!(
            models.len(),
            4,
            "sd15-tiny, sd2-tiny, sd15-inpaint-tiny, shapes/model"
        );
        let mut checked = 0;
        for (name, figures) in models {
            let (text, unet, vae) = configs(&root().join("tests/fixtures").join(name));
            let f = vae.downscale_factor() as u64;
            let te = &figures["text_encoder"];
            assert_eq!(
                text_encoder(&text, field(te, "batch"), field(te, "tokens")),
                field(te, "flops"),
                "{name}: text encoder"
            );
            for row in figures["unet"].as_array().unwrap() {
                let (h, w, b) = (
                    field(row, "height") / f,
                    field(row, "width") / f,
                    field(row, "batch"),
                );
                assert_eq!(
                    unet_call(&unet, b, h, w, tokens),
                    field(row, "flops"),
                    "{name}: UNet {row}"
                );
                checked += 1;
            }
            for row in figures["vae_decode"].as_array().unwrap() {
                let (h, w) = (field(row, "height") / f, field(row, "width") / f);
                assert_eq!(
                    vae_decode(&vae, 1, h, w),
                    field(row, "flops"),
                    "{name}: VAE decode {row}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 4 * (4 + 2));
    }

    /// SD 1.5's figures (its published configs, as `sd-weights synth` writes them): a UNet
    /// step with guidance is 0.36 TFLOP at 256² and 1.61 at 512², a VAE decode at 512² 2.51.
    #[test]
    fn sd15_figures() {
        let (text, unet, vae) = configs(&root().join("weights-tools/synth/sd15"));
        let tflop = |flops: u64| flops as f64 / 1e12;
        let step_256 = tflop(unet_call(&unet, 2, 32, 32, 77));
        let step_512 = tflop(unet_call(&unet, 2, 64, 64, 77));
        let decode_512 = tflop(vae_decode(&vae, 1, 64, 64));
        assert!(
            (step_256 - 0.36).abs() < 0.005,
            "UNet CFG step at 256²: {step_256} TFLOP"
        );
        assert!(
            (step_512 - 1.61).abs() < 0.005,
            "UNet CFG step at 512²: {step_512} TFLOP"
        );
        assert!(
            (decode_512 - 2.51).abs() < 0.005,
            "VAE decode at 512²: {decode_512} TFLOP"
        );
        // Batch is linear; the text encoder is small beside them (~0.01 TFLOP per prompt).
        assert_eq!(
            unet_call(&unet, 2, 64, 64, 77),
            2 * unet_call(&unet, 1, 64, 64, 77)
        );
        assert!(tflop(text_encoder(&text, 1, 77)) < 0.02);
    }
}
