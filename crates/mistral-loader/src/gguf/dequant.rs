//! ggml block formats turned into f32, or into MLX affine quantization.
//!
//! Design notes:
//! - [`dequantize`] follows ggml's reference `dequantize_row_*`
//!   (ggml-quants.c; gguf-py's `gguf/quants.py` computes the same) for F32,
//!   F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and
//!   Q6_K. Every other type is an error naming it.
//! - Exactness: f16 scales are widened to f32 exactly, and every product
//!   ggml forms (an f16 times one or two small integers; the widest is
//!   Q6_K's 11 + 7 + 5 = 23 significant bits) fits f32's 24, so it is
//!   exact and can neither overflow nor underflow. The
//!   only rounding step is the final `+ m` / `- min` of the types with an
//!   offset, done in the same order and precision as ggml. The results are
//!   therefore bit-identical to ggml's and gguf-py's, whatever the
//!   evaluation order of the products or FMA contraction. (Checked bit for
//!   bit against gguf-py 0.19 and against ggml's C reference, built with and
//!   without FMA, on thousands of random blocks per type.)
//! - Byte layouts (little-endian; offsets within one block):
//!   - Q4_0 `d:f16 qs[16]`, Q4_1 `d m qs[16]`: byte `j` of `qs` holds
//!     element `j` in its low nibble and element `j + 16` in its high one.
//!   - Q5_0 `d qh[4] qs[16]`, Q5_1 `d m qh[4] qs[16]`: as Q4, plus bit `i`
//!     of the little-endian `u32` `qh` is bit 4 of element `i`.
//!   - Q8_0 `d qs[32]`, `qs` signed.
//!   - Q2_K `scales[16] qs[64] d dmin`: two halves of 128 elements; in half
//!     `h`, element `32 * s + l` (shift `s` = 0..4, `l` = 0..32) is bits
//!     `2s..2s+2` of `qs[32h + l]`; each 16 elements have a scale byte
//!     (low nibble: scale, high nibble: min), `x = d*sc*q - dmin*m`.
//!   - Q3_K `hmask[32] qs[64] scales[12] d`: low 2 bits as Q2_K; the third
//!     bit of element `128h + 32s + l` is bit `4h + s` of `hmask[l]`, and a
//!     CLEAR bit means `q - 4` (a set bit: `q`). The 16 six-bit scales:
//!     low 4 bits of scale `i` from `scales[i]` (i < 8) or the high nibble of
//!     `scales[i - 8]`, top 2 bits are bits `2*(i/4)..` of `scales[8 + i%4]`;
//!     the scale used is that value minus 32.
//!   - Q4_K `d dmin scales[12] qs[128]`, Q5_K `d dmin scales[12] qh[32]
//!     qs[128]`: 8 sub-blocks of 32 with a 6-bit scale and 6-bit min each
//!     (ggml's `get_scale_min_k4`); sub-blocks `2p` and `2p + 1` are the low
//!     and high nibbles of `qs[32p..32p + 32]`. For Q5_K the fifth bit of
//!     element `32k + l` is bit `k` of `qh[l]`.
//!   - Q6_K `ql[128] qh[64] scales[16]:i8 d`: two halves of 128; in half
//!     `h`, element `32k + l` takes its low 4 bits from `ql[64h + l]`
//!     (k = 0), `ql[64h + 32 + l]` (k = 1), or their high nibbles (k = 2, 3),
//!     and its top 2 bits from bits `2k..2k+2` of `qh[32h + l]`; `q - 32`,
//!     scale `scales[element / 16]`, `x = d * sc * q`.
//! - [`to_mlx_affine`] maps Q4_0, Q4_1, Q8_0 and Q4_K onto MLX's affine
//!   quantization (group size 32) without requantizing: MLX dequantizes
//!   `scale * q + bias` with unsigned `q`. Q4_0: `scale = d, bias = -8d`;
//!   Q4_1: `scale = d, bias = m`; Q8_0: `q ^ 0x80`, `scale = d,
//!   bias = -128d`; Q4_K: `scale = d*sc, bias = -(dmin*m)`, both formed in
//!   f32 exactly as ggml does. For Q4_1 and Q4_K MLX then performs the very
//!   operations ggml does (bit-identical). For Q4_0 and Q8_0,
//!   `d*q + (-8d)` is exact, so it equals ggml's `d*(q - 8)` except that a
//!   zero comes out as +0 where ggml may give -0 (negative `d`). Scales and
//!   biases must stay f32 for this: `d*sc` has up to 17 significant bits.
//! - MLX packing (bits 4 and 8): element `i` of a row is bits
//!   `(i*bits) % 32 ..` of `u32` word `(i*bits) / 32`, low bits first.
//! - Robustness: lengths are checked before anything is decoded, blocks are
//!   walked with `chunks_exact` and converted to fixed-size arrays, so no
//!   input can make these functions index out of bounds or panic. Errors are
//!   plain strings; callers add the file and tensor names.

