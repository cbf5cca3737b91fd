//! [`ComputeDtype`]: which dtype a model is loaded in, and [`LoadPlan`], the
//! decision once `Auto` has looked at the device and the checkpoint.
//!
//! Design notes (measured on MLX 0.32's CPU backend, see BENCHMARKS.md): the
//! CPU computes bfloat16 and float16 without BLAS and its quantized matmul is
//! many times slower with half-precision scales, while float32 goes through
//! BLAS (OpenBLAS, see `mlx-sys`). So `Auto` computes in float32 on the CPU
//! and, for quantized checkpoints, dequantizes the matrices at load when the
//! dense float32 model fits in half of the available memory (otherwise it
//! keeps them quantized, with float32 scales and biases). With our CPU
//! kernel (`with_cpu_qmm`) quantized matrices stay quantized, their scales
//! in float16 or bfloat16 where exact. On a GPU `Auto` keeps the checkpoint
//! as it is, as mlx-lm does.

use mistral_model::{MistralConfig, WeightOptions};
use mlx_rs::{Device, DeviceType, Dtype};
use mlx_rs_core::streams::cpu_parallelism;

/// The dtype to load and compute in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ComputeDtype {
    /// The checkpoint's own dtypes, quantized matrices kept quantized (what
    /// mlx-lm's `load` does).
    #[default]
    Checkpoint,
    /// What is fastest on the device MLX runs on: the checkpoint's dtypes on
    /// a GPU; float32 on the CPU, with quantized matrices dequantized when
    /// the dense model fits in half of the available memory.
    Auto,
    /// Floating-point tensors and quantization scales cast to this dtype.
    Exact(Dtype),
}

/// What a load does: the resolved [`ComputeDtype`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// How tensors become weights.
    pub weights: WeightOptions,
    /// One line saying what was chosen and why, for reports.
    pub summary: String,
}

impl LoadPlan {
    /// The plan for `config` under `choice`, on MLX's default device.
    pub fn resolve(choice: ComputeDtype, config: &MistralConfig) -> LoadPlan {
        let on_gpu = Device::try_default()
            .and_then(|d| d.get_type())
            .is_ok_and(|t| matches!(t, DeviceType::Gpu));
        Self::resolve_for(choice, config, on_gpu, available_memory())
    }

    /// The plan for `config` under `choice` on a GPU or the CPU with
    /// `available` bytes of free memory (None: unknown).
    pub fn resolve_for(
        choice: ComputeDtype,
        config: &MistralConfig,
        on_gpu: bool,
        available: Option<u64>,
    ) -> LoadPlan {
        let mut plan = Self::resolve_dtype(choice, config, on_gpu, available);
        if config.fp8.is_some() {
            plan.summary
                .push_str("; FP8 weights dequantized at load (bfloat16, then as above)");
        }
        if let Some(wrapper) = &config.wrapper {
            plan.summary.push_str(&format!(
                "; the text model of a {wrapper} checkpoint: images are not supported, the \
                 vision weights are not loaded"
            ));
        }
        plan
    }

    /// This plan with `kernel` taking the one-row 4-bit products it can.
    pub fn with_qmv(mut self, kernel: mlx_rs_core::quantized_matvec::QmvKernel) -> Self {
        self.weights.qmv = kernel;
        self
    }

    /// This plan with our CPU kernel taking the quantized products on the
    /// CPU (see [`mlx_rs_core::cpu_qmm`]) when `kernel` asks: no row
    /// blocks for them (the kernel uses every core), projections of one
    /// input stacked (as on a GPU), and where `Auto` had
    /// chosen to dequantize at load, the weights stay quantized (float32
    /// scales, as `Auto` computes in float32 on the CPU).
    pub fn with_cpu_qmm(mut self, kernel: mlx_rs_core::cpu_qmm::CpuQmm) -> Self {
        self.weights.cpu_qmm = kernel;
        if !kernel.is_ours() {
            return self;
        }
        // q/k/v and gate/up as one product each: fewer operations per decode
        // step; each output row is computed alone, so a stack's products
        // equal its parts'.
        self.weights.fuse_projections = true;
        // Computing in float32, the kernel widens half-precision scales
        // exactly as it reads them: fewer bytes per token, same products.
        self.weights.narrow_scales = self.weights.dtype == Some(Dtype::Float32);
        // `dequantize` is set only by `Auto` on the CPU.
        if self.weights.dequantize {
            self.weights.dequantize = false;
            // What the plan added after the dtype's own note (FP8, wrapper).
            let tail = self.summary.split_once(')').map_or("", |(_, tail)| tail);
            self.summary = format!(
                "float32, weights kept quantized, scales in float16/bfloat16 where exact \
                 (auto: CPU, our kernel){tail}"
            );
        }
        self
    }

