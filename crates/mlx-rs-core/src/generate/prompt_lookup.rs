//! Prompt lookup: draft tokens by finding the sequence's latest n-gram
//! earlier in the sequence (prompt and output so far) and proposing what
//! followed it there. Needs no draft model; pays off where the output
//! copies its input (quoting, editing, code rewriting).

/// N-gram drafting settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptLookup {
    /// Tokens proposed per verification step (at most).
    pub num_draft_tokens: usize,
    /// The longest suffix n-gram searched for; shorter ones down to
    /// `min_ngram` tokens are tried when it is not found.
    pub max_ngram: usize,
    /// The shortest n-gram that counts as a match: one-token matches are
    /// mostly chance on free text, where their drafts are rejected and only
    /// cost time.
    pub min_ngram: usize,
}

impl PromptLookup {
    /// The longest n-gram searched for by [`PromptLookup::new`].
    pub const DEFAULT_MAX_NGRAM: usize = 3;
    /// The shortest n-gram matched by [`PromptLookup::new`].
    pub const DEFAULT_MIN_NGRAM: usize = 2;

    /// Up to `num_draft_tokens` tokens per step, n-grams of
    /// [`PromptLookup::DEFAULT_MIN_NGRAM`] to
    /// [`PromptLookup::DEFAULT_MAX_NGRAM`] tokens.
    pub fn new(num_draft_tokens: usize) -> Self {
        PromptLookup {
            num_draft_tokens,
            max_ngram: Self::DEFAULT_MAX_NGRAM,
            min_ngram: Self::DEFAULT_MIN_NGRAM,
        }
    }

    /// Up to `max` tokens that followed the latest earlier occurrence of
    /// the longest suffix of `history` (from `max_ngram` tokens down to
    /// `min_ngram`, at least one) that occurs earlier; empty when none does.
    pub fn propose(&self, history: &[u32], max: usize) -> Vec<u32> {
        let len = history.len();
        if max == 0 {
            return Vec::new();
        }
        for n in (self.min_ngram.max(1)..=self.max_ngram.min(len.saturating_sub(1))).rev() {
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
