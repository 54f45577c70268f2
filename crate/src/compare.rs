//! Comparing computed values with expected ones: the device self-check and every test use
//! these. A plain `fold(0.0, f32::max)` drops NaN (IEEE 754 `maxNum` returns the other
//! operand), so a kernel that returns NaN would pass; here a value that is not finite makes
//! the result infinite, which fails every bound.

/// Largest `|got[i] - want[i]|`, in f64; infinite where a value is NaN or infinite or the
/// lengths differ.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).abs())
        .fold(0.0, worse)
}

/// Largest magnitude in `values` (0 for none); infinite where one is not finite.
pub fn max_abs(values: &[f32]) -> f64 {
    values.iter().map(|&v| (v as f64).abs()).fold(0.0, worse)
}

/// The larger of two differences, a non-finite one counting as infinite.
fn worse(a: f64, b: f64) -> f64 {
    if !b.is_finite() {
        f64::INFINITY
    } else {
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_infinity_fail() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.0, 2.5]), 0.5);
        assert_eq!(max_abs_diff(&[f32::NAN, 2.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[1.0, f32::NAN], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.0, f32::NAN]), f64::INFINITY);
        assert_eq!(
            max_abs_diff(&[f32::INFINITY], &[f32::INFINITY]),
            f64::INFINITY
        );
        assert_eq!(max_abs_diff(&[1.0], &[1.0, 2.0]), f64::INFINITY);
        // What the old fold did: NaN dropped, 0 reported.
        assert_eq!([f32::NAN].iter().fold(0f32, |m, &v| m.max(v)), 0.0);
        assert_eq!(max_abs(&[-3.0, 2.0]), 3.0);
        assert_eq!(max_abs(&[f32::NAN]), f64::INFINITY);
        assert_eq!(max_abs(&[]), 0.0);
    }
}