    /// This plan with RMSNorm, RoPE, decode attention and SwiGLU on a CPU stream
    /// computed by our kernels when `kernel` asks (see
    /// [`mlx_rs_core::cpu_fused`]); a GPU keeps MLX's fused ops.
    pub fn with_cpu_fast(mut self, kernel: mlx_rs_core::cpu_fused::CpuFast) -> Self {
        self.weights.cpu_fast = kernel;
        self
    }

    fn resolve_dtype(
        choice: ComputeDtype,
        config: &MistralConfig,
        on_gpu: bool,
        available: Option<u64>,
    ) -> LoadPlan {
        let quantized = config.quantization().is_some();
        // Float32 on the CPU: linear layers store their matrices transposed.
        let plan = |dtype, dequantize, summary: String| LoadPlan {
            weights: WeightOptions {
                dtype,
                dequantize,
                transpose_f32: !on_gpu && dtype == Some(Dtype::Float32),
                row_split: if on_gpu { 1 } else { cpu_parallelism() },
                // Decode waits on the host there: fewer products per step.
                fuse_projections: on_gpu,
                // MLX's kernel unless the caller asks (`with_qmv`).
                qmv: Default::default(),
                // MLX's kernel unless the caller asks (`with_cpu_qmm`).
                cpu_qmm: Default::default(),
                // MLX's ops unless the caller asks (`with_cpu_fast`).
                cpu_fast: Default::default(),
                // Cast with the rest unless our CPU kernel reads them
                // (`with_cpu_qmm`).
                narrow_scales: false,
            },
            summary,
        };
        match choice {
            ComputeDtype::Checkpoint => plan(None, false, "checkpoint dtype".to_owned()),
            ComputeDtype::Exact(dtype) => plan(Some(dtype), false, dtype_name(dtype).to_owned()),
            ComputeDtype::Auto if on_gpu => {
                plan(None, false, "checkpoint dtype (auto: GPU)".to_owned())
            }
            ComputeDtype::Auto if !quantized => plan(
                Some(Dtype::Float32),
                false,
                "float32 (auto: CPU)".to_owned(),
            ),
            ComputeDtype::Auto => {
                let dense = dense_f32_bytes(config);
                let budget = available.map(|a| a / 2);
                let gb = |b: u64| b as f64 / 1e9;
                match budget {
                    Some(budget) if dense <= budget => plan(
                        Some(Dtype::Float32),
                        true,
                        format!(
                            "float32, quantized weights dequantized (auto: CPU; {:.2} GB dense \
                             fits in half of the {:.2} GB available)",
                            gb(dense),
                            gb(2 * budget)
                        ),
                    ),
                    _ => plan(
                        Some(Dtype::Float32),
                        false,
                        format!(
                            "float32 scales, weights kept quantized (auto: CPU; {:.2} GB dense \
                             would not fit in half of the {} available)",
                            gb(dense),
                            available.map_or("(unknown) memory".to_owned(), |a| format!(
                                "{:.2} GB",
                                gb(a)
                            ))
                        ),
                    ),
                }
            }
        }
    }
}

/// The size of `config`'s model as `Auto` holds it on the CPU: every matrix
/// dense in float32, and two vocabulary tables even when they are tied (the
/// tied head gets its own transposed copy, see `WeightOptions::transpose_f32`).
pub fn dense_f32_bytes(config: &MistralConfig) -> u64 {
    let d = config.hidden_size.max(0) as u64;
    let vocab = config.vocab_size.max(0) as u64;
    let layers = config.num_hidden_layers.max(0) as usize;
    let params = (0..layers)
        .map(|i| layer_params(config, i))
        .fold(0u64, u64::saturating_add)
        .saturating_add(2 * vocab * d + d);
    params.saturating_mul(4)
}

/// Parameters of layer `i`: attention, feed-forward and its two norms.
fn layer_params(config: &MistralConfig, i: usize) -> u64 {
    let n = |v: i32| v.max(0) as u64;
    let d = n(config.hidden_size);
    let heads = n(config.num_attention_heads);
    let swiglu = |inter: u64| 3 * d * inter;
    let Some(latent) = &config.latent else {
        let (kv, head_dim) = (n(config.num_key_value_heads()), n(config.head_dim()));
        let attention = d * head_dim * (2 * heads + 2 * kv);
        // A mixture of experts: every expert's SwiGLU, and the router.
        let mlp = match config.experts() {
            Some((experts, _)) => {
                n(experts).saturating_mul(swiglu(n(config.intermediate_size)) + d)
            }
            None => swiglu(n(config.intermediate_size)),
        };
        return attention + mlp + 2 * d;
    };
    // Latent attention: queries (through the LoRA and its norm), the
    // compressed key/value and its norm, kv_b_proj absorbed into two
    // per-head maps of the same size, the output.
    let (rank, rope) = (n(latent.kv_lora_rank), n(latent.qk_rope_head_dim));
    let (nope, v) = (n(latent.qk_nope_head_dim), n(latent.v_head_dim));
    let q_out = heads * (nope + rope);
    let queries = match latent.q_lora_rank {
        Some(r) => d * n(r) + n(r) + n(r) * q_out,
        None => d * q_out,
    };
    let attention = queries + d * (rank + rope) + rank + heads * rank * (nope + v) + heads * v * d;
    let mlp = match latent.n_routed_experts.filter(|_| latent.has_experts(i)) {
        Some(experts) => {
            let moe = n(latent.moe_intermediate_size);
            let shared = latent.n_shared_experts.map_or(0, |s| swiglu(moe * n(s)));
            n(experts).saturating_mul(swiglu(moe) + d) + shared
        }
        None => swiglu(n(config.intermediate_size)),
    };
    attention + mlp + 2 * d
}