use super::ggml_type::GgmlType;

/// MLX group size used by [`to_mlx_affine`].
const GROUP: usize = 32;

/// Dequantizes whole blocks: `data.len()` must be a multiple of
/// `ty.type_size()`, `out.len()` == blocks * `ty.block_size()`.
///
/// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K,
/// Q4_K, Q5_K, Q6_K. Results are bit-identical to ggml's reference
/// dequantization. Any other type is an error naming it.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), String> {
    use GgmlType as T;
    match ty {
        T::F32 => run::<4, 1>(ty, data, out, |b, y| y[0] = f32::from_le_bytes(*b)),
        T::F16 => run::<2, 1>(ty, data, out, |b, y| y[0] = f16_at(b, 0)),
        T::BF16 => run::<2, 1>(ty, data, out, |b, y| {
            y[0] = f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16)
        }),
        T::Q4_0 => run(ty, data, out, block_q4_0),
        T::Q4_1 => run(ty, data, out, block_q4_1),
        T::Q5_0 => run(ty, data, out, block_q5_0),
        T::Q5_1 => run(ty, data, out, block_q5_1),
        T::Q8_0 => run(ty, data, out, block_q8_0),
        T::Q2_K => run(ty, data, out, block_q2_k),
        T::Q3_K => run(ty, data, out, block_q3_k),
        T::Q4_K => run(ty, data, out, block_q4_k),
        T::Q5_K => run(ty, data, out, block_q5_k),
        T::Q6_K => run(ty, data, out, block_q6_k),
        _ => Err(unsupported(ty)),
    }
}

/// The MLX affine bit width `ty` maps onto exactly with group size 32, for
/// types kept quantized: Q4_0, Q4_1, Q4_K -> 4, Q8_0 -> 8; `None` otherwise.
pub fn affine_bits(ty: GgmlType) -> Option<i32> {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => Some(4),
        GgmlType::Q8_0 => Some(8),
        _ => None,
    }
}

/// Whether a tensor of a type [`affine_bits`] maps is kept quantized: a
/// matrix, or a stack of experts' matrices (3-D); others are dequantized.
pub fn kept_quantized(dims: &[u64]) -> bool {
    matches!(dims.len(), 2 | 3)
}

/// For one ROW of an affine-mappable type (`data` = that row's blocks,
/// `cols` elements): writes MLX's packed `uint32` weight (`cols * bits / 32`
/// words), and per group of 32 elements the scale and bias (`cols / 32`
/// each) such that `scale * q + bias` reproduces ggml's dequantized value.
///
/// `cols` must be a whole number of `ty`'s blocks and every length must
/// match exactly; otherwise (or for a type [`affine_bits`] rejects) an error.
pub fn to_mlx_affine(
    ty: GgmlType,
    data: &[u8],
    cols: usize,
    packed: &mut [u32],
    scales: &mut [f32],
    biases: &mut [f32],
) -> Result<(), String> {
    let bits =
        affine_bits(ty).ok_or_else(|| format!("ggml type {ty} has no exact MLX affine form"))?;
    let row_bytes = ty.row_bytes(cols).ok_or_else(|| {
        format!(
            "{ty} row of {cols} elements is not a whole number of {}-element blocks",
            ty.block_size()
        )
    })?;
    if data.len() != row_bytes {
        return Err(format!(
            "{ty} row of {cols} elements takes {row_bytes} bytes, got {}",
            data.len()
        ));
    }
    // bits is 4 or 8 and cols a multiple of 32: the division is exact.
    let words = cols / 32 * bits as usize;
    let groups = cols / GROUP;
    if packed.len() != words || scales.len() != groups || biases.len() != groups {
        return Err(format!(
            "{ty} row of {cols} elements needs {words} packed words and {groups} scales and \
             biases, got {}, {} and {}",
            packed.len(),
            scales.len(),
            biases.len()
        ));
    }
    match ty {
        GgmlType::Q4_0 => affine_row(data, packed, scales, biases, 4, affine_q4_0),
        GgmlType::Q4_1 => affine_row(data, packed, scales, biases, 4, affine_q4_1),
        GgmlType::Q8_0 => affine_row(data, packed, scales, biases, 8, affine_q8_0),
        GgmlType::Q4_K => affine_row(data, packed, scales, biases, 4, affine_q4_k),
        _ => return Err(format!("ggml type {ty} has no exact MLX affine form")),
    }
    Ok(())
}

