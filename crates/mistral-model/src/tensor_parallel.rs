//! [`TensorParallel`]: one model split over the processes of an MLX
//! distributed group, as mlx-lm's `shard()` splits llama.
//!
//! - `q_proj`, `k_proj`, `v_proj`, `gate_proj`, `up_proj` keep their rank's
//!   block of output rows ([`Split::Outputs`]): each rank computes its own
//!   heads and its own slice of the MLP's hidden units;
//! - `o_proj` and `down_proj` keep the matching block of input columns
//!   ([`Split::Inputs`]); their partial products are summed over the group
//!   (`all_sum`), then the bias (if any) is added once;
//! - attention heads and key/value heads are divided by the group's size
//!   (an error when they do not divide); quantized matrices split on their
//!   groups' boundaries (an error when a rank's share is not whole groups);
//! - the embedding, the norms and the output head are replicated.
//!
//! Each rank takes only its [`Block`](crate::Block) of every split tensor
//! from the [`WeightSource`](crate::WeightSource): the loader's safetensors
//! source reads just those bytes from the files, so a rank's memory holds
//! its share of the split matrices plus the replicated tensors, at load as
//! after it.

use std::sync::Arc;

use mlx_rs::Array;
use mlx_rs_core::distributed::{all_sum, Group};

use crate::error::ModelError;

/// How a linear layer is split over the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Each rank keeps a block of the output rows (mlx-lm's
    /// "all-to-sharded").
    Outputs,
    /// Each rank keeps a block of the input columns; the outputs are summed
    /// over the group (mlx-lm's "sharded-to-all").
    Inputs,
}

/// The group a model is split over (cheap to clone).
#[derive(Debug, Clone)]
pub struct TensorParallel {
    group: Arc<Group>,
}

impl TensorParallel {
    /// Splits over `group`.
    pub fn new(group: Group) -> Self {
        TensorParallel {
            group: Arc::new(group),
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> i32 {
        self.group.rank()
    }

    /// The number of ranks.
    pub fn size(&self) -> i32 {
        self.group.size()
    }

    /// The group.
    pub fn group(&self) -> &Group {
        &self.group
    }

    /// `x` summed over the group.
    pub fn all_sum(&self, x: &Array) -> Result<Array, ModelError> {
        Ok(all_sum(x, &self.group)?)
    }

    /// `n` divided by the group's size; an error naming `what` when it does
    /// not divide.
    pub fn divide(&self, n: i32, what: &str) -> Result<i32, ModelError> {
        let size = self.size();
        if n % size != 0 {
            return Err(ModelError::TensorParallel(format!(
                "{what} ({n}) does not divide by the {size} ranks"
            )));
        }
        Ok(n / size)
    }
}
