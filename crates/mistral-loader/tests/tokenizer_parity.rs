//! Our tokenizer path against the real Mistral SentencePiece models.
//!
//! References, run live (`xtask/python/refs/sp_corpus.py`): sentencepiece with
//! `mistral_instruct_tokenizer_240323.model.v3` (v0.3) and
//! `tokenizer.model.v1` (v0.1) from the mistral-common wheel, and
//! mistral-common's own chat encoder. Ours: the test models' `tokenizer.json`
//! through the `tokenizers` crate (`gqa4_f32`: v0.3, `window_v01_f32`: v0.1),
//! `StreamingDetokenizer`, and the chat templates via minijinja.
//!
//! Checked: corpus ids (with and without BOS); every id's bytes (a byte
//! piece is its byte, `▁` a space); streamed text equals
//! sentencepiece's one-shot decode and ours for the corpus ids and for
//! seeded random id sequences over normal, byte-fallback and control ids
//! (and byte tokens spelling random UTF-8 characters); chat prompts rendered
//! from the models' templates and from the built-in Mistral fallback encode
//! to mistral-common's ids.
//!
//! Known, counted difference: on byte runs that are not valid UTF-8 the
//! `tokenizers` ByteFallback decoder writes one U+FFFD per byte,
//! sentencepiece one per invalid sequence; there streamed text is compared
//! with our one-shot decode only (the streaming invariant).

mod python;
mod reference;

use python::corpus;

use std::path::Path;

use mistral_loader::{load_chat_template, load_special_tokens, load_tokenizer, ChatTemplateSource};
use mistral_text::{ChatMessage, StreamingDetokenizer, TokenBytes};
use serde_json::{json, Value};
use tokenizers::Tokenizer;

fn conversations() -> Vec<Vec<ChatMessage>> {
    vec![
        vec![ChatMessage::user("Hello there")],
        vec![
            ChatMessage::user("Hello there"),
            ChatMessage::assistant("Hi you"),
            ChatMessage::user("Again"),
        ],
        vec![
            ChatMessage::system("Be nice."),
            ChatMessage::user("Hello  there"),
            ChatMessage::assistant("Hi, you."),
            ChatMessage::user("Again, café 日本 😀\ncode\tx = 1"),
        ],
        vec![
            ChatMessage::system("Answer in French."),
            ChatMessage::user("What is 2+2?"),
        ],
    ]
}

