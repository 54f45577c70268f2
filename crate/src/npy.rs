//! Reading and writing float32 `.npy` files (NumPy's array format), for latents given on the
//! command line and for golden data from diffusers.

use crate::Error;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Parses a little-endian float32, C-order `.npy`. Returns the shape and the values.
pub fn read_f32(bytes: &[u8], what: &str) -> Result<(Vec<usize>, Vec<f32>), Error> {
    let bad = |why: &str| {
        Error::BadInput(format!(
            "{what}: {why}; expected a float32 .npy file (np.save of a float32 array)"
        ))
    };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not a .npy file"));
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown .npy version")),
    };
    let header = bytes
        .get(header_start..header_start.saturating_add(header_len))
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("header is cut short"))?;
    if !header.contains("'descr': '<f4'") {
        return Err(bad("array is not float32 ('<f4')"));
    }
    if header.contains("'fortran_order': True") {
        return Err(bad("array is in Fortran order"));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .ok_or_else(|| bad("header has no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad("shape is not a tuple of sizes"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| bad("shape overflows"))?;
    let data = &bytes[header_start + header_len..];
    if Some(data.len()) != count.checked_mul(4) {
        return Err(bad(&format!(
            "shape {shape:?} needs {count} values, the file holds {} bytes",
            data.len()
        )));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((shape, values))
}

/// Encodes a float32 C-order `.npy` (version 1.0).
pub fn write_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape_text}), }}");
    // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
    while (MAGIC.len() + 4 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = write_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
        assert_eq!(
            read_f32(&bytes, "x").unwrap(),
            (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5])
        );
        let one = write_f32(&[1], &[7.0]);
        assert_eq!(read_f32(&one, "x").unwrap(), (vec![1], vec![7.0]));
    }

    #[test]
    fn refuses_other_arrays() {
        let mut bytes = write_f32(&[2], &[1.0, 2.0]);
        bytes.pop();
        assert!(read_f32(&bytes, "x").is_err());
        let f8 = String::from_utf8_lossy(&write_f32(&[1], &[0.0])).replace("<f4", "<f8");
        assert!(read_f32(f8.as_bytes(), "x").is_err());
        assert!(read_f32(b"hello", "x").is_err());
    }
}
