//! [`Mistral`] as an `mlx_rs_core` [`LanguageModel`], so the core's
//! `Generate` can drive it; [`ModelError`]s convert into the core's
//! [`Error::Model`](mlx_rs_core::Error::Model).

use mlx_rs::Array;
use mlx_rs_core::cpu_fused::CpuFast;
use mlx_rs_core::{KeyValueCache, LanguageModel};

use crate::error::ModelError;
use crate::model::Mistral;

impl From<ModelError> for mlx_rs_core::Error {
    fn from(err: ModelError) -> Self {
        mlx_rs_core::Error::Model(Box::new(err))
    }
}

impl<C: KeyValueCache> LanguageModel<C> for Mistral {
    fn forward(
        &mut self,
        tokens: &Array,
        cache: &mut Vec<Option<C>>,
    ) -> mlx_rs_core::Result<Array> {
        // The generator checks its prompt; sampled ids are in range.
        Ok(Mistral::forward_unchecked(self, tokens, cache)?)
    }

    fn vocab_size(&self) -> Option<i32> {
        Some(self.config().vocab_size)
    }

    fn cpu_fast(&self) -> CpuFast {
        Mistral::cpu_fast(self)
    }
}
