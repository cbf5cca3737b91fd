//! The decode step's 4-bit matrix-vector products on NVIDIA GPUs, by a
//! kernel of our own (`kernels/quantized_matvec.cu`) run inside MLX's graph
//! through [`crate::cuda_kernel`].
//!
//! Why: at one token per step every weight is read once per token, so
//! decode speed is the speed at which the products stream the weights, and
//! MLX 0.32.2's CUDA `quantized_matmul` streams 4-bit weights far below the
//! card's bandwidth. This kernel reads each row in 16-byte chunks with few
//! instructions per weight byte (see the kernel's notes). Its speed against
//! MLX's is in BENCHMARKS.md ("Our 4-bit kernel").
//!
//! The library leaves it off unless the caller asks for it
//! ([`QmvKernel::Ours`], or [`QmvKernel::OursLarge`] for the products of
//! more than [`LARGE_ELEMENTS`] elements only), as mlx-lm's `load` keeps
//! MLX's kernels; `mistral-cli` asks for `ours` (`--qmv`). `ours` keeps a
//! stacked matrix's product equal to its parts' own (each output row is
//! computed alone, whatever the matrix's height; see `mistral_model::fused`);
//! `ours-large` may not, where a stack is above the threshold and its parts
//! below. The parity tests with it and its speed are in BENCHMARKS.md.
//!
//! The same kernel takes 8-bit matrices (16 elements per 16-byte chunk,
//! each unpacked exactly).
//!
//! [`quantized_matvec`] returns `None` wherever it does not apply (not
//! asked for, not MLX's CUDA build on a GPU, other bit widths, more rows,
//! float32, odd shapes), and the caller uses MLX's `quantized_matmul`.

use std::sync::OnceLock;

use mlx_rs::{Array, Dtype};

use crate::cuda_kernel::{CudaKernel, Launch, TemplateArg};
use crate::error::Result;

/// The kernel body and its helpers.
const SOURCE: &str = include_str!("kernels/quantized_matvec.cu");
const HEADER: &str = include_str!("kernels/quantized_matvec_header.cuh");

/// The environment variable `mistral-cli` reads its `--qmv` default from
/// (the library reads none: callers pass a [`QmvKernel`]).
pub const SWITCH_ENV: &str = "MISTRAL_MLX_QMV";

/// `ours-large`'s threshold: 2^24 elements. Mistral 7B's stacked q/k/v
/// (6144 x 4096), MLP (14336 x 4096, stacked 28672 x 4096) and head (32768
/// x 4096) matrices are above it, its 4096 x 4096 output projection is not.
pub const LARGE_ELEMENTS: i64 = 1 << 24;

/// Which one-row 4-bit products our kernel takes on a CUDA GPU (elsewhere
/// it takes none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QmvKernel {
    /// None: MLX's `quantized_matmul` (the library's default).
    #[default]
    Mlx,
    /// Every product it can take (`ours`).
    Ours,
    /// Those of more than [`LARGE_ELEMENTS`] elements (`ours-large`).
    OursLarge,
}

impl std::str::FromStr for QmvKernel {
    type Err = String;

    /// `mlx`, `ours` or `ours-large`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mlx" => Ok(QmvKernel::Mlx),
            "ours" => Ok(QmvKernel::Ours),
            "ours-large" => Ok(QmvKernel::OursLarge),
            other => Err(format!("{other:?} is not one of mlx, ours, ours-large")),
        }
    }
}

/// The most rows of `x` the kernel takes.
pub const MAX_ROWS: i32 = 4;

/// Warps per block.
const WARPS: i32 = 4;

/// `x Wᵀ` for the affine-quantized `W` (`w`, `scales`, `biases` as MLX
/// lays them out, `group_size`, `bits`), by our kernel if `kernel` asks for
/// it; `None` where it does not apply (see the module notes).
pub fn quantized_matvec(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    group_size: i32,
    bits: i32,
    kernel: QmvKernel,
) -> Result<Option<Array>> {
    let w = [w, scales, biases];
    run(x, w, group_size, bits, kernel, Epilogue::Plain)
}

/// `silu(x Gᵀ) * (x Uᵀ)` for `w` (with its `scales` and `biases`) stacking
/// the gate matrix G over the up matrix U by rows (`mistral_model`'s
/// stacked gate/up projection), in one launch of our kernel where
/// [`quantized_matvec`] would take the product; `None` otherwise. Each
/// output is rounded as the two products and MLX's SwiGLU ops round it.
pub fn quantized_matvec_swiglu(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    group_size: i32,
    bits: i32,
    kernel: QmvKernel,
) -> Result<Option<Array>> {
    let w = [w, scales, biases];
    run(x, w, group_size, bits, kernel, Epilogue::Swiglu)
}

