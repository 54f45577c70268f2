//! `out (+)= beta · lhs · rhs` for the browser (wasm SIMD128), shaped like MLAS's wasm SGEMM
//! kernel (ONNX Runtime Web): rhs packed into panels of 16 columns, k in blocks that keep a
//! panel in L1, and a 2×16 microkernel with 8 f32x4 accumulators. gemm's own SIMD128 kernel
//! (12 accumulators, 3 lhs vectors, a broadcast: 16 live vectors) spends three quarters of the
//! CPU engine's time; V8 on x86 has 15 xmm registers to give it (docs/benchmarks.md).

use core::arch::wasm32::*;

/// Columns per packed panel: four f32x4.
const PANEL: usize = 16;
/// Rows of k per packed block: 256 × 16 f32 = 16 KiB, inside L1.
const K_BLOCK: usize = 256;

/// `out[r, n] = (accumulate ? out : 0) + beta · lhs[r, k] · rhs[k, n]`: rows of `out` `out_row`
/// apart (columns adjacent), rows of `lhs` `lhs_row` apart (columns adjacent), element
/// (kk, j) of `rhs` at `kk·rhs_row + j·rhs_col`.
///
/// # Safety
/// Every element addressed through the pointers and strides must lie inside its buffer.
pub unsafe fn sgemm(
    [r, n, k]: [usize; 3],
    (out, out_row): (*mut f32, usize),
    accumulate: bool,
    (lhs, lhs_row): (*const f32, usize),
    (rhs, rhs_col, rhs_row): (*const f32, usize, usize),
    beta: f32,
) {
    let mut packed = vec![0.0f32; K_BLOCK.min(k.max(1)) * PANEL];
    for first_col in (0..n).step_by(PANEL) {
        let cols = PANEL.min(n - first_col);
        for first_k in (0..k.max(1)).step_by(K_BLOCK) {
            let depth = K_BLOCK.min(k - first_k.min(k));
            // Pack rhs[first_k.., first_col..] row by row, zero past the last column.
            for kk in 0..depth {
                let row = &mut packed[kk * PANEL..][..PANEL];
                for (j, value) in row.iter_mut().enumerate() {
                    *value = match j < cols {
                        // SAFETY: the caller's promise (kk < k, first_col + j < n).
                        true => unsafe {
                            *rhs.add((first_k + kk) * rhs_row + (first_col + j) * rhs_col)
                        },
                        false => 0.0,
                    };
                }
            }
            // Only the first k block may start from zero.
            let add = accumulate || first_k > 0;
            let mut i = 0;
            while i < r {
                let rows = (r - i).min(2);
                // SAFETY: rows i, i + 1 < r of lhs (columns first_k.. + depth ≤ k) and of
                // out (columns first_col.. + cols ≤ n): the caller's promise.
                unsafe {
                    let a = lhs.add(i * lhs_row + first_k);
                    let o = out.add(i * out_row + first_col);
                    micro(
                        rows, cols, depth, &packed, a, lhs_row, o, out_row, add, beta,
                    );
                }
                i += rows;
            }
        }
    }
}

/// One or two rows of `out` (`rows`) times one packed panel: `cols` ≤ 16 columns written.
///
/// The eight accumulators are named locals, not an array, and the lhs values are loaded as
/// splats (`v128.load32_splat`): with an array LLVM parks the accumulators on wasm's stack
/// in linear memory, a round trip that cost as much as ten k steps per tile (1.6× slower at
/// attention's k = 10, 4–9 % at the convolutions' k). A single row is computed as two equal
/// ones, only the first written.
///
/// # Safety
/// `a` addresses `rows` rows of `depth` values `a_row` apart; `o` `rows` rows of `cols`
/// values `o_row` apart.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn micro(
    rows: usize,
    cols: usize,
    depth: usize,
    packed: &[f32],
    a: *const f32,
    a_row: usize,
    o: *mut f32,
    o_row: usize,
    add: bool,
    beta: f32,
) {
    let p = packed.as_ptr();
    // SAFETY: kk < depth ≤ the packed block's rows; the a reads are the caller's promise.
    unsafe {
        let a1 = if rows == 2 { a.add(a_row) } else { a };
        let zero = f32x4_splat(0.0);
        let (mut c00, mut c01, mut c02, mut c03) = (zero, zero, zero, zero);
        let (mut c10, mut c11, mut c12, mut c13) = (zero, zero, zero, zero);
        for kk in 0..depth {
            let b = p.add(kk * PANEL) as *const v128;
            let (b0, b1, b2, b3) = (
                v128_load(b),
                v128_load(b.add(1)),
                v128_load(b.add(2)),
                v128_load(b.add(3)),
            );
            let x0 = v128_load32_splat(a.add(kk) as *const u32);
            let x1 = v128_load32_splat(a1.add(kk) as *const u32);
            c00 = f32x4_add(c00, f32x4_mul(x0, b0));
            c01 = f32x4_add(c01, f32x4_mul(x0, b1));
            c02 = f32x4_add(c02, f32x4_mul(x0, b2));
            c03 = f32x4_add(c03, f32x4_mul(x0, b3));
            c10 = f32x4_add(c10, f32x4_mul(x1, b0));
            c11 = f32x4_add(c11, f32x4_mul(x1, b1));
            c12 = f32x4_add(c12, f32x4_mul(x1, b2));
            c13 = f32x4_add(c13, f32x4_mul(x1, b3));
        }
        let beta = f32x4_splat(beta);
        let acc = [[c00, c01, c02, c03], [c10, c11, c12, c13]];
        for (row, acc) in acc.iter().enumerate().take(rows) {
            let dst = o.add(row * o_row);
            if cols == PANEL {
                // A whole panel: four vector read-modify-writes.
                for (q, v) in acc.iter().enumerate() {
                    let at = dst.add(4 * q) as *mut v128;
                    let v = f32x4_mul(*v, beta);
                    v128_store(at, if add { f32x4_add(v128_load(at), v) } else { v });
                }
                continue;
            }
            let mut values = [0.0f32; PANEL];
            for (q, v) in acc.iter().enumerate() {
                v128_store(
                    values.as_mut_ptr().add(4 * q) as *mut v128,
                    f32x4_mul(*v, beta),
                );
            }
            for (j, v) in values.iter().enumerate().take(cols) {
                *dst.add(j) = match add {
                    true => *dst.add(j) + v,
                    false => *v,
                };
            }
        }
    }
}
