//! How a mixture-of-experts layer picks each token's experts and weighs
//! them: Mixtral's softmax over the top-k router scores, or DeepSeek-V3's
//! grouped selection that Mistral 4 uses (mlx-lm `mistral4.py`'s
//! `mistral4_expert_select`), in mlx-lm's order of operations.

use mlx_rs::{
    ops::{
        argpartition_axis,
        indexing::{put_along_axis, take_along_axis, topk_axis, IndexOp},
        softmax_axis,
    },
    Array, Dtype,
};

use crate::error::ModelError;

/// A routing rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Routing {
    /// The top `k` router scores, softmaxed among themselves (Mixtral).
    TopK,
    /// Softmax over all experts in float32; experts only from the
    /// `topk_group` groups (of `n_group`) with the highest sum of their two
    /// best scores; the chosen scores normalized to sum to 1 if asked, then
    /// multiplied by `scaling` (Mistral 4, DeepSeek-V3).
    Grouped {
        /// Groups the experts are split into.
        n_group: i32,
        /// Groups a token's experts may come from.
        topk_group: i32,
        /// `routed_scaling_factor`.
        scaling: f32,
        /// `norm_topk_prob`.
        normalize: bool,
    },
}

/// The first `k` entries of `a`'s last axis.
fn first(a: &Array, k: i32) -> Array {
    a.index((.., ..k))
}

impl Routing {
    /// The experts `[N, k]` and their weights `[N, k]` for the router
    /// scores `gates` `[N, experts]`.
    pub fn select(&self, gates: &Array, k: i32) -> Result<(Array, Array), ModelError> {
        match *self {
            Routing::TopK => {
                let chosen = first(&argpartition_axis(gates.negative()?, k - 1, -1)?, k);
                let scores = softmax_axis(take_along_axis(gates, &chosen, -1)?, -1, true)?;
                Ok((chosen, scores))
            }
            Routing::Grouped {
                n_group,
                topk_group,
                scaling,
                normalize,
            } => {
                let scores = softmax_axis(gates.as_dtype(Dtype::Float32)?, -1, None)?;
                let dropped = n_group - topk_group;
                let for_choice = if n_group > 1 && dropped > 0 {
                    let (rows, experts) = (scores.dim(0), scores.dim(1));
                    let grouped = scores.reshape(&[rows, n_group, experts / n_group])?;
                    let group_scores = topk_axis(&grouped, 2, -1)?.sum_axis(-1, true)?;
                    let worst = argpartition_axis(&group_scores, dropped - 1, -2)?.index((
                        ..,
                        ..dropped,
                        ..,
                    ));
                    put_along_axis(&grouped, &worst, Array::from_f32(0.0), -2)?
                        .reshape(&[rows, experts])?
                } else {
                    scores.clone()
                };
                let chosen = first(&argpartition_axis(for_choice.negative()?, k - 1, -1)?, k);
                let mut weights = take_along_axis(&scores, &chosen, -1)?;
                if normalize {
                    let total = weights.sum_axis(-1, true)?.add(Array::from_f32(1e-20))?;
                    weights = weights.divide(&total)?;
                }
                Ok((chosen, weights.multiply(Array::from_f32(scaling))?))
            }
        }
    }
}
