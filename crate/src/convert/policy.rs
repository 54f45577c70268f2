//! Which precision each tensor is stored at, and why.

use crate::format::Dtype;
use crate::format::quant::BLOCK;

/// Tensors with fewer values stay f16: quantizing them saves almost nothing.
pub const SMALL: usize = 4096;

/// The stored dtype of a tensor for the requested precision, and the reason when it differs.
pub fn choose(
    component: &str,
    name: &str,
    shape: &[usize],
    want: Dtype,
) -> (Dtype, Option<&'static str>) {
    if !want.is_quantized() {
        return (want, None);
    }
    let numel: usize = shape.iter().product();
    let inner = numel / shape.first().copied().unwrap_or(1).max(1);
    if shape.len() < 2 {
        return (
            Dtype::F16,
            Some("norms and biases (1-D): few values, and errors there shift whole channels"),
        );
    }
    if component == "text_encoder" && name.contains("embeddings.") {
        return (
            Dtype::F16,
            Some("token and position embeddings: looked up row by row, not multiplied; kept exact"),
        );
    }
    if numel < SMALL {
        return (
            Dtype::F16,
            Some("small tensors (< 4096 values): quantizing saves nothing worth the error"),
        );
    }
    if !inner.is_multiple_of(BLOCK) {
        return (
            Dtype::F16,
            Some("inner size not a multiple of 32: does not split into quantization blocks"),
        );
    }
    if component == "unet" && (name.starts_with("conv_in.") || name.starts_with("conv_out.")) {
        return (
            Dtype::F16,
            Some(
                "the UNet's first and last convolutions: tiny, and they touch the latents directly",
            ),
        );
    }
    if component == "vae" && want == Dtype::Q4 {
        return (
            Dtype::Q8,
            Some(
                "VAE weights at q8: 4-bit errors show up directly as pixel noise; under 8% of the model",
            ),
        );
    }
    (want, None)
}

/// f32 instead of `dtype` when some of `values` are beyond what `dtype` stores finitely
/// ([`Dtype::max_abs`]: f16's 65504, or the f16 block scales of q8 / q4), with the reason;
/// `None` when they all fit. One value of 10⁷ in a weight would otherwise give an infinite
/// q8 / q4 block scale, and NaN images.
pub fn widen_for_range(dtype: Dtype, values: &[f32]) -> Option<(Dtype, &'static str)> {
    let max = dtype.max_abs();
    if values.iter().all(|v| v.abs() <= max) {
        return None;
    }
    let reason = match dtype {
        Dtype::Q8 => {
            "values beyond q8's range (its f16 block scale, absmax / 127, would overflow): kept f32"
        }
        Dtype::Q4 => {
            "values beyond q4's range (its f16 block scale, absmax / 8, would overflow): kept f32"
        }
        _ => "values beyond f16's range: kept f32",
    };
    Some((Dtype::F32, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert_eq!(
            choose("unet", "a.weight", &[320, 320], Dtype::Q4).0,
            Dtype::Q4
        );
        assert_eq!(
            choose("unet", "a.weight", &[320, 320, 3, 3], Dtype::Q8).0,
            Dtype::Q8
        );
        assert_eq!(choose("unet", "a.bias", &[320], Dtype::Q4).0, Dtype::F16);
        assert_eq!(
            choose("unet", "conv_in.weight", &[320, 4, 3, 3], Dtype::Q4).0,
            Dtype::F16
        );
        assert_eq!(
            choose("unet", "conv_out.weight", &[4, 320, 3, 3], Dtype::Q4).0,
            Dtype::F16
        );
        assert_eq!(
            choose("vae", "x.weight", &[512, 512, 3, 3], Dtype::Q4).0,
            Dtype::Q8
        );
        assert_eq!(
            choose(
                "text_encoder",
                "text_model.embeddings.token_embedding.weight",
                &[49408, 768],
                Dtype::Q4
            )
            .0,
            Dtype::F16
        );
        assert_eq!(
            choose("unet", "x.weight", &[8, 32], Dtype::Q4).0,
            Dtype::F16
        );
        assert_eq!(
            choose("unet", "x.weight", &[1000, 37], Dtype::Q4).0,
            Dtype::F16
        );
        assert_eq!(
            choose("unet", "x.weight", &[10, 10], Dtype::F32),
            (Dtype::F32, None)
        );
    }

    #[test]
    fn values_beyond_the_range_widen_to_f32() {
        let mut v = vec![0.5f32; 64];
        for dtype in [Dtype::F32, Dtype::F16, Dtype::Q8, Dtype::Q4] {
            assert_eq!(widen_for_range(dtype, &v), None);
        }
        // 10^6 fits q8 (scale 7874) but not q4 (125000) or f16; 10^7 fits only f32.
        v[7] = -1e6;
        assert_eq!(widen_for_range(Dtype::Q8, &v), None);
        assert_eq!(widen_for_range(Dtype::Q4, &v).unwrap().0, Dtype::F32);
        assert!(widen_for_range(Dtype::F16, &v).unwrap().1.contains("f16"));
        v[7] = 1e7;
        assert!(widen_for_range(Dtype::Q8, &v).unwrap().1.contains("q8"));
        assert_eq!(widen_for_range(Dtype::F32, &v), None);
    }
}
