//! The sampler's stages, run through MLX's `compile` as mlx-lm runs them
//! (each filter and `categorical_sampling` is an `mx.compile`d function in
//! `sample_utils.py`).
//!
//! Why: a compiled function's element-wise ops are fused into one kernel
//! whose rounding may differ from op-by-op kernels (for example
//! `logits * (1 / temp)` plus the Gumbel noise may become one fused
//! multiply-add). A seeded draw at a near-tie then falls differently. The
//! same ops compiled the same way give the same fused kernels, so seeded
//! draws agree with mlx-lm's.
//!
//! On the CPU, MLX builds compiled kernels as C++ with the system's `g++` at
//! run time; where it finds none, it runs the function op by op (for
//! mlx-lm's functions too). Seen on 2026-11-28 on an AVX-512 Xeon: mlx-lm's
//! compiled draw and the op-by-op one picked different tokens at a near-tie
//! (a seeded top-p run of the window test model), so the CPU compiles too.

use mlx_rs::{error::Exception, transforms::compile::compile, Array};

use crate::error::Result;

type StageFn = dyn FnMut(&[Array]) -> std::result::Result<Vec<Array>, Exception>;

/// One sampling stage: a function of arrays, compiled or run as is.
pub(crate) struct Stage {
    run: Box<StageFn>,
}

impl Stage {
    /// `f` compiled with MLX (`compiled`) or run op by op.
    pub(crate) fn new<F>(f: F, compiled: bool) -> Self
    where
        F: FnMut(&[Array]) -> std::result::Result<Vec<Array>, Exception> + 'static,
    {
        let run: Box<StageFn> = if compiled {
            Box::new(compile(f, false))
        } else {
            Box::new(f)
        };
        Stage { run }
    }

    /// Runs the stage on `args` and returns its one output.
    pub(crate) fn call(&mut self, args: &[Array]) -> Result<Array> {
        let mut out = (self.run)(args)?;
        Ok(out.remove(0))
    }
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stage")
    }
}
