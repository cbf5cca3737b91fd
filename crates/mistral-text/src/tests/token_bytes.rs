//! [`TokenBytes`] on the byte-level BPE trained in `detokenizer.rs`: the
//! bytes of a text's ids, concatenated, are the text's UTF-8 (the
//! tokenizer's own one-shot decode), for every corpus string; a token that
//! holds part of a character is not valid UTF-8 alone; added tokens are
//! their content. (SentencePiece pieces are checked against sentencepiece
//! itself in mistral-loader's `tokenizer_parity` test.)

use super::detokenizer::{byte_level_bpe, CORPUS};
use crate::TokenBytes;

#[test]
fn byte_level_token_bytes_spell_the_text() {
    let tokenizer = byte_level_bpe();
    let bytes = TokenBytes::new(&tokenizer);
    let mut partial = 0;
    for text in CORPUS {
        let ids = tokenizer.encode(*text, false).unwrap().get_ids().to_vec();
        let decoded = tokenizer.decode(&ids, false).unwrap();
        assert_eq!(&decoded, text);
        let spelled: Vec<u8> = ids
            .iter()
            .flat_map(|&id| bytes.get(id).unwrap().to_vec())
            .collect();
        assert_eq!(spelled, decoded.as_bytes(), "{text:?}");
        partial += ids
            .iter()
            .filter(|&&id| std::str::from_utf8(bytes.get(id).unwrap()).is_err())
            .count();
    }
    assert!(partial > 0, "the corpus splits some characters over tokens");
    for special in ["<s>", "</s>"] {
        let id = tokenizer.token_to_id(special).unwrap();
        assert_eq!(bytes.get(id).unwrap(), special.as_bytes());
        assert_eq!(bytes.text(id), special);
    }
    assert_eq!(bytes.get(tokenizer.get_vocab_size(true) as u32), None);
}
