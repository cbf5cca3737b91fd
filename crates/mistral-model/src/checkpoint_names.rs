//! How a wrapper checkpoint names the text model's tensors: a `mistral3`
//! checkpoint (vision-language) holds them as `language_model.model.*` and
//! `language_model.lm_head.*` (Mistral's and mlx-community's layout) or as
//! `model.language_model.*` and `lm_head.*` (transformers 5). The model
//! asks for its own names (`model.*`, `lm_head.*`); `WrapperNames` finds
//! them under either layout. The vision tower and projector are never asked
//! for, so never read ([`is_vision_tensor`]).

use mlx_rs::Array;

use crate::weights::{Block, WeightSource};

/// Whether `name` is a tensor of a wrapper's vision side (never loaded).
pub fn is_vision_tensor(name: &str) -> bool {
    name.contains("vision_tower.") || name.contains("multi_modal_projector.")
}

/// The names tensor `name` of the text model may have in a wrapper
/// checkpoint, in the order tried.
fn candidates(name: &str) -> [String; 2] {
    match name.strip_prefix("model.") {
        Some(rest) => [
            format!("language_model.model.{rest}"),
            format!("model.language_model.{rest}"),
        ],
        None => [format!("language_model.{name}"), name.to_owned()],
    }
}

/// A source of a wrapper checkpoint, seen with the text model's names.
pub(crate) struct WrapperNames<'a> {
    /// The checkpoint.
    pub source: &'a mut dyn WeightSource,
}

impl WeightSource for WrapperNames<'_> {
    fn take(&mut self, name: &str) -> Option<Array> {
        candidates(name)
            .iter()
            .find_map(|candidate| self.source.take(candidate))
    }

    fn take_block(&mut self, name: &str, block: Block) -> Option<Array> {
        candidates(name)
            .iter()
            .find_map(|candidate| self.source.take_block(candidate, block))
    }
}