fn unsupported(ty: GgmlType) -> String {
    format!("ggml type {ty} is not supported")
}

/// Checks the lengths, then decodes each `TS`-byte block into `BS` values.
fn run<const TS: usize, const BS: usize>(
    ty: GgmlType,
    data: &[u8],
    out: &mut [f32],
    block: fn(&[u8; TS], &mut [f32; BS]),
) -> Result<(), String> {
    if ty.type_size() != TS || ty.block_size() != BS {
        return Err(format!("internal error: {ty} geometry mismatch"));
    }
    if data.len() % TS != 0 {
        return Err(format!(
            "{ty} data of {} bytes is not a whole number of {TS}-byte blocks",
            data.len()
        ));
    }
    let blocks = data.len() / TS;
    if blocks.checked_mul(BS) != Some(out.len()) {
        return Err(format!(
            "{ty} data of {blocks} blocks holds {blocks} x {BS} values, but the output has \
             room for {}",
            out.len()
        ));
    }
    for (b, y) in data.chunks_exact(TS).zip(out.chunks_exact_mut(BS)) {
        // Both conversions succeed: chunks_exact yields exactly TS / BS items.
        if let (Ok(b), Ok(y)) = (<&[u8; TS]>::try_from(b), <&mut [f32; BS]>::try_from(y)) {
            block(b, y);
        }
    }
    Ok(())
}

/// One block's MLX codes, scales and biases; `G` = `BS / 32` groups.
type AffineBlock<const TS: usize, const BS: usize, const G: usize> =
    fn(&[u8; TS], &mut [u8; BS], &mut [f32; G], &mut [f32; G]);

/// Converts a row whose lengths [`to_mlx_affine`] has checked.
fn affine_row<const TS: usize, const BS: usize, const G: usize>(
    data: &[u8],
    packed: &mut [u32],
    scales: &mut [f32],
    biases: &mut [f32],
    bits: usize,
    block: AffineBlock<TS, BS, G>,
) {
    let words_per_block = BS * bits / 32;
    let blocks = data
        .chunks_exact(TS)
        .zip(packed.chunks_exact_mut(words_per_block))
        .zip(scales.chunks_exact_mut(G).zip(biases.chunks_exact_mut(G)));
    let mut codes = [0u8; BS];
    for ((b, words), (s, z)) in blocks {
        if let (Ok(b), Ok(s), Ok(z)) = (
            <&[u8; TS]>::try_from(b),
            <&mut [f32; G]>::try_from(s),
            <&mut [f32; G]>::try_from(z),
        ) {
            block(b, &mut codes, s, z);
            pack(&codes, bits, words);
        }
    }
}

/// Packs codes (each below `1 << bits`, `bits` 4 or 8) into `u32` words,
/// element `i` at bit `(i * bits) % 32` of word `(i * bits) / 32`.
fn pack(codes: &[u8], bits: usize, words: &mut [u32]) {
    for (word, chunk) in words.iter_mut().zip(codes.chunks_exact(32 / bits)) {
        *word = chunk
            .iter()
            .enumerate()
            .fold(0, |acc, (k, &c)| acc | u32::from(c) << (k * bits));
    }
}

/// The f16 at byte offset `at` of `b`, widened exactly to f32 (NaN payloads
/// kept, as numpy does).
fn f16_at(b: &[u8], at: usize) -> f32 {
    let h = match (b.get(at), b.get(at + 1)) {
        (Some(&lo), Some(&hi)) => u16::from_le_bytes([lo, hi]),
        _ => return f32::NAN,
    };
    f16_to_f32(h)
}

