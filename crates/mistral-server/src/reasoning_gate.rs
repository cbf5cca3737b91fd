//! Constrained output that starts after the reasoning: while an answer is
//! between its reasoning markers (`[THINK]`...`[/THINK]`,
//! `<think>`...`</think>`) every token is allowed and none reaches the
//! output constraint; the constraint takes over once the reasoning closes
//! (as vLLM applies structured output after its reasoning parser's end).
//! Before the constraint has taken a token, the answer may open reasoning.

use mlx_rs_core::TokenConstraint;

use mistral_loader::Tokenizer;

/// The tokens around a model's reasoning: `[THINK]`/`[/THINK]` (Mistral's
/// protocol from v13) or `<think>`/`</think>` (chat templates), single
/// tokens of the vocabulary. What the model writes between them is
/// `reasoning_content`, not `content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasoningMarkers {
    /// Opens the reasoning.
    pub open: u32,
    /// Closes it.
    pub close: u32,
}

impl ReasoningMarkers {
    /// The markers of a model with `protocol` (if its chat prompts go
    /// through mistral-common's) and `tokenizer`.
    pub(crate) fn of(
        protocol: Option<&mistral_loader::MistralTokenizer>,
        tokenizer: &Tokenizer,
    ) -> Option<Self> {
        let (open, close) = match protocol {
            Some(mistral) if mistral.version() >= 13 => (
                mistral.special_id("[THINK]")?,
                mistral.special_id("[/THINK]")?,
            ),
            Some(_) => return None,
            None => (
                tokenizer.token_to_id("<think>")?,
                tokenizer.token_to_id("</think>")?,
            ),
        };
        Some(ReasoningMarkers { open, close })
    }

    /// Whether an answer to `prompt` starts inside reasoning: the prompt
    /// opened it (a template that ends with `<think>`) without closing it.
    pub fn open_after(&self, prompt: &[u32]) -> bool {
        let last = |id: u32| prompt.iter().rposition(|&t| t == id);
        match (last(self.open), last(self.close)) {
            (Some(open), Some(close)) => open > close,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// `inner` gated by the reasoning markers (see the module notes).
#[derive(Debug)]
pub struct ReasoningGate<C> {
    inner: C,
    markers: ReasoningMarkers,
    /// Words of an all-allowed mask (the vocabulary's size in bits).
    words: usize,
    inside: bool,
    started: bool,
}

impl<C: TokenConstraint> ReasoningGate<C> {
    /// Gates `inner` for a vocabulary of `vocab` tokens; `inside`: the
    /// answer starts inside reasoning (its prompt opened it).
    pub fn new(inner: C, markers: ReasoningMarkers, vocab: usize, inside: bool) -> Self {
        ReasoningGate {
            inner,
            markers,
            words: vocab.div_ceil(32),
            inside,
            started: false,
        }
    }
}

impl<C: TokenConstraint> TokenConstraint for ReasoningGate<C> {
    fn consume(&mut self, token: u32) -> Result<(), String> {
        if self.inside {
            self.inside = token != self.markers.close;
            return Ok(());
        }
        if !self.started && token == self.markers.open {
            self.inside = true;
            return Ok(());
        }
        self.started = true;
        self.inner.consume(token)
    }

    fn allowed(&mut self) -> Result<Vec<u32>, String> {
        if self.inside {
            return Ok(vec![u32::MAX; self.words]);
        }
        let mut words = self.inner.allowed()?;
        if !self.started {
            let open = self.markers.open as usize;
            if let Some(word) = words.get_mut(open / 32) {
                *word |= 1 << (open % 32);
            }
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    //! The gate's states, on a constraint that allows token 1 only and
    //! records what it is given.

    use super::*;

    #[derive(Debug, Default)]
    struct OnlyOne {
        taken: Vec<u32>,
    }

    impl TokenConstraint for OnlyOne {
        fn consume(&mut self, token: u32) -> Result<(), String> {
            self.taken.push(token);
            Ok(())
        }

        fn allowed(&mut self) -> Result<Vec<u32>, String> {
            Ok(vec![0b10, 0])
        }
    }

    const MARKERS: ReasoningMarkers = ReasoningMarkers {
        open: 40,
        close: 41,
    };

    fn allows(gate: &mut ReasoningGate<OnlyOne>, token: u32) -> bool {
        let words = gate.allowed().expect("allowed");
        (words[token as usize / 32] >> (token % 32)) & 1 == 1
    }

    #[test]
    fn the_constraint_starts_after_the_reasoning() {
        let mut gate = ReasoningGate::new(OnlyOne::default(), MARKERS, 64, false);
        assert!(allows(&mut gate, 1) && allows(&mut gate, 40) && !allows(&mut gate, 7));
        for token in [40, 7, 9, 41] {
            gate.consume(token).expect("consume");
        }
        assert!(
            gate.inner.taken.is_empty(),
            "reasoning reached the constraint"
        );
        assert!(allows(&mut gate, 1) && allows(&mut gate, 40) && !allows(&mut gate, 7));
        gate.consume(1).expect("consume");
        assert_eq!(gate.inner.taken, [1]);
        assert!(
            !allows(&mut gate, 40),
            "no reasoning once the output started"
        );
    }

    #[test]
    fn an_answer_may_start_inside_the_reasoning() {
        let mut gate = ReasoningGate::new(OnlyOne::default(), MARKERS, 64, true);
        assert!(allows(&mut gate, 7) && allows(&mut gate, 63));
        gate.consume(7).expect("consume");
        gate.consume(41).expect("consume");
        assert!(gate.inner.taken.is_empty());
        assert!(!allows(&mut gate, 7));
    }

    #[test]
    fn an_answer_starts_in_reasoning_when_the_prompt_left_it_open() {
        let m = ReasoningMarkers { open: 7, close: 8 };
        assert!(!m.open_after(&[1, 2, 3]));
        assert!(m.open_after(&[1, 7]), "a template that ends with <think>");
        assert!(
            !m.open_after(&[1, 7, 4, 8, 5]),
            "an earlier turn's closed reasoning"
        );
        assert!(m.open_after(&[1, 7, 8, 2, 7, 3]));
    }
}
