//! The ggml tensor types a GGUF file can name, with their block geometry.
//!
//! Design notes:
//! - The variants and their numeric ids are exactly those of gguf-py 0.19's
//!   `gguf.constants.GGMLQuantizationType` (ggml's `enum ggml_type`, less
//!   the ids ggml has retired: 4 and 5 (`Q4_2`, `Q4_3`), 31 to 33
//!   (`Q4_0_4_4` and friends) and 36 to 38 (`IQ4_NL_4_4` and friends)).
//!   The enum is `#[repr(u32)]` with those ids as discriminants, so
//!   [`GgmlType::id`] is a cast and [`GgmlType::from_id`] one `match`.
//! - [`GgmlType::name`] is the gguf-py enum member name ("Q4_K", "BF16"),
//!   which is also what llama.cpp's tools print; ggml's own
//!   `ggml_type_name` spells most of them in lower case ("q4_K").
//! - [`GgmlType::block_size`] and [`GgmlType::type_size`] are gguf-py's
//!   `GGML_QUANT_SIZES` (ggml's `blck_size` / `type_size` traits): a row of
//!   `n` elements is `n / block_size` blocks of `type_size` bytes each.
//!   Plain types (F32, F16, BF16, I8..I64, F64) are blocks of one element.
//! - The unit test below compares every id against a table dumped from
//!   gguf-py 0.19 (the snippet that made it is next to the table).
//! - Known differences from current ggml (checked against ggml's C structs):
//!   gguf-py, and so this table, gives Q8_1 40 bytes per block (f32 `d`
//!   and `s`), while ggml's `block_q8_1` is now 36 (f16 `d` and `s`); Q8_1
//!   is a matmul-side type that GGUF writers do not emit. ggml's newer
//!   `Q2_0` (id 42) is not in gguf-py 0.19, so `from_id(42)` is `None`.
//! - Knowing a type here says nothing about whether it can be loaded; see
//!   `dequant` for the types that can be turned into numbers.

use std::fmt;

/// A ggml tensor type as stored in GGUF tensor infos (the `u32` type field).
///
/// The discriminant of each variant is its ggml/GGUF id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32 = 0,
    /// 16-bit IEEE half float.
    F16 = 1,
    /// Blocks of 32: f16 scale, 4-bit quants (`x = d * (q - 8)`).
    Q4_0 = 2,
    /// Blocks of 32: f16 scale and min, 4-bit quants (`x = d * q + m`).
    Q4_1 = 3,
    /// Blocks of 32: f16 scale, 5-bit quants (`x = d * (q - 16)`).
    Q5_0 = 6,
    /// Blocks of 32: f16 scale and min, 5-bit quants (`x = d * q + m`).
    Q5_1 = 7,
    /// Blocks of 32: f16 scale, signed 8-bit quants (`x = d * q`).
    Q8_0 = 8,
    /// Blocks of 32: f32 scale and sum, signed 8-bit quants (matmul operand).
    Q8_1 = 9,
    /// k-quant, superblocks of 256: 2-bit quants, 4-bit scales and mins.
    Q2_K = 10,
    /// k-quant, superblocks of 256: 3-bit quants, 6-bit scales.
    Q3_K = 11,
    /// k-quant, superblocks of 256: 4-bit quants, 6-bit scales and mins.
    Q4_K = 12,
    /// k-quant, superblocks of 256: 5-bit quants, 6-bit scales and mins.
    Q5_K = 13,
    /// k-quant, superblocks of 256: 6-bit quants, 8-bit scales.
    Q6_K = 14,
    /// k-quant, superblocks of 256: 8-bit quants (matmul operand).
    Q8_K = 15,
    /// i-quant, 2.06 bits per weight.
    IQ2_XXS = 16,
    /// i-quant, 2.31 bits per weight.
    IQ2_XS = 17,
    /// i-quant, 3.06 bits per weight.
    IQ3_XXS = 18,
    /// i-quant, 1.56 bits per weight.
    IQ1_S = 19,
    /// Blocks of 32: f16 scale, 4-bit indices into a non-linear table.
    IQ4_NL = 20,
    /// i-quant, 3.44 bits per weight.
    IQ3_S = 21,
    /// i-quant, 2.5 bits per weight.
    IQ2_S = 22,
    /// i-quant, 4.25 bits per weight.
    IQ4_XS = 23,
    /// 8-bit signed integer.
    I8 = 24,
    /// 16-bit signed integer.
    I16 = 25,
    /// 32-bit signed integer.
    I32 = 26,
    /// 64-bit signed integer.
    I64 = 27,
    /// 64-bit IEEE float.
    F64 = 28,
    /// i-quant, 1.75 bits per weight.
    IQ1_M = 29,
    /// bfloat16.
    BF16 = 30,
    /// Ternary, 1.69 bits per weight.
    TQ1_0 = 34,
    /// Ternary, 2.06 bits per weight.
    TQ2_0 = 35,
    /// Blocks of 32: E8M0 shared exponent, 4-bit E2M1 values.
    MXFP4 = 39,
    /// Blocks of 64: four UE4M3 scales, 4-bit E2M1 values.
    NVFP4 = 40,
    /// Blocks of 128: f16 scale, 1-bit quants.
    Q1_0 = 41,
}