/// IEEE half to single, exact.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x03ff);
    let magnitude = match (exp, man) {
        (0, 0) => 0,
        // Subnormal: man * 2^-24, a normal f32.
        (0, _) => (man as f32 * f32::from_bits(0x3380_0000)).to_bits(),
        // Inf / NaN.
        (0x1f, _) => 0x7f80_0000 | (man << 13),
        _ => ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// Q4_0: `x = d * (q - 8)`.
fn block_q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = (i32::from(q & 0x0f) - 8) as f32 * d;
        y[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
    }
}

/// Q4_1: `x = d * q + m`.
fn block_q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = f32::from(q & 0x0f) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// The 5-bit codes of a Q5_0 / Q5_1 block: `qh` (4 bytes) at `h`, nibbles
/// (16 bytes) right after.
fn q5_codes(b: &[u8], h: usize) -> [u8; 32] {
    let mut qh = 0u32;
    for k in 0..4 {
        qh |= u32::from(b.get(h + k).copied().unwrap_or(0)) << (8 * k);
    }
    let mut q = [0u8; 32];
    for (j, &byte) in b.iter().skip(h + 4).take(16).enumerate() {
        let hi0 = ((qh >> j) & 1) as u8;
        let hi1 = ((qh >> (j + 16)) & 1) as u8;
        q[j] = (byte & 0x0f) | (hi0 << 4);
        q[j + 16] = (byte >> 4) | (hi1 << 4);
    }
    q
}

/// Q5_0: `x = d * (q - 16)`.
fn block_q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (y, q) in y.iter_mut().zip(q5_codes(b, 2)) {
        *y = (i32::from(q) - 16) as f32 * d;
    }
}

/// Q5_1: `x = d * q + m`.
fn block_q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for (y, q) in y.iter_mut().zip(q5_codes(b, 4)) {
        *y = f32::from(q) * d + m;
    }
}

/// Q8_0: `x = d * q`, `q` signed.
fn block_q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..]) {
        *y = f32::from(q as i8) * d;
    }
}

/// Q2_K: `x = (d * sc) * q - dmin * m`, one scale byte per 16 elements.
fn block_q2_k(b: &[u8; 84], y: &mut [f32; 256]) {
    let (scales, rest) = b.split_at(16);
    let qs = &rest[..64];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    // 16 outputs per chunk `c`: half `c / 8` (32 bytes each), shift
    // `2 * ((c % 8) / 2)`, bytes `16 * (c % 2)..` of that half.
    for (c, (y, &sc)) in y.chunks_exact_mut(16).zip(scales).enumerate() {
        let dl = d * f32::from(sc & 0x0f);
        let ml = dmin * f32::from(sc >> 4);
        let shift = 2 * ((c % 8) / 2);
        let q = qs.iter().skip(32 * (c / 8) + 16 * (c % 2));
        for (y, &q) in y.iter_mut().zip(q) {
            *y = dl * f32::from((q >> shift) & 3) - ml;
        }
    }
}