/// The conversations as `[[role, content], ...]` for sp_corpus.py.
fn chat_json() -> Value {
    conversations()
        .iter()
        .map(|c| {
            c.iter()
                .map(|m| json!([m.role, m.content]))
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn stream(tokenizer: &Tokenizer, ids: &[u32], skip: bool) -> String {
    let mut detok = StreamingDetokenizer::new(tokenizer, skip);
    let mut out = String::new();
    for &id in ids {
        out += &detok.step(id).expect("step");
    }
    out + &detok.finish().expect("finish")
}

/// Random id sequences: normal pieces, byte pieces, control pieces, and byte
/// pieces spelling the UTF-8 of random characters.
fn random_sequences(tokenizer: &Tokenizer, n: usize) -> Vec<Vec<u32>> {
    let vocab = tokenizer.get_vocab_size(true) as u64;
    let byte_id = |b: u8| {
        tokenizer
            .token_to_id(&format!("<0x{b:02X}>"))
            .expect("byte-fallback piece")
    };
    let specials: Vec<u32> = (0..vocab as u32)
        .filter(|&id| {
            tokenizer
                .id_to_token(id)
                .is_some_and(|t| tokenizer.get_added_vocabulary().is_special_token(&t))
        })
        .collect();
    // sentencepiece decodes <unk> as " ⁇ ", not a control piece: left out,
    // as in tokenizer_check.py.
    let unk = tokenizer.token_to_id("<unk>");
    let specials: Vec<u32> = specials.into_iter().filter(|&id| Some(id) != unk).collect();
    let chars = ['é', '日', '😀', '€', 'ж', '\u{200b}', '🇫', 'a', '\n'];
    let mut rng = fastrand::Rng::with_seed(2026);
    (0..n)
        .map(|_| {
            let len = rng.usize(1..=14);
            let mut ids = Vec::new();
            while ids.len() < len {
                match rng.u32(0..10) {
                    0..=4 => {
                        let id = rng.u32(0..vocab as u32);
                        if Some(id) != unk {
                            ids.push(id);
                        }
                    }
                    5..=6 => ids.push(byte_id(rng.u8(..))),
                    7 => ids.push(specials[rng.usize(..specials.len())]),
                    _ => {
                        let c = chars[rng.usize(..chars.len())];
                        let mut buf = [0u8; 4];
                        ids.extend(c.encode_utf8(&mut buf).bytes().map(byte_id));
                    }
                }
            }
            ids
        })
        .collect()
}

fn parity(model: &str, version: &str) {
    let dir = reference::models_dir().join(model);
    let tokenizer = load_tokenizer(&dir).expect("tokenizer");
    let special = load_special_tokens(&dir, Some(&tokenizer)).expect("special tokens");
    let randoms = random_sequences(&tokenizer, 600);
    let corpus = corpus();
    let corpus_ids: Vec<Vec<u32>> = corpus
        .iter()
        .map(|t| {
            tokenizer
                .encode(t.as_str(), false)
                .expect("encode")
                .get_ids()
                .to_vec()
        })
        .collect();
    let mut decode_requests = corpus_ids.clone();
    decode_requests.extend(randoms.iter().cloned());
    let chats = chat_json();
    let answer = python::run_json(
        "refs.sp_corpus",
        &json!({"version": version, "texts": corpus, "decode": decode_requests, "chats": chats,
                "pieces": true}),
    );
    let sp_bos = answer["bos"].as_u64().unwrap() as u32;
    assert_eq!(special.bos, Some(sp_bos), "{model}: BOS id");
    assert!(
        special.is_eos(answer["eos"].as_u64().unwrap() as u32),
        "{model}: EOS id"
    );
    assert_eq!(
        tokenizer.get_vocab_size(true) as u64,
        answer["vocab_size"].as_u64().unwrap(),
        "{model}: vocabulary size"
    );

    // (a) ids.
    let sp_encode = answer["encode"].as_array().unwrap();
    assert_eq!(
        sp_encode.len(),
        corpus.len(),
        "{model}: sentencepiece answers"
    );
    assert_eq!(corpus_ids.len(), corpus.len(), "{model}: our encodings");
    for ((text, ours), sp) in corpus.iter().zip(&corpus_ids).zip(sp_encode) {
        let sp = ids_of(sp);
        assert_eq!(ours, &sp, "{model}: ids of {text:?}");
        let with_bos = tokenizer
            .encode(text.as_str(), true)
            .unwrap()
            .get_ids()
            .to_vec();
        let mut want = vec![sp_bos];
        want.extend_from_slice(&sp);
        assert_eq!(with_bos, want, "{model}: ids with BOS of {text:?}");
    }

    // (b) each id's bytes (log-probabilities' `bytes`).
    let token_bytes = TokenBytes::new(&tokenizer);
    let sp_bytes = answer["piece_bytes"].as_array().unwrap();
    assert_eq!(sp_bytes.len(), tokenizer.get_vocab_size(true), "{model}");
    for (id, want) in sp_bytes.iter().enumerate() {
        let ours: String = token_bytes
            .get(id as u32)
            .expect("in the vocabulary")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(ours, want.as_str().unwrap(), "{model}: bytes of id {id}");
    }

    // (c) streamed text.
    let sp_decode = answer["decode"].as_array().unwrap();
    assert_eq!(
        sp_decode.len(),
        decode_requests.len(),
        "{model}: sentencepiece decodes"
    );
    let mut invalid_utf8 = 0;
    let mut byte_runs = 0;
    for (ids, sp) in decode_requests.iter().zip(sp_decode) {
        let sp = sp.as_str().unwrap();
        // sentencepiece decodes control ids to nothing: skip_special_tokens.
        let one_shot = tokenizer.decode(ids, true).unwrap();
        let streamed = stream(&tokenizer, ids, true);
        assert_eq!(
            streamed, one_shot,
            "{model}: streamed vs one-shot, ids {ids:?}"
        );
        assert_eq!(
            stream(&tokenizer, ids, false),
            tokenizer.decode(ids, false).unwrap(),
            "{model}: streamed vs one-shot with special tokens, ids {ids:?}"
        );
        if ids.iter().any(|&id| {
            tokenizer
                .id_to_token(id)
                .is_some_and(|t| mistral_text::is_byte_token(&t))
        }) {
            byte_runs += 1;
        }
        if streamed != sp {
            assert!(
                sp.contains('\u{fffd}'),
                "{model}: streamed {streamed:?} != sentencepiece {sp:?} for ids {ids:?}"
            );
            invalid_utf8 += 1;
        }
    }
    let total = decode_requests.len();
    eprintln!(
        "{model} ({version}): {} corpus strings, {} random sequences ({byte_runs} of all with \
         byte-fallback tokens); streamed == ours everywhere, == sentencepiece on {} of {total} \
         ({invalid_utf8} differ only in U+FFFD count on invalid UTF-8)",
        corpus.len(),
        randoms.len(),
        total - invalid_utf8
    );
    assert!(
        invalid_utf8 < total / 2,
        "{model}: too few exact sentencepiece matches"
    );

    // Cost: the decoded window stays short on a long text (all of the corpus
    // 40 times, several thousand tokens).
    let long: Vec<u32> = corpus_ids.concat().repeat(40);
    let mut detok = StreamingDetokenizer::new(&tokenizer, true);
    let (mut streamed, mut max_window, mut sum_window) = (String::new(), 0, 0);
    let start = std::time::Instant::now();
    for &id in &long {
        streamed += &detok.step(id).unwrap();
        max_window = max_window.max(detok.window_len());
        sum_window += detok.window_len();
    }
    streamed += &detok.finish().unwrap();
    let per_token = start.elapsed().as_secs_f64() * 1e6 / long.len() as f64;
    assert_eq!(streamed, tokenizer.decode(&long, true).unwrap());
    eprintln!(
        "{model}: {} tokens streamed, {per_token:.1} us/token, window at most {max_window} ids, \
         mean {:.2}",
        long.len(),
        sum_window as f64 / long.len() as f64
    );
    // A byte-fallback run is decoded as a whole (a later byte can turn the
    // earlier ones into U+FFFD), so the window spans a whole run (the ZWJ
    // family emoji: 18 bytes) and keeps growing over a token whose text the
    // decoder's Strip empties ("▁" between two runs of bytes); it shrinks back
    // to one or two ids right after.
    assert!(
        max_window <= 32 && sum_window as f64 / (long.len() as f64) < 3.0,
        "{model}: window at most {max_window}, mean {}",
        sum_window as f64 / long.len() as f64
    );

    // Chat prompts: the model's template.
    chat_parity(&dir, &tokenizer, &answer, model);
}

/// Rendered and encoded prompts of the template in `dir` equal mistral-common's.
fn chat_parity(
    dir: &Path,
    tokenizer: &Tokenizer,
    answer: &Value,
    label: &str,
) -> ChatTemplateSource {
    let template = load_chat_template(dir, tokenizer).expect("chat template");
    let conversations = conversations();
    let answers = answer["chat"].as_array().unwrap();
    assert_eq!(answers.len(), conversations.len(), "{label}: chat answers");
    for (conv, want) in conversations.iter().zip(answers) {
        let text = template.render(conv, true).expect("render");
        let ids = tokenizer
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(
            ids,
            ids_of(want),
            "{label} ({:?}): chat prompt {text:?}",
            template.source
        );
    }
    template.source
}

#[test]
fn v3_tokenizer_matches_sentencepiece() {
    parity("gqa4_f32", "v3");
}

#[test]
fn v1_tokenizer_matches_sentencepiece() {
    parity("window_v01_f32", "v1");
}

/// A change to a tokenizer.json.
type JsonEdit = Box<dyn Fn(&mut Value)>;

/// A copy of `model`'s tokenizer files in a temp dir, minus any template;
/// `edit` may change tokenizer.json.
fn without_template(model: &str, tag: &str, edit: impl Fn(&mut Value)) -> std::path::PathBuf {
    let src = reference::models_dir().join(model);
    let dir =
        std::env::temp_dir().join(format!("mistral-loader-chat-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    edit(&mut json);
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer_config.json")).unwrap())
            .unwrap();
    config.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

/// Other decoder spellings of the same SentencePiece decoding (Hugging Face
/// files use several): streaming must equal their one-shot decode too.
#[test]
fn streaming_with_other_sentencepiece_decoders() {
    let metaspace = json!({"type": "Sequence", "decoders": [
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true}]});
    let unfused = json!({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false}]});
    for (tag, decoder) in [("metaspace", metaspace), ("unfused", unfused)] {
        let dir = without_template("gqa4_f32", &format!("decoder-{tag}"), |j| {
            j["decoder"] = decoder.clone();
        });
        let tokenizer = load_tokenizer(&dir).unwrap();
        let mut sequences = random_sequences(&tokenizer, 400);
        sequences.extend(corpus().iter().map(|t| {
            tokenizer
                .encode(t.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec()
        }));
        for ids in &sequences {
            for skip in [true, false] {
                assert_eq!(
                    stream(&tokenizer, ids, skip),
                    tokenizer.decode(ids, skip).unwrap(),
                    "{tag}: ids {ids:?} skip={skip}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn chat_templates_match_mistral_common() {
    let chats = chat_json();
    for version in ["v3", "v1"] {
        let answer = python::run_json(
            "refs.sp_corpus",
            &json!({"version": version, "chats": chats}),
        );
        let models: &[&str] = if version == "v3" {
            &["gqa4_f32", "gqa4_q4_g64"]
        } else {
            &["window_v01_f32"]
        };
        for model in models {
            let dir = reference::models_dir().join(model);
            let tokenizer = load_tokenizer(&dir).unwrap();
            let source = chat_parity(&dir, &tokenizer, &answer, model);
            let jinja = dir.join(mistral_loader::CHAT_TEMPLATE_FILE);
            if jinja.is_file() {
                assert_eq!(source, ChatTemplateSource::JinjaFile(jinja));
            } else {
                assert!(
                    matches!(source, ChatTemplateSource::TokenizerConfig(_)),
                    "{source:?}"
                );
            }
        }
        // The built-in fallback, with our tokenizer.json (`▁` prefixed to
        // every text segment) and, for v0.3, the Hugging Face style
        // (`Metaspace`, prefix only at the start of the input).
        let model = models[0];
        let mut variants: Vec<(&str, JsonEdit)> = vec![("ours", Box::new(|_| {}))];
        if version == "v3" {
            variants.push((
                "metaspace",
                Box::new(|j: &mut Value| {
                    j["normalizer"] = Value::Null;
                    j["pre_tokenizer"] = json!({"type": "Metaspace", "replacement": "\u{2581}",
                        "prepend_scheme": "first", "split": false});
                }),
            ));
        }
        for (tag, edit) in variants {
            let dir = without_template(model, &format!("{version}-{tag}"), edit);
            let tokenizer = load_tokenizer(&dir).unwrap();
            let source = chat_parity(
                &dir,
                &tokenizer,
                &answer,
                &format!("{model} fallback {tag}"),
            );
            assert_eq!(source, ChatTemplateSource::MistralFallback);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