impl GgmlType {
    /// The type with ggml/GGUF id `id`; `None` for ids gguf-py 0.19 does not
    /// know (retired or newer types).
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            40 => NVFP4,
            41 => Q1_0,
            _ => return None,
        })
    }

    /// The ggml/GGUF id of this type.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The type's name as gguf-py spells it (`"Q4_K"`, `"BF16"`, `"IQ2_XXS"`).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ2_S => "IQ2_S",
            IQ4_XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1_M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
            NVFP4 => "NVFP4",
            Q1_0 => "Q1_0",
        }
    }

    /// Elements per block (1 for the plain types F32, F16, BF16, F64, I*).
    pub fn block_size(self) -> usize {
        self.geometry().0
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.geometry().1
    }

    /// Bytes taken by `elements` consecutive elements (one row); `None` if
    /// `elements` is not a whole number of blocks, or on overflow.
    pub fn row_bytes(self, elements: usize) -> Option<usize> {
        let (block, size) = self.geometry();
        if elements % block != 0 {
            return None;
        }
        (elements / block).checked_mul(size)
    }

    /// `(block_size, type_size)`, as in gguf-py's `GGML_QUANT_SIZES`.
    fn geometry(self) -> (usize, usize) {
        use GgmlType::*;
        const QK_K: usize = 256;
        match self {
            F32 => (1, 4),
            F16 => (1, 2),
            Q4_0 => (32, 2 + 16),
            Q4_1 => (32, 2 + 2 + 16),
            Q5_0 => (32, 2 + 4 + 16),
            Q5_1 => (32, 2 + 2 + 4 + 16),
            Q8_0 => (32, 2 + 32),
            Q8_1 => (32, 4 + 4 + 32),
            Q2_K => (QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Q3_K => (QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Q4_K => (QK_K, 2 + 2 + QK_K / 2 + 12),
            Q5_K => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
            Q6_K => (QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
            Q8_K => (QK_K, 4 + QK_K + QK_K / 8),
            IQ2_XXS => (QK_K, 2 + QK_K / 4),
            IQ2_XS => (QK_K, 2 + QK_K / 4 + QK_K / 32),
            IQ3_XXS => (QK_K, 2 + QK_K / 4 + QK_K / 8),
            IQ1_S => (QK_K, 2 + QK_K / 8 + QK_K / 16),
            IQ4_NL => (32, 2 + 16),
            IQ3_S => (QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            IQ2_S => (QK_K, 2 + QK_K / 4 + QK_K / 16),
            IQ4_XS => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 => (1, 8),
            F64 => (1, 8),
            IQ1_M => (QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            BF16 => (1, 2),
            TQ1_0 => (QK_K, 2 + 4 * 13),
            TQ2_0 => (QK_K, 2 + 64),
            MXFP4 => (32, 1 + 16),
            NVFP4 => (64, 4 + 32),
            Q1_0 => (128, 2 + 16),
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::GgmlType;

    /// `name id block_size type_size` for every member of gguf-py 0.19's
    /// `GGMLQuantizationType`, dumped with:
    ///
    /// ```python
    /// from gguf.constants import GGMLQuantizationType as T, GGML_QUANT_SIZES as S
    /// for t in T: print(t.name, t.value, *S[t])
    /// ```
    const GGUF_PY_0_19: &str = "\
F32 0 1 4
F16 1 1 2
Q4_0 2 32 18
Q4_1 3 32 20
Q5_0 6 32 22
Q5_1 7 32 24
Q8_0 8 32 34
Q8_1 9 32 40
Q2_K 10 256 84
Q3_K 11 256 110
Q4_K 12 256 144
Q5_K 13 256 176
Q6_K 14 256 210
Q8_K 15 256 292
IQ2_XXS 16 256 66
IQ2_XS 17 256 74
IQ3_XXS 18 256 98
IQ1_S 19 256 50
IQ4_NL 20 32 18
IQ3_S 21 256 110
IQ2_S 22 256 82
IQ4_XS 23 256 136
I8 24 1 1
I16 25 1 2
I32 26 1 4
I64 27 1 8
F64 28 1 8
IQ1_M 29 256 56
BF16 30 1 2
TQ1_0 34 256 54
TQ2_0 35 256 66
MXFP4 39 32 17
NVFP4 40 64 36
Q1_0 41 128 18
";

    fn table() -> Vec<(String, u32, usize, usize)> {
        GGUF_PY_0_19
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(f.len(), 4, "bad table line {line:?}");
                (
                    f[0].to_string(),
                    f[1].parse().expect("id"),
                    f[2].parse().expect("block size"),
                    f[3].parse().expect("type size"),
                )
            })
            .collect()
    }

    #[test]
    fn matches_gguf_py_table() {
        let table = table();
        for (name, id, block, size) in &table {
            let ty = GgmlType::from_id(*id).unwrap_or_else(|| panic!("id {id} ({name}) unknown"));
            assert_eq!(ty.id(), *id);
            assert_eq!(ty.name(), name);
            assert_eq!(ty.to_string(), *name);
            assert_eq!(ty.block_size(), *block, "{name} block size");
            assert_eq!(ty.type_size(), *size, "{name} type size");
        }
        // No id outside the table is known.
        for id in 0..1024u32 {
            let known = table.iter().any(|(_, i, _, _)| *i == id);
            assert_eq!(GgmlType::from_id(id).is_some(), known, "id {id}");
        }
        assert_eq!(GgmlType::from_id(u32::MAX), None);
    }

    #[test]
    fn row_bytes() {
        assert_eq!(GgmlType::F32.row_bytes(3), Some(12));
        assert_eq!(GgmlType::BF16.row_bytes(0), Some(0));
        assert_eq!(GgmlType::Q4_K.row_bytes(4096), Some(16 * 144));
        assert_eq!(GgmlType::Q4_K.row_bytes(4096 + 32), None);
        assert_eq!(GgmlType::Q8_0.row_bytes(64), Some(68));
        assert_eq!(GgmlType::Q8_0.row_bytes(65), None);
        assert_eq!(GgmlType::F64.row_bytes(usize::MAX), None);
        // 34 bytes per 32 elements: more bytes than elements, so this overflows.
        assert_eq!(GgmlType::Q8_0.row_bytes(usize::MAX / 32 * 32), None);
        assert_eq!(
            GgmlType::Q6_K.row_bytes(usize::MAX / 256 * 256),
            Some(usize::MAX / 256 * 210)
        );
    }
}
