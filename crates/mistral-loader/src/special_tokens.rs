//! [`SpecialTokens`]: a model's beginning- and end-of-sequence ids, as the
//! tokenizer files or a GGUF file's metadata give them.

/// The model's beginning- and end-of-sequence token ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence, if the model declares one.
    pub bos: Option<u32>,
    /// Every id that ends generation, in file order, without repeats.
    pub eos: Vec<u32>,
}

impl SpecialTokens {
    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }
}
