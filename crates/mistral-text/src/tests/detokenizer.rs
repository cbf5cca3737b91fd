//! Streaming detokenization on a byte-level BPE tokenizer (tekken / GPT-2
//! style) trained here with the `tokenizers` crate: the streamed segments
//! must always concatenate to the one-shot `decode` of the same ids, and no
//! segment may end in a partial character.
//!
//! SentencePiece-style tokenizers (byte fallback, `Strip` of the first
//! space) are checked against sentencepiece itself in mistral-loader's
//! `tokenizer_parity` test, on the real Mistral models.

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::detokenizer::{is_byte_token, StreamingDetokenizer};

pub(super) const CORPUS: &[&str] = &[
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "Café, naïve, résumé, Ångström, façade, Straße",
    "日本語のテキストと中文文本，还有한국어.",
    "emoji: 😀🎉👍🏽 and flags 🇫🇷 family 👨‍👩‍👧",
    "def f(x):\n\treturn x ** 2  # square\n\n\nprint(f(3))\r\n",
    "   whitespace   runs\t\tand digits 1234567890",
    "zero\u{200b}width\u{200b}space and\u{a0}nbsp",
];

/// A byte-level BPE with 400 ids and two special tokens, trained on `CORPUS`.
pub(super) fn byte_level_bpe() -> Tokenizer {
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(400)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![
            AddedToken::from("<s>", true),
            AddedToken::from("</s>", true),
        ])
        .build()
        .into();
    tokenizer
        .train(&mut trainer, CORPUS.iter().map(|s| s.to_string()))
        .expect("train");
    tokenizer
}

/// Streams `ids`, checking every segment; returns the concatenation.
fn stream(tokenizer: &Tokenizer, ids: &[u32], skip: bool) -> String {
    let mut detok = StreamingDetokenizer::new(tokenizer, skip);
    let mut out = String::new();
    for &id in ids {
        let segment = detok.step(id).expect("step");
        assert!(
            !segment.ends_with(char::REPLACEMENT_CHARACTER)
                || tokenizer.decode(ids, skip).unwrap().contains('\u{fffd}'),
            "segment {segment:?} ends in U+FFFD although the full text has none"
        );
        out += &segment;
    }
    out + &detok.finish().expect("finish")
}

#[test]
fn byte_level_corpus_streams_like_one_shot_decode() {
    let tokenizer = byte_level_bpe();
    for text in CORPUS {
        let ids = tokenizer.encode(*text, false).unwrap().get_ids().to_vec();
        let one_shot = tokenizer.decode(&ids, true).unwrap();
        assert_eq!(&one_shot, text, "the trained BPE round-trips");
        assert_eq!(stream(&tokenizer, &ids, true), one_shot, "{text:?}");
    }
}

#[test]
fn byte_level_random_ids_stream_like_one_shot_decode() {
    let tokenizer = byte_level_bpe();
    let vocab = tokenizer.get_vocab_size(true) as u32;
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2000 {
        let n = rng.usize(1..=16);
        // Random ids split characters between tokens, make invalid UTF-8,
        // and put special tokens anywhere.
        let ids: Vec<u32> = (0..n).map(|_| rng.u32(0..vocab)).collect();
        for skip in [true, false] {
            let one_shot = tokenizer.decode(&ids, skip).unwrap();
            assert_eq!(
                stream(&tokenizer, &ids, skip),
                one_shot,
                "{ids:?} skip={skip}"
            );
        }
    }
}

#[test]
fn stream_reset_starts_a_new_sequence() {
    let tokenizer = byte_level_bpe();
    let ids = tokenizer
        .encode("Café 😀 ok", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let mut detok = StreamingDetokenizer::new(&tokenizer, true);
    for &id in &ids[..ids.len() / 2] {
        detok.step(id).unwrap();
    }
    detok.reset();
    let mut out = String::new();
    for &id in &ids {
        out += &detok.step(id).unwrap();
    }
    out += &detok.finish().unwrap();
    assert_eq!(out, tokenizer.decode(&ids, true).unwrap());
}

#[test]
fn byte_token_names() {
    for b in 0..=255u8 {
        assert!(is_byte_token(&format!("<0x{b:02X}>")));
    }
    for s in ["<0x1>", "<0xGG>", "0x41", "<s>", "<0x41>x", "▁<0x41>"] {
        assert!(!is_byte_token(s), "{s}");
    }
}
