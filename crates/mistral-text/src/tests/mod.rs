//! Unit tests. Each result is compared with an independent computation
//! written here (one-shot decoding, cutting the whole text at a stop string,
//! plain string concatenation of the messages).

mod chat;
mod detokenizer;
mod sentencepiece;
mod stop;
mod tekken;
mod token_bytes;
