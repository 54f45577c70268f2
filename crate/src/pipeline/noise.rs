//! Seeded Gaussian noise that is the same on every platform, so a seed gives the same image
//! natively and in the browser.

/// Deterministic, platform-independent Gaussian noise: the same seed gives the same values
/// natively and in the browser.
///
/// Counter-based: value `i` of stream `s` depends only on `(seed, s, i)`. Stream 0 is the
/// initial latents; stream `1 + k` the noise of denoising step `k`. Each value is drawn by
/// Marsaglia's polar method from two uniforms in (−1, 1) made by SplitMix64 mixing of
/// `(seed, stream, index, attempt)`; rejected pairs retry with the next attempt. The
/// logarithm is computed here with f64 `+ − × ÷` only ([`ln`]) and `sqrt` is exactly
/// rounded by IEEE 754, so no platform libm is involved.
#[derive(Clone, Copy, Debug)]
pub struct Noise {
    seed: u64,
}

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise { seed }
    }

    /// `count` unit Gaussian values of `stream`.
    pub fn normal(&self, stream: u64, count: usize) -> Vec<f32> {
        (0..count as u64).map(|i| self.value(stream, i)).collect()
    }

    fn value(&self, stream: u64, index: u64) -> f32 {
        let base =
            mix(mix(self.seed ^ 0x5D58_8B65_6C07_8965).wrapping_add(stream)).wrapping_add(index);
        let mut attempt = 0u64;
        loop {
            let r = mix(base ^ mix(attempt.wrapping_add(0x2545_F491_4F6C_DD1D)));
            let u = ((r >> 32) as f64 + 0.5) / 4294967296.0 * 2.0 - 1.0; // (−1, 1)
            let v = ((r & 0xFFFF_FFFF) as f64 + 0.5) / 4294967296.0 * 2.0 - 1.0;
            let s = u * u + v * v;
            if s < 1.0 && s > 0.0 {
                return (u * (-2.0 * ln(s) / s).sqrt()) as f32;
            }
            attempt += 1;
        }
    }
}

/// SplitMix64's finaliser.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Natural logarithm of a positive, normal f64 using only exactly specified arithmetic:
/// `x = m·2^e` with `m` in [√½, √2), then `ln m = 2·atanh((m−1)/(m+1))` by its series.
fn ln(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000); // [1, 2)
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0); // |s| ≤ 0.172
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 40.0 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * LN2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_matches_std() {
        for x in [
            1e-300, 1e-10, 0.001, 0.3, 0.5, 0.7071, 1.0, 1.4142, 2.0, 3.7, 1e10,
        ] {
            let (a, b) = (ln(x), x.ln());
            assert!(
                (a - b).abs() <= 1e-15 * b.abs().max(1.0),
                "ln({x}) = {a}, std {b}"
            );
        }
    }

    #[test]
    fn noise_is_standard_normal_and_repeatable() {
        let noise = Noise::new(42);
        let a = noise.normal(0, 20000);
        assert_eq!(a, Noise::new(42).normal(0, 20000));
        assert_ne!(a[..16], Noise::new(43).normal(0, 16)[..]);
        assert_ne!(a[..16], noise.normal(1, 16)[..]);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean}, var {var}"
        );
        // Pinned values: any change to the generator changes every seeded image.
        let first: Vec<f32> = noise.normal(0, 3);
        let bits: Vec<u32> = first.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, [1072194509, 1054304713, 1058453571], "{first:?}");
    }
}