/// `residual + x Wᵀ` (`residual` of the product's shape and dtype: a
/// decoder layer's residual connection) in one launch of our kernel where
/// [`quantized_matvec`] would take the product; `None` otherwise. The
/// product is rounded to the dtype before the sum, as the two operations
/// round it.
#[allow(clippy::too_many_arguments)]
pub fn quantized_matvec_add(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    group_size: i32,
    bits: i32,
    kernel: QmvKernel,
    residual: &Array,
) -> Result<Option<Array>> {
    let w = [w, scales, biases];
    run(x, w, group_size, bits, kernel, Epilogue::Add(residual))
}

/// What a launch does with its products.
#[derive(Debug, Clone, Copy)]
enum Epilogue<'a> {
    /// Stores them.
    Plain,
    /// Stores `silu(gate) * up` of W's halves.
    Swiglu,
    /// Stores them plus this array's elements.
    Add(&'a Array),
}

/// One launch of the kernel.
fn run(
    x: &Array,
    [w, scales, biases]: [&Array; 3],
    group_size: i32,
    bits: i32,
    kernel: QmvKernel,
    epilogue: Epilogue,
) -> Result<Option<Array>> {
    // Off a CUDA GPU, or not asked for: nothing to plan (the model asks at
    // every decode step, also on the CPU).
    if kernel == QmvKernel::Mlx || !on_cuda_gpu() {
        return Ok(None);
    }
    let Some(plan) = Plan::new(x, w, scales, biases, group_size, bits, epilogue) else {
        return Ok(None);
    };
    if !kernel.wants(plan.n, plan.k) {
        return Ok(None);
    }
    thread_local! {
        static KERNEL: OnceLock<std::result::Result<CudaKernel, String>> = const { OnceLock::new() };
    }
    KERNEL.with(|kernel| {
        let kernel = kernel.get_or_init(|| {
            CudaKernel::new(
                "qmv",
                &["x", "w", "scales", "biases", "residual"],
                &["out"],
                SOURCE,
                HEADER,
            )
            .map_err(|e| e.to_string())
        });
        let kernel = match kernel {
            Ok(kernel) => kernel,
            Err(e) => {
                return Err(crate::error::Error::InvalidArgument(format!(
                    "quantized matrix-vector kernel: {e}"
                )))
            }
        };
        // Read only with RESIDUAL: `x` stands in otherwise.
        let residual = match epilogue {
            Epilogue::Add(residual) => residual,
            Epilogue::Plain | Epilogue::Swiglu => x,
        };
        // SAFETY: `Plan::new` checked the shapes the kernel indexes by: x
        // holds M rows of K, w N rows of K/8 words, scales and biases N
        // rows of K/GROUP, and with RESIDUAL the residual M rows of N;
        // the kernel reads only those and writes each of the M x N outputs
        // once (one warp per ROWS rows, lane 0 writes).
        let inputs = [x, w, scales, biases, residual];
        let mut out = unsafe { kernel.apply(&inputs, &plan.launch())? };
        Ok(Some(out.remove(0)))
    })
}

/// Whether a one-row product with an `n x k` 4-bit matrix in groups of
/// `group_size`, scales in `scales_dtype` (and `x` in the same dtype), goes
/// to this kernel under `kernel` in this process. Its output rows are each
/// computed alone at any `n`, so layers stacked into such a matrix keep
/// their own products past the height where MLX changes kernels (see
/// `mistral_model::fused`).
pub fn takes_one_row(
    n: i32,
    k: i32,
    group_size: i32,
    bits: i32,
    scales_dtype: Dtype,
    kernel: QmvKernel,
) -> bool {
    n > 0 && kind_supported(k, group_size, bits, scales_dtype) && kernel.wants(n, k)
}

/// The products the kernel computes: 4- or 8-bit, groups of 32, 64 or
/// 128, `x` and scales in bf16 or f16 (not float32: the kernel's 128 + q
/// trick costs float32 inputs a few bits, measured 13x MLX's error there;
/// MLX's kernel is exact), rows of whole groups.
fn kind_supported(k: i32, group_size: i32, bits: i32, dtype: Dtype) -> bool {
    matches!(bits, 4 | 8)
        && matches!(group_size, 32 | 64 | 128)
        && matches!(dtype, Dtype::Bfloat16 | Dtype::Float16)
        && k > 0
        && k % group_size == 0
}

