//! Prompt lookup: draft tokens by finding the sequence's latest n-gram
//! earlier in the sequence (prompt and output so far) and proposing what
//! followed it there. Needs no draft model; pays off where the output
//! copies its input (quoting, editing, code rewriting).

/// N-gram drafting settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptLookup {
    /// Tokens proposed per verification step (at most).
    pub num_draft_tokens: usize,
    /// The longest suffix n-gram searched for; shorter ones down to one
    /// token are tried when it is not found.
    pub max_ngram: usize,
}

impl PromptLookup {
    /// The longest n-gram searched for by [`PromptLookup::new`].
    pub const DEFAULT_MAX_NGRAM: usize = 3;

    /// Up to `num_draft_tokens` tokens per step, n-grams of up to
    /// [`PromptLookup::DEFAULT_MAX_NGRAM`] tokens.
    pub fn new(num_draft_tokens: usize) -> Self {
        PromptLookup {
            num_draft_tokens,
            max_ngram: Self::DEFAULT_MAX_NGRAM,
        }
    }

    /// Up to `max` tokens that followed the latest earlier occurrence of
    /// the longest suffix of `history` (from `max_ngram` tokens down to
    /// one) that occurs earlier; empty when none does.
    pub fn propose(&self, history: &[u32], max: usize) -> Vec<u32> {
        let len = history.len();
        if max == 0 {
            return Vec::new();
        }
        for n in (1..=self.max_ngram.min(len.saturating_sub(1))).rev() {
            let suffix = &history[len - n..];
            // Latest start first; a match must end before the suffix starts
            // over itself, so the continuation has at least one token.
            let found = (0..len - n)
                .rev()
                .find(|&start| &history[start..start + n] == suffix);
            if let Some(start) = found {
                let from = start + n;
                return history[from..(from + max).min(len)].to_vec();
            }
        }
        Vec::new()
    }
}