/// Q3_K: `x = (d * (sc - 32)) * (q - 4 * !hbit)`, 16 elements per scale.
fn block_q3_k(b: &[u8; 110], y: &mut [f32; 256]) {
    let (hmask, rest) = b.split_at(32);
    let (qs, rest) = rest.split_at(64);
    let scales = &rest[..12];
    let d = f16_at(b, 108);
    // Chunks of 16 as in Q2_K; the high bit is bit `4 * half + s` of
    // `hmask[16 * (c % 2)..]`.
    for (c, y) in y.chunks_exact_mut(16).enumerate() {
        let (half, s, sub) = (c / 8, (c % 8) / 2, c % 2);
        let low4 = if c < 8 {
            scales[c] & 0x0f
        } else {
            scales[c - 8] >> 4
        };
        let high2 = (scales[8 + c % 4] >> (2 * (c / 4))) & 3;
        let dl = d * (i32::from(low4 | (high2 << 4)) - 32) as f32;
        let q = qs.iter().skip(32 * half + 16 * sub);
        let h = hmask.iter().skip(16 * sub);
        let hbit = 4 * half + s;
        for (y, (&q, &h)) in y.iter_mut().zip(q.zip(h)) {
            let low = i32::from((q >> (2 * s)) & 3);
            let q = if (h >> hbit) & 1 != 0 { low } else { low - 4 };
            *y = dl * q as f32;
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K block
/// (ggml's `get_scale_min_k4`; `s` = the 12 scale bytes).
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    let at = |k: usize| s.get(k).copied().unwrap_or(0);
    if j < 4 {
        (at(j) & 63, at(j + 4) & 63)
    } else {
        (
            (at(j + 4) & 0x0f) | ((at(j - 4) >> 6) << 4),
            (at(j + 4) >> 4) | ((at(j) >> 6) << 4),
        )
    }
}

/// Per sub-block `(d * sc, dmin * m)` of a Q4_K / Q5_K block.
fn k4_scales(b: &[u8]) -> [(f32, f32); 8] {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = b.get(4..16).unwrap_or(&[]);
    let mut out = [(0f32, 0f32); 8];
    for (j, o) in out.iter_mut().enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        *o = (d * f32::from(sc), dmin * f32::from(m));
    }
    out
}

/// Q4_K: `x = (d * sc) * q - dmin * m` per sub-block of 32. Sub-blocks
/// `2p` and `2p + 1` are the low and high nibbles of bytes `32p..32p + 32`.
fn block_q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let dm = k4_scales(b);
    let pairs = y.chunks_exact_mut(64).zip(b[16..].chunks_exact(32));
    for ((y, qs), dm) in pairs.zip(dm.chunks_exact(2)) {
        let (lo, hi) = y.split_at_mut(32);
        let ((d1, m1), (d2, m2)) = (dm[0], dm[1]);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(qs) {
            *lo = d1 * f32::from(q & 0x0f) - m1;
            *hi = d2 * f32::from(q >> 4) - m2;
        }
    }
}

/// Q5_K: as Q4_K, plus bit 4 of element `32k + l` from bit `k` of `qh[l]`.
fn block_q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let dm = k4_scales(b);
    let qh = &b[16..48];
    let pairs = y.chunks_exact_mut(64).zip(b[48..].chunks_exact(32));
    for (p, ((y, qs), dm)) in pairs.zip(dm.chunks_exact(2)).enumerate() {
        let (lo, hi) = y.split_at_mut(32);
        let ((d1, m1), (d2, m2)) = (dm[0], dm[1]);
        for (((lo, hi), &q), &h) in lo.iter_mut().zip(hi).zip(qs).zip(qh) {
            let h1 = ((h >> (2 * p)) & 1) << 4;
            let h2 = ((h >> (2 * p + 1)) & 1) << 4;
            *lo = d1 * f32::from((q & 0x0f) | h1) - m1;
            *hi = d2 * f32::from((q >> 4) | h2) - m2;
        }
    }
}

/// Q6_K: `x = (d * sc) * (q - 32)`, 16 elements per signed scale.
fn block_q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let (ql, rest) = b.split_at(128);
    let (qh, rest) = rest.split_at(64);
    let scales = &rest[..16];
    let d = f16_at(b, 208);
    let halves = y.chunks_exact_mut(128).zip(ql.chunks_exact(64));
    for ((y, ql), (qh, sc)) in halves.zip(qh.chunks_exact(32).zip(scales.chunks_exact(8))) {
        // Element `32k + l` of the half: low 4 bits from `ql[32 * (k % 2) + l]`
        // (low nibble for k < 2, high for k >= 2), top 2 bits from bits
        // `2k..2k + 2` of `qh[l]`; chunk `c` of 16 uses `sc[c]`.
        for (c, (y, &s)) in y.chunks_exact_mut(16).zip(sc).enumerate() {
            let (k, off) = (c / 2, 16 * (c % 2));
            let ds = d * f32::from(s as i8);
            let lo = ql.iter().skip(32 * (k % 2) + off);
            let hi = qh.iter().skip(off);
            for (y, (&lo, &hi)) in y.iter_mut().zip(lo.zip(hi)) {
                let low = if k < 2 { lo & 0x0f } else { lo >> 4 };
                let q = i32::from(low | (((hi >> (2 * k)) & 3) << 4)) - 32;
                *y = ds * q as f32;
            }
        }
    }
}

/// Q4_0 as MLX affine: codes = nibbles, scale `d`, bias `-8d`.
fn affine_q4_0(b: &[u8; 18], q: &mut [u8; 32], s: &mut [f32; 1], z: &mut [f32; 1]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        q[j] = b[2 + j] & 0x0f;
        q[j + 16] = b[2 + j] >> 4;
    }
    s[0] = d;
    z[0] = -8.0 * d;
}