impl QmvKernel {
    /// Whether the kernel is to take a product with an `n x k` matrix: as
    /// asked for, on MLX's CUDA build on a GPU.
    fn wants(self, n: i32, k: i32) -> bool {
        let asked = match self {
            QmvKernel::Mlx => false,
            QmvKernel::Ours => true,
            QmvKernel::OursLarge => i64::from(n) * i64::from(k) > LARGE_ELEMENTS,
        };
        asked && on_cuda_gpu()
    }
}

/// Whether this process computes on MLX's CUDA build on a GPU.
fn on_cuda_gpu() -> bool {
    static CUDA: OnceLock<bool> = OnceLock::new();
    *CUDA.get_or_init(|| cfg!(feature = "cuda") && crate::runtime::on_gpu())
}

/// One product's shapes and launch.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    dtype: Dtype,
    out_shape: Vec<i32>,
    m: i32,
    /// W's rows (with `swiglu`, gate's and up's together).
    n: i32,
    k: i32,
    bits: i32,
    group: i32,
    rows: i32,
    unroll: i32,
    /// `silu(gate) * up` of W's halves instead of the plain product.
    swiglu: bool,
    /// The product plus a residual of its shape.
    residual: bool,
}

impl Plan {
    /// The launch for these arrays, or `None` where the kernel does not
    /// apply.
    fn new(
        x: &Array,
        w: &Array,
        scales: &Array,
        biases: &Array,
        group: i32,
        bits: i32,
        epilogue: Epilogue,
    ) -> Option<Plan> {
        let swiglu = matches!(epilogue, Epilogue::Swiglu);
        let dtype = x.dtype();
        if scales.dtype() != dtype || biases.dtype() != dtype || w.dtype() != Dtype::Uint32 {
            return None;
        }
        let x_shape = x.shape();
        let (&k, lead) = x_shape.split_last()?;
        let m: i32 = lead.iter().product();
        let (w_shape, s_shape) = (w.shape(), scales.shape());
        if w_shape.len() != 2 || s_shape.len() != 2 || biases.shape() != s_shape {
            return None;
        }
        let n = w_shape[0];
        if !(1..=MAX_ROWS).contains(&m)
            || !kind_supported(k, group, bits, dtype)
            || w_shape[1] != k / (32 / bits)
            || s_shape != [n, k / group]
            || n <= 0
            || (swiglu && n % 2 != 0)
        {
            return None;
        }
        let outputs = if swiglu { n / 2 } else { n };
        let mut out_shape = lead.to_vec();
        out_shape.push(outputs);
        if let Epilogue::Add(residual) = epilogue {
            if residual.dtype() != dtype || residual.shape() != out_shape.as_slice() {
                return None;
            }
        }
        let (rows, unroll) = Self::tiling(m, outputs, k, bits);
        // A warp of the SwiGLU launch computes twice the rows, so at most
        // half as many in flight per row.
        let unroll = if swiglu { (unroll / 2).max(1) } else { unroll };
        Some(Plan {
            dtype,
            out_shape,
            m,
            n,
            k,
            bits,
            group,
            rows,
            unroll,
            swiglu,
            residual: matches!(epilogue, Epilogue::Add(_)),
        })
    }

    /// Rows of W per warp and 16-byte chunks per lane and row in flight: 4
    /// rows where there are enough rows to keep some 2048 warps busy, fewer
    /// otherwise (and at most 2 for several rows of x, for registers); up
    /// to 8 chunks in flight per lane in all, as many as divide the row's
    /// chunks into whole rounds (no bounds checks), and no more than a
    /// lane's share of the row. (The best of a sweep on one H200.)
    fn tiling(m: i32, n: i32, k: i32, bits: i32) -> (i32, i32) {
        let max_rows = if m > 1 { 2 } else { 4 };
        let rows = [4, 2, 1]
            .into_iter()
            .find(|&r| r <= max_rows && n / r >= 2048)
            .unwrap_or(1);
        // A chunk is 16 bytes: 32 elements at 4 bits, 16 at 8.
        let chunks = k / (128 / bits);
        let per_lane = (chunks + 31) / 32;
        let mut unroll = (8 / rows).min(per_lane).max(1);
        if chunks % 32 == 0 {
            while unroll > 1 && per_lane % unroll != 0 {
                unroll -= 1;
            }
        }
        (rows, unroll)
    }

