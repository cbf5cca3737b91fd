//! When generation stops, and which text the user sees up to that point.
//!
//! Design notes:
//! - Three model-agnostic conditions ([`StopCriteria`]): an end-of-sequence
//!   id (the caller passes the model's, e.g. mistral-loader's
//!   `SpecialTokens::eos`), a user stop string, or a limit on the number of
//!   generated tokens.
//! - Stop strings are matched on text, not tokens: one may span several
//!   tokens, or start in the middle of one. [`StopStringMatcher`] emits text
//!   before a stop string, never the stop string itself (nor what follows it),
//!   and holds back the longest tail that could still be the start of one
//!   until the next text decides. Held text is at most the longest stop
//!   string minus one byte. At the end of a stream held text is released.
//! - [`StopChecker`] puts the detokenizer and the matcher together: ids in,
//!   final user-visible text and the stop reason out. The EOS token's own text
//!   is never shown; the token limit counts every id fed, EOS included.

use crate::detokenizer::{DetokenizeError, StreamingDetokenizer};

/// Errors of stop handling.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// An empty stop string would stop before any text.
    #[error("stop string number {index} is empty")]
    EmptyStopString {
        /// Its position in [`StopCriteria::stop_strings`].
        index: usize,
    },

    /// Detokenizing failed.
    #[error(transparent)]
    Detokenize(#[from] DetokenizeError),
}

/// When to stop generating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopCriteria {
    /// Ids that end generation (their text is not shown).
    pub eos_token_ids: Vec<u32>,
    /// Texts that end generation; neither they nor what follows is shown.
    pub stop_strings: Vec<String>,
    /// At most this many tokens are generated (`None`: no limit).
    pub max_tokens: Option<usize>,
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-sequence token was generated.
    Eos(u32),
    /// A stop string appeared in the text.
    StopString {
        /// Its position in [`StopCriteria::stop_strings`].
        index: usize,
        /// The stop string.
        text: String,
    },
    /// The token limit was reached.
    MaxTokens,
}

/// The result of feeding one token (or the end of the stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopStep {
    /// Text that became final and visible.
    pub text: String,
    /// `Some` once generation must stop; later calls return no text.
    pub stop: Option<StopReason>,
}

/// Finds stop strings in streamed text, holding back possible beginnings.
#[derive(Debug, Clone, Default)]
pub struct StopStringMatcher {
    stop_strings: Vec<String>,
    held: String,
    matched: Option<usize>,
}

impl StopStringMatcher {
    /// A matcher for `stop_strings`; none may be empty.
    pub fn new(stop_strings: Vec<String>) -> Result<Self, StopError> {
        if let Some(index) = stop_strings.iter().position(String::is_empty) {
            return Err(StopError::EmptyStopString { index });
        }
        Ok(StopStringMatcher {
            stop_strings,
            held: String::new(),
            matched: None,
        })
    }

    /// The index of the stop string found, once one was.
    pub fn matched(&self) -> Option<usize> {
        self.matched
    }

    /// Adds `text`; returns the text now known to come before any stop
    /// string, and the index of the stop string if one completed.
    pub fn push(&mut self, text: &str) -> (String, Option<usize>) {
        if self.matched.is_some() {
            return (String::new(), self.matched);
        }
        self.held.push_str(text);
        // The earliest occurrence of any stop string (ties: the first listed).
        let found = self
            .stop_strings
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, i)))
            .min();
        if let Some((at, index)) = found {
            let out = self.held[..at].to_string();
            self.held.clear();
            self.matched = Some(index);
            return (out, Some(index));
        }
        let keep = self.possible_start();
        let out = self.held[..keep].to_string();
        self.held.drain(..keep);
        (out, None)
    }

    /// Ends the stream: releases the held text (it did not become a stop
    /// string), or nothing once a stop string matched.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Byte offset in `held` of the longest tail that is a proper prefix of
    /// some stop string (`held.len()` when there is none).
    fn possible_start(&self) -> usize {
        let held = self.held.as_str();
        (0..held.len())
            .filter(|&at| held.is_char_boundary(at))
            .find(|&at| {
                let tail = &held[at..];
                self.stop_strings
                    .iter()
                    .any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(held.len())
    }
}

/// Detokenizes generated ids and decides when to stop.
#[derive(Debug)]
pub struct StopChecker<'a> {
    criteria: StopCriteria,
    detokenizer: StreamingDetokenizer<'a>,
    matcher: StopStringMatcher,
    count: usize,
    stopped: Option<StopReason>,
}