/// `MemAvailable` from `/proc/meminfo` (Linux); None elsewhere.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A short name for a float dtype.
pub fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::Float32 => "float32",
        Dtype::Float16 => "float16",
        Dtype::Bfloat16 => "bfloat16",
        Dtype::Float64 => "float64",
        _ => "non-float",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(quantized: bool) -> MistralConfig {
        let quant = if quantized {
            r#", "quantization": {"group_size": 64, "bits": 4}"#
        } else {
            ""
        };
        MistralConfig::from_json_str(&format!(
            r#"{{"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "vocab_size": 1000, "rms_norm_eps": 1e-5{quant}}}"#
        ))
        .expect("config")
    }

    #[test]
    fn dense_size_counts_every_matrix() {
        let cfg = config(false);
        // Per layer: q, o 64x64; k, v 64x32; three 64x128 MLP matrices; two norms.
        let layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64;
        let expected = 2 * layer + 2 * 1000 * 64 + 64;
        assert_eq!(dense_f32_bytes(&cfg), 4 * expected as u64);
    }

    /// Our CPU kernel: `Auto` keeps quantized weights quantized (scales
    /// narrowed where exact) and stacks projections; MLX's leaves the plan
    /// as it was.
    #[test]
    fn cpu_qmm_keeps_auto_quantized_and_fuses() {
        use mlx_rs_core::cpu_qmm::CpuQmm;
        let q = config(true);
        let roomy = || LoadPlan::resolve_for(ComputeDtype::Auto, &q, false, Some(1 << 40));
        let ours = roomy().with_cpu_qmm(CpuQmm::Ours);
        assert_eq!(ours.weights.dtype, Some(Dtype::Float32));
        assert!(!ours.weights.dequantize);
        assert!(ours.weights.fuse_projections);
        assert!(ours.weights.narrow_scales);
        assert_eq!(ours.weights.cpu_qmm, CpuQmm::Ours);
        assert!(ours.summary.contains("kept quantized"), "{}", ours.summary);
        assert_eq!(roomy().with_cpu_qmm(CpuQmm::Mlx).weights, roomy().weights);
        let checkpoint = LoadPlan::resolve_for(ComputeDtype::Checkpoint, &q, false, None)
            .with_cpu_qmm(CpuQmm::Ours);
        assert_eq!(checkpoint.weights.dtype, None);
        assert!(!checkpoint.weights.dequantize);
        // Narrowed scales are widened back to the compute dtype only when
        // there is one.
        assert!(!checkpoint.weights.narrow_scales);
    }

    #[test]
    fn auto_picks_by_device_and_memory() {
        let q = config(true);
        let dense = dense_f32_bytes(&q);
        let gpu = LoadPlan::resolve_for(ComputeDtype::Auto, &q, true, Some(1 << 40));
        assert_eq!(
            gpu.weights,
            WeightOptions {
                row_split: 1,
                fuse_projections: true,
                ..WeightOptions::default()
            }
        );
        let roomy = LoadPlan::resolve_for(ComputeDtype::Auto, &q, false, Some(2 * dense));
        assert_eq!(roomy.weights.dtype, Some(Dtype::Float32));
        assert!(roomy.weights.dequantize);
        let tight = LoadPlan::resolve_for(ComputeDtype::Auto, &q, false, Some(2 * dense - 2));
        assert!(!tight.weights.dequantize);
        assert_eq!(tight.weights.dtype, Some(Dtype::Float32));
        let unknown = LoadPlan::resolve_for(ComputeDtype::Auto, &q, false, None);
        assert!(!unknown.weights.dequantize);
        let dense_cfg = config(false);
        let plain = LoadPlan::resolve_for(ComputeDtype::Auto, &dense_cfg, false, None);
        assert_eq!(plain.weights.dtype, Some(Dtype::Float32));
        let forced = LoadPlan::resolve_for(ComputeDtype::Exact(Dtype::Bfloat16), &q, false, None);
        assert_eq!(forced.weights.dtype, Some(Dtype::Bfloat16));
        assert!(!forced.weights.dequantize);
    }
}