/// Q4_1 as MLX affine: codes = nibbles, scale `d`, bias `m`.
fn affine_q4_1(b: &[u8; 20], q: &mut [u8; 32], s: &mut [f32; 1], z: &mut [f32; 1]) {
    for j in 0..16 {
        q[j] = b[4 + j] & 0x0f;
        q[j + 16] = b[4 + j] >> 4;
    }
    s[0] = f16_at(b, 0);
    z[0] = f16_at(b, 2);
}

/// Q8_0 as MLX affine: codes = `q + 128` (`q ^ 0x80`), scale `d`, bias `-128d`.
fn affine_q8_0(b: &[u8; 34], q: &mut [u8; 32], s: &mut [f32; 1], z: &mut [f32; 1]) {
    let d = f16_at(b, 0);
    for (q, &x) in q.iter_mut().zip(&b[2..]) {
        *q = x ^ 0x80;
    }
    s[0] = d;
    z[0] = -128.0 * d;
}

/// Q4_K as MLX affine: codes = nibbles, per sub-block scale `d*sc`, bias
/// `-(dmin*m)`.
fn affine_q4_k(b: &[u8; 144], q: &mut [u8; 256], s: &mut [f32; 8], z: &mut [f32; 8]) {
    for (q, qs) in q.chunks_exact_mut(64).zip(b[16..].chunks_exact(32)) {
        let (lo, hi) = q.split_at_mut(32);
        for ((lo, hi), &x) in lo.iter_mut().zip(hi).zip(qs) {
            *lo = x & 0x0f;
            *hi = x >> 4;
        }
    }
    for ((s, z), (dl, ml)) in s.iter_mut().zip(z.iter_mut()).zip(k4_scales(b)) {
        *s = dl;
        *z = -ml;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_bits().to_le_bytes()
    }

    fn deq(ty: GgmlType, data: &[u8]) -> Vec<f32> {
        let n = data.len() / ty.type_size() * ty.block_size();
        let mut out = vec![0f32; n];
        dequantize(ty, data, &mut out).expect("dequantize");
        out
    }

    /// MLX's affine dequantization of one packed row, as documented.
    fn mlx_dequant(bits: usize, packed: &[u32], scales: &[f32], biases: &[f32]) -> Vec<f32> {
        let cols = packed.len() * 32 / bits;
        (0..cols)
            .map(|i| {
                let w = packed[i * bits / 32];
                let q = (w >> ((i * bits) % 32)) & ((1 << bits) - 1);
                scales[i / 32] * q as f32 + biases[i / 32]
            })
            .collect()
    }

    /// Deterministic pseudo-random bytes.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn f16_widening_matches_half_for_every_value() {
        for h in 0..=u16::MAX {
            let ours = f16_to_f32(h);
            let theirs = half::f16::from_bits(h).to_f32();
            if theirs.is_nan() {
                assert!(ours.is_nan(), "{h:#06x}");
                assert_eq!(ours.to_bits() >> 31, theirs.to_bits() >> 31);
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{h:#06x}");
            }
        }
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7e00).to_bits(), 0x7fc0_0000);
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
    }

    #[test]
    fn plain_types() {
        let x = [1.5f32, -0.0, f32::INFINITY, 3.0e-40];
        let raw: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let got = deq(GgmlType::F32, &raw);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(deq(GgmlType::F16, &[0x00, 0x3c, 0x00, 0xc0]), [1.0, -2.0]);
        // bf16 0x3fc0 = 1.5, 0xc120 = -10.0
        assert_eq!(deq(GgmlType::BF16, &[0xc0, 0x3f, 0x20, 0xc1]), [1.5, -10.0]);
    }

    #[test]
    fn q4_0_q4_1_q8_0_by_hand() {
        // Q4_0, d = 0.5: byte j = (j & 15) | 15 - j << 4
        let mut b = f16_bytes(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = deq(GgmlType::Q4_0, &b);
        for j in 0..16 {
            assert_eq!(y[j], 0.5 * (j as f32 - 8.0));
            assert_eq!(y[j + 16], 0.5 * (7.0 - j as f32));
        }
        // Q4_1, d = 2, m = -1
        let mut b = f16_bytes(2.0).to_vec();
        b.extend(f16_bytes(-1.0));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = deq(GgmlType::Q4_1, &b);
        assert_eq!(y[3], 5.0);
        assert_eq!(y[16 + 3], 23.0);
        // Q8_0, d = 0.25, q = -128..
        let mut b = f16_bytes(0.25).to_vec();
        b.extend((0..32i32).map(|j| (j * 8 - 128) as i8 as u8));
        let y = deq(GgmlType::Q8_0, &b);
        for (j, v) in y.iter().enumerate() {
            assert_eq!(*v, 0.25 * (j as f32 * 8.0 - 128.0));
        }
    }

    #[test]
    fn q5_by_hand() {
        // Q5_0, d = 1: element 5 with high bit, element 16 + 2 with high bit.
        let mut b = f16_bytes(1.0).to_vec();
        let qh: u32 = (1 << 5) | (1 << 18);
        b.extend(qh.to_le_bytes());
        b.extend([0x13u8; 16]); // low nibble 3, high nibble 1
        let y = deq(GgmlType::Q5_0, &b);
        assert_eq!(y[0], 3.0 - 16.0);
        assert_eq!(y[5], 19.0 - 16.0);
        assert_eq!(y[16], 1.0 - 16.0);
        assert_eq!(y[18], 17.0 - 16.0);
        // Q5_1, d = 1, m = 0.5
        let mut b = f16_bytes(1.0).to_vec();
        b.extend(f16_bytes(0.5));
        b.extend(qh.to_le_bytes());
        b.extend([0x13u8; 16]);
        let y = deq(GgmlType::Q5_1, &b);
        assert_eq!((y[0], y[5], y[16], y[18]), (3.5, 19.5, 1.5, 17.5));
    }

    #[test]
    fn q4_k_by_hand() {
        // d = 1, dmin = 0.5; sub-block 0: sc 3 m 2; sub-block 5: sc = 0x21 (33),
        // m = 0x12 (18) (high bits in bytes 1 and 5).
        let mut b = vec![0u8; 144];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        b[2..4].copy_from_slice(&f16_bytes(0.5));
        let s = &mut b[4..16];
        s[0] = 3;
        s[4] = 2;
        s[9] = 0x1 | (0x2 << 4); // low nibbles of sc5 / m5
        s[1] = 2 << 6; // high 2 bits of sc5
        s[5] = 1 << 6; // high 2 bits of m5
        b[16] = 0x07; // element 0 = 7, element 32 = 0
        b[16 + 64 + 1] = 0x90; // element 128 + 1 = 0, element 160 + 1 = 9
        let y = deq(GgmlType::Q4_K, &b);
        assert_eq!(y[0], 3.0 * 7.0 - 0.5 * 2.0);
        assert_eq!(y[161], 33.0 * 9.0 - 0.5 * 18.0);
    }

    #[test]
    fn q6_k_q3_k_by_hand() {
        // Q6_K, d = 1: element 200 = half 1, k 2 (high nibble of ql[64+8]), l 8.
        let mut b = vec![0u8; 210];
        b[208..].copy_from_slice(&f16_bytes(1.0));
        b[64 + 8] = 0x50;
        b[128 + 32 + 8] = 0b10 << 4; // top bits of k = 2
        b[192 + 200 / 16] = (-3i8) as u8;
        let y = deq(GgmlType::Q6_K, &b);
        assert_eq!(y[200], -3.0 * ((5 | (2 << 4)) as f32 - 32.0));
        assert_eq!(y[0], 0.0 * -32.0);
        // Q3_K, d = 1, all scale codes 0 -> scale -32; hmask set for element
        // 128 + 32 + 4 (bit 4*1 + 1 of hmask[4]), q bits 2 there.
        let mut b = vec![0u8; 110];
        b[108..].copy_from_slice(&f16_bytes(1.0));
        b[4] = 1 << 5;
        b[32 + 32 + 4] = 2 << 2;
        let y = deq(GgmlType::Q3_K, &b);
        assert_eq!(y[128 + 32 + 4], -32.0 * 2.0);
        assert_eq!(y[0], -32.0 * -4.0);
    }

    #[test]
    fn affine_reproduces_dequantize() {
        for (ty, seed) in [
            (GgmlType::Q4_0, 1),
            (GgmlType::Q4_1, 2),
            (GgmlType::Q8_0, 3),
            (GgmlType::Q4_K, 4),
        ] {
            let cols = 512;
            let bits = affine_bits(ty).expect("affine") as usize;
            let mut data = bytes(ty.row_bytes(cols).expect("row"), seed);
            // Finite scales (|d| < 2): clear the top exponent bit of the
            // f16 fields' high bytes.
            let offsets: &[usize] = match ty {
                GgmlType::Q4_K | GgmlType::Q4_1 => &[1, 3],
                _ => &[1],
            };
            for block in data.chunks_exact_mut(ty.type_size()) {
                for &o in offsets {
                    block[o] &= 0xbf;
                }
            }
            let want = deq(ty, &data);
            let mut packed = vec![0u32; cols * bits / 32];
            let mut scales = vec![0f32; cols / 32];
            let mut biases = vec![0f32; cols / 32];
            to_mlx_affine(ty, &data, cols, &mut packed, &mut scales, &mut biases).expect("affine");
            let got = mlx_dequant(bits, &packed, &scales, &biases);
            assert_eq!(got, want, "{ty}");
        }
    }

    #[test]
    fn errors() {
        let mut out = vec![0f32; 32];
        let e = dequantize(GgmlType::IQ4_NL, &[0; 18], &mut out).unwrap_err();
        assert_eq!(e, "ggml type IQ4_NL is not supported");
        for ty in [
            GgmlType::Q8_1,
            GgmlType::Q8_K,
            GgmlType::I32,
            GgmlType::MXFP4,
        ] {
            assert!(dequantize(ty, &[], &mut []).is_err(), "{ty}");
        }
        // Partial block, wrong output size.
        assert!(dequantize(GgmlType::Q4_0, &[0; 17], &mut out).is_err());
        assert!(dequantize(GgmlType::Q4_0, &[0; 19], &mut out).is_err());
        assert!(dequantize(GgmlType::Q4_0, &[0; 18], &mut out[..31]).is_err());
        assert!(dequantize(GgmlType::Q4_0, &[0; 36], &mut out).is_err());
        assert!(dequantize(GgmlType::F32, &[0; 6], &mut out[..1]).is_err());
        assert!(dequantize(GgmlType::Q6_K, &[0; 210], &mut out).is_err());
        // Empty input is fine.
        assert!(dequantize(GgmlType::Q6_K, &[], &mut []).is_ok());

        let (mut p, mut s, mut z) = (vec![0u32; 32], vec![0f32; 8], vec![0f32; 8]);
        let e = to_mlx_affine(GgmlType::Q5_K, &[0; 176], 256, &mut p, &mut s, &mut z);
        assert!(e.unwrap_err().contains("Q5_K"));
        // Q4_K rows are whole superblocks of 256.
        assert!(to_mlx_affine(GgmlType::Q4_K, &[0; 144], 224, &mut p, &mut s, &mut z).is_err());
        // Data, packed, scales, biases of the wrong length.
        assert!(to_mlx_affine(GgmlType::Q4_K, &[0; 143], 256, &mut p, &mut s, &mut z).is_err());
        assert!(
            to_mlx_affine(GgmlType::Q4_K, &[0; 144], 256, &mut p[..31], &mut s, &mut z).is_err()
        );
        assert!(
            to_mlx_affine(GgmlType::Q4_K, &[0; 144], 256, &mut p, &mut s[..7], &mut z).is_err()
        );
        assert!(
            to_mlx_affine(GgmlType::Q4_K, &[0; 144], 256, &mut p, &mut s, &mut z[..7]).is_err()
        );
        assert!(to_mlx_affine(GgmlType::Q4_K, &[0; 144], 256, &mut p, &mut s, &mut z).is_ok());
        // Q8_0, 8 bits: 64 columns = 16 words.
        let (mut p, mut s, mut z) = (vec![0u32; 16], vec![0f32; 2], vec![0f32; 2]);
        assert!(to_mlx_affine(GgmlType::Q8_0, &[0; 68], 64, &mut p, &mut s, &mut z).is_ok());
        assert!(to_mlx_affine(GgmlType::Q8_0, &[0; 68], 64, &mut p[..8], &mut s, &mut z).is_err());
    }

    #[test]
    fn block_geometry_matches_type_table() {
        // `run` rejects a geometry mismatch; every supported type must pass.
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let data = bytes(ty.type_size() * 3, 9);
            let mut out = vec![0f32; ty.block_size() * 3];
            assert_eq!(dequantize(ty, &data, &mut out), Ok(()), "{ty}");
        }
    }
}