impl<'a> StopChecker<'a> {
    /// A checker for one generation, decoding with `detokenizer` (give it a
    /// fresh one; it should normally skip special tokens).
    pub fn new(
        criteria: StopCriteria,
        detokenizer: StreamingDetokenizer<'a>,
    ) -> Result<Self, StopError> {
        let matcher = StopStringMatcher::new(criteria.stop_strings.clone())?;
        Ok(StopChecker {
            criteria,
            detokenizer,
            matcher,
            count: 0,
            stopped: None,
        })
    }

    /// Why generation stopped, once it did.
    pub fn stopped(&self) -> Option<&StopReason> {
        self.stopped.as_ref()
    }

    /// How many ids were fed.
    pub fn token_count(&self) -> usize {
        self.count
    }

    /// Whether the limit is already reached before any token is generated
    /// (`max_tokens: Some(0)`).
    pub fn limit_reached(&self) -> bool {
        self.criteria.max_tokens.is_some_and(|m| self.count >= m)
    }

    /// Feeds one generated id. When the returned step says stop, its text
    /// includes everything still held (the stream is finished).
    pub fn push(&mut self, id: u32) -> Result<StopStep, StopError> {
        if let Some(reason) = &self.stopped {
            return Ok(StopStep {
                text: String::new(),
                stop: Some(reason.clone()),
            });
        }
        self.count += 1;
        if self.criteria.eos_token_ids.contains(&id) {
            return self.end(String::new(), StopReason::Eos(id));
        }
        let segment = self.detokenizer.step(id)?;
        let (text, matched) = self.matcher.push(&segment);
        if let Some(index) = matched {
            return Ok(self.stop_with(text, self.string_reason(index)));
        }
        if self.limit_reached() {
            return self.end(text, StopReason::MaxTokens);
        }
        Ok(StopStep { text, stop: None })
    }

    /// Ends generation for a reason of the caller's (e.g. the model's
    /// context is full): returns the text still held.
    pub fn finish(&mut self) -> Result<String, StopError> {
        if self.stopped.is_some() {
            return Ok(String::new());
        }
        let tail = self.detokenizer.finish()?;
        let (mut text, matched) = self.matcher.push(&tail);
        if matched.is_none() {
            text.push_str(&self.matcher.finish());
        }
        Ok(text)
    }

    /// Flushes the detokenizer and the matcher, then stops with `reason`
    /// (or with a stop string found in the flushed text).
    fn end(&mut self, mut text: String, reason: StopReason) -> Result<StopStep, StopError> {
        let tail = self.detokenizer.finish()?;
        let (more, matched) = self.matcher.push(&tail);
        text.push_str(&more);
        match matched {
            Some(index) => Ok(self.stop_with(text, self.string_reason(index))),
            None => {
                text.push_str(&self.matcher.finish());
                Ok(self.stop_with(text, reason))
            }
        }
    }

    fn string_reason(&self, index: usize) -> StopReason {
        StopReason::StopString {
            index,
            text: self
                .criteria
                .stop_strings
                .get(index)
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn stop_with(&mut self, text: String, reason: StopReason) -> StopStep {
        self.stopped = Some(reason.clone());
        StopStep {
            text,
            stop: Some(reason),
        }
    }
}