    fn launch(&self) -> Launch {
        let outputs = if self.swiglu { self.n / 2 } else { self.n };
        let warps = (outputs + self.rows - 1) / self.rows;
        Launch {
            outputs: vec![(self.out_shape.clone(), self.dtype)],
            grid: (32, warps, 1),
            thread_group: (32, WARPS.min(warps), 1),
            template_args: vec![
                ("T", TemplateArg::Dtype(self.dtype)),
                ("BITS", TemplateArg::Int(self.bits)),
                ("K", TemplateArg::Int(self.k)),
                ("N", TemplateArg::Int(self.n)),
                ("GROUP", TemplateArg::Int(self.group)),
                ("ROWS", TemplateArg::Int(self.rows)),
                ("M", TemplateArg::Int(self.m)),
                ("UNROLL", TemplateArg::Int(self.unroll)),
                ("SWIGLU", TemplateArg::Bool(self.swiglu)),
                ("RESIDUAL", TemplateArg::Bool(self.residual)),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrays(m: i32, n: i32, k: i32, group: i32, dtype: Dtype) -> [Array; 4] {
        arrays_bits(m, n, k, group, dtype, 4)
    }

    fn arrays_bits(m: i32, n: i32, k: i32, group: i32, dtype: Dtype, bits: i32) -> [Array; 4] {
        let x = Array::zeros::<f32>(&[1, m, k])
            .unwrap()
            .as_dtype(dtype)
            .unwrap();
        let w = Array::zeros::<u32>(&[n, k * bits / 32]).unwrap();
        let s = Array::zeros::<f32>(&[n, k / group])
            .unwrap()
            .as_dtype(dtype)
            .unwrap();
        let b = s.clone();
        [x, w, s, b]
    }

    #[test]
    fn plans_the_decode_shapes_of_a_7b_model() {
        let [x, w, s, b] = arrays(1, 14336, 4096, 64, Dtype::Bfloat16);
        let plan = Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Plain).expect("applies");
        assert_eq!(plan.out_shape, vec![1, 1, 14336]);
        assert_eq!(
            (plan.m, plan.n, plan.k, plan.rows, plan.unroll),
            (1, 14336, 4096, 4, 2)
        );
        let launch = plan.launch();
        assert_eq!(launch.grid, (32, 3584, 1));
        assert_eq!(launch.thread_group, (32, 4, 1));
        // down_proj: 14336 inputs, 448 chunks, 14 per lane: 2 in flight
        // per row (4 would not divide them).
        let [x, w, s, b] = arrays(1, 4096, 14336, 64, Dtype::Bfloat16);
        let plan = Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Plain).expect("applies");
        assert_eq!((plan.rows, plan.unroll), (2, 2));
        // k_proj: few rows, one per warp, a lane's whole share in flight.
        let [x, w, s, b] = arrays(1, 1024, 4096, 64, Dtype::Bfloat16);
        let plan = Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Plain).expect("applies");
        assert_eq!((plan.rows, plan.unroll), (1, 4));
        // A short row: 8 chunks, so most lanes idle and one chunk each.
        let [x, w, s, b] = arrays(2, 64, 256, 64, Dtype::Bfloat16);
        let plan = Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Plain).expect("applies");
        assert_eq!((plan.rows, plan.unroll), (1, 1));
    }

    #[test]
    fn plans_eight_bit_products_in_chunks_of_16_elements() {
        let [x, w, s, b] = arrays_bits(1, 14336, 4096, 64, Dtype::Bfloat16, 8);
        let plan = Plan::new(&x, &w, &s, &b, 64, 8, Epilogue::Plain).expect("applies");
        // 256 chunks of 16 elements: 8 per lane, 2 in flight per row of 4.
        assert_eq!((plan.bits, plan.rows, plan.unroll), (8, 4, 2));
        assert!(plan
            .launch()
            .template_args
            .contains(&("BITS", TemplateArg::Int(8))));
        // A 4-bit matrix's width is not an 8-bit one's.
        let [x, w, s, b] = arrays(1, 64, 256, 64, Dtype::Bfloat16);
        assert!(
            Plan::new(&x, &w, &s, &b, 64, 8, Epilogue::Plain).is_none(),
            "4-bit words"
        );
    }

    #[test]
    fn plans_swiglu_over_a_stacked_gate_and_up() {
        // A 7B layer's gate/up stack: 2 x 14336 rows in, 14336 outputs.
        let [x, w, s, b] = arrays(1, 28672, 4096, 64, Dtype::Bfloat16);
        let plan = Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Swiglu).expect("applies");
        assert_eq!(plan.out_shape, vec![1, 1, 14336]);
        // The plain product's tiling for 14336 rows, half the chunks in
        // flight (each warp reads 4 gate and 4 up rows).
        assert_eq!((plan.rows, plan.unroll), (4, 1));
        let launch = plan.launch();
        assert_eq!(launch.grid, (32, 3584, 1));
        assert_eq!(launch.outputs, vec![(vec![1, 1, 14336], Dtype::Bfloat16)]);
        assert!(launch
            .template_args
            .contains(&("SWIGLU", TemplateArg::Bool(true))));
        // An odd stack has no halves.
        let [x, w, s, b] = arrays(1, 65, 256, 64, Dtype::Bfloat16);
        assert!(Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Swiglu).is_none());
    }

    #[test]
    fn plans_a_residual_of_the_products_shape_only() {
        // A 7B layer's output projection and its residual row.
        let [x, w, s, b] = arrays(1, 4096, 4096, 64, Dtype::Bfloat16);
        let residual = Array::zeros::<f32>(&[1, 1, 4096])
            .unwrap()
            .as_dtype(Dtype::Bfloat16)
            .unwrap();
        let plan = Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Add(&residual)).expect("applies");
        assert!(plan.residual && !plan.swiglu);
        assert!(plan
            .launch()
            .template_args
            .contains(&("RESIDUAL", TemplateArg::Bool(true))));
        let plain = Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Plain).expect("applies");
        assert!(plain
            .launch()
            .template_args
            .contains(&("RESIDUAL", TemplateArg::Bool(false))));
        // Another shape (a broadcast row) or dtype: MLX's add instead.
        let short = residual.reshape(&[1, 4096]).unwrap();
        assert!(Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Add(&short)).is_none());
        let wide = residual.as_dtype(Dtype::Float32).unwrap();
        assert!(Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Add(&wide)).is_none());
    }

    #[test]
    fn declines_what_it_does_not_do() {
        let [x, w, s, b] = arrays_bits(1, 64, 256, 64, Dtype::Bfloat16, 2);
        assert!(
            Plan::new(&x, &w, &s, &b, 64, 2, Epilogue::Plain).is_none(),
            "2-bit"
        );
        let [x, w, s, b] = arrays(1, 64, 256, 64, Dtype::Bfloat16);
        assert!(
            Plan::new(&x, &w, &s, &b, 16, 4, Epilogue::Plain).is_none(),
            "group 16"
        );
        let [x, w, s, b] = arrays(5, 64, 256, 64, Dtype::Bfloat16);
        assert!(
            Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Plain).is_none(),
            "5 rows of x"
        );
        let [x, w, s, b] = arrays(1, 64, 256, 64, Dtype::Float32);
        assert!(
            Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Plain).is_none(),
            "float32"
        );
        let [x, w, s, _] = arrays(1, 64, 256, 64, Dtype::Bfloat16);
        let b32 = s.as_dtype(Dtype::Float32).unwrap();
        assert!(
            Plan::new(&x, &w, &s, &b32, 64, 4, Epilogue::Plain).is_none(),
            "mixed dtypes"
        );
        let [_, w, s, b] = arrays(1, 64, 256, 64, Dtype::Bfloat16);
        let x = Array::zeros::<f32>(&[1, 1, 512])
            .unwrap()
            .as_dtype(Dtype::Bfloat16)
            .unwrap();
        assert!(
            Plan::new(&x, &w, &s, &b, 64, 4, Epilogue::Plain).is_none(),
            "K mismatch"
        );
    }

    #[test]
    fn is_used_only_when_asked_and_on_a_cuda_gpu() {
        let [x, w, s, b] = arrays(1, 64, 256, 64, Dtype::Bfloat16);
        let used = |kernel| {
            quantized_matvec(&x, &w, &s, &b, 64, 4, kernel)
                .unwrap()
                .is_some()
        };
        assert!(!used(QmvKernel::Mlx));
        // 64 x 256 is below ours-large's threshold.
        assert!(!used(QmvKernel::OursLarge));
        assert_eq!(used(QmvKernel::Ours), on_cuda_gpu());
    }

    #[test]
    fn kernel_names_parse() {
        assert_eq!("ours".parse::<QmvKernel>(), Ok(QmvKernel::Ours));
        assert_eq!("ours-large".parse::<QmvKernel>(), Ok(QmvKernel::OursLarge));
        assert_eq!("mlx".parse::<QmvKernel>(), Ok(QmvKernel::Mlx));
        assert!("fast".parse::<QmvKernel>().unwrap_err().contains("fast"));
    }
}
