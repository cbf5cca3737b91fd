//! sentencepiece's BPE encoding, for [`crate::sentencepiece::SentencePiece`].
//!
//! Design notes (sentencepiece's `bpe_model.cc` algorithm):
//! - Normalize: every space becomes `▁`, and a `▁` goes in front of a
//!   non-empty text (the dummy prefix).
//! - Split into symbols: at each position the longest user-defined piece
//!   that matches (such a symbol never merges), else one character.
//! - Merge: among neighbouring symbols whose concatenation is a piece, the
//!   one of highest score merges first, the leftmost on ties; repeat until
//!   no pair is a piece.
//! - Each symbol is its piece's id, or, when it is no piece, the ids of its
//!   UTF-8 bytes' `<0xNN>` pieces (byte fallback).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::sentencepiece_hf::SPACE;

/// The merge tables of one vocabulary.
#[derive(Debug, Clone)]
pub(crate) struct Bpe {
    /// Normal and user-defined pieces: id and score.
    pieces: HashMap<String, (u32, f32)>,
    /// User-defined pieces, longest first.
    user_defined: Vec<String>,
    /// The id of each byte's `<0xNN>` piece.
    byte_ids: Box<[u32; 256]>,
    /// The byte of each `<0xNN>` piece's id (decoding).
    byte_of: HashMap<u32, u8>,
    add_prefix: bool,
}

/// A symbol of the text being merged: a byte range, linked to its
/// neighbours; `len == 0` once merged into its left neighbour.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
    frozen: bool,
}

/// A candidate merge of symbols `left` and `right` (`len` bytes in all).
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    /// Highest score first, then leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl Bpe {
    pub(crate) fn new(
        pieces: HashMap<String, (u32, f32)>,
        mut user_defined: Vec<String>,
        byte_ids: [u32; 256],
        add_prefix: bool,
    ) -> Self {
        user_defined.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let byte_of = (0..=255u8).map(|b| (byte_ids[b as usize], b)).collect();
        Bpe {
            pieces,
            user_defined,
            byte_ids: Box::new(byte_ids),
            byte_of,
            add_prefix,
        }
    }

    /// Whether a `▁` goes in front of the text.
    pub(crate) fn adds_prefix(&self) -> bool {
        self.add_prefix
    }

    /// The byte a `<0xNN>` piece stands for (0 for other ids).
    pub(crate) fn byte_value(&self, id: u32) -> u8 {
        self.byte_of.get(&id).copied().unwrap_or(0)
    }

    /// The ids of `text` (see the module notes).
    pub(crate) fn encode(&self, text: &str) -> Vec<u32> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut norm = String::with_capacity(text.len() + 3 * (text.len() / 4 + 1));
        if self.add_prefix {
            norm.push_str(SPACE);
        }
        for c in text.chars() {
            match c {
                ' ' => norm.push_str(SPACE),
                c => norm.push(c),
            }
        }
        let mut symbols = self.split(&norm);
        let mut queue = BinaryHeap::new();
        for i in 1..symbols.len() {
            self.push_candidate(&norm, &symbols, i - 1, i, &mut queue);
        }
        while let Some(c) = queue.pop() {
            let (l, r) = (symbols[c.left], symbols[c.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != c.len {
                continue; // stale: one side has merged since
            }
            symbols[c.left].len += r.len;
            symbols[c.left].next = r.next;
            symbols[c.right].len = 0;
            if let Some(n) = r.next {
                symbols[n].prev = Some(c.left);
            }
            if let Some(p) = l.prev {
                self.push_candidate(&norm, &symbols, p, c.left, &mut queue);
            }
            if let Some(n) = r.next {
                self.push_candidate(&norm, &symbols, c.left, n, &mut queue);
            }
        }
        let mut ids = Vec::with_capacity(symbols.len());
        let mut at = Some(0);
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &norm[s.start..s.start + s.len];
            match self.pieces.get(piece) {
                Some(&(id, _)) => ids.push(id),
                None => ids.extend(piece.bytes().map(|b| self.byte_ids[b as usize])),
            }
            at = s.next;
        }
        ids
    }

    /// The initial symbols: user-defined pieces whole, else characters.
    fn split(&self, norm: &str) -> Vec<Symbol> {
        let mut symbols = Vec::with_capacity(norm.len());
        let mut at = 0;
        while at < norm.len() {
            let rest = &norm[at..];
            let user = self
                .user_defined
                .iter()
                .find(|u| rest.starts_with(u.as_str()));
            let (len, frozen) = match user {
                Some(u) => (u.len(), true),
                None => (rest.chars().next().map_or(1, char::len_utf8), false),
            };
            let i = symbols.len();
            symbols.push(Symbol {
                start: at,
                len,
                prev: i.checked_sub(1),
                next: None,
                frozen,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
            at += len;
        }
        symbols
    }

    fn push_candidate(
        &self,
        norm: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Candidate>,
    ) {
        let (l, r) = (symbols[left], symbols[right]);
        if l.frozen || r.frozen {
            return;
        }
        let len = l.len + r.len;
        if let Some(&(_, score)) = self.pieces.get(&norm[l.start..l.start + len]) {
            queue.push(Candidate {
                score,
                left,
                right,
                len,
            });
        }
    }
}
