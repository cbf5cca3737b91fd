//! `mistral_text::sentencepiece` against mistral-common 1.13.1 (run live,
//! `xtask/python/refs/sentencepiece_ref.py`, over the sentencepiece library) on
//! the real SentencePiece files its wheel ships (`tokenizer.model.v1`,
//! `*.model.v2`, `.v3`, `.v7`, `.v7m1`): version, size, `<s>`/`</s>` and
//! control ids; the shared corpus plus control-token and user-defined
//! spellings, whitespace runs, digits, non-ASCII text and seeded random
//! strings encoded to the same ids (with and without `<s>`/`</s>`); seeded
//! random id sequences (control, unknown and byte pieces included) decoded
//! to the same text under each special-token policy. The `tokenizers` form
//! (`SentencePiece::to_tokenizer`) gives the same ids on every text without
//! a control or user-defined piece's spelling, and the same text on every id
//! sequence whose byte runs are valid UTF-8.

mod python;
mod reference;

use mistral_text::sentencepiece::SentencePiece;
use python::{check_encode_decode, corpus, ids_of, random_texts, run_json};
use serde_json::{json, Value};

fn shipped() -> Vec<Value> {
    run_json("refs.sentencepiece_ref", &json!({"files": null}))["files"]
        .as_array()
        .expect("files")
        .clone()
}

#[test]
fn sentencepiece_files_encode_and_decode_as_mistral_common() {
    let files = shipped();
    assert!(
        files.len() >= 5,
        "expected mistral-common's five SentencePiece files, got {}",
        files.len()
    );
    let mut texts = corpus();
    texts.extend(
        [
            "[INST] control-token text stays text [/INST]",
            "<s></s>[TOOL_CALLS] <unk> <0x41>",
            "[REF]x y[REF] [REFERENCE_DOC_1][REFERENCE_DOC_10] [/REF]",
            " ",
            "  ",
            "                                        forty spaces",
            "   leading and   inner   spaces\t\ttabs\n\n\nnewlines  ",
            "\u{2581}already escaped \u{2581}\u{2581}x",
            "1234567890 3.14159 1,000,000",
            "Ünïcödé naïve café — « guillemets » 日本語のテキスト 🙂🚀 \u{0}\u{a0}",
            "",
        ]
        .map(String::from),
    );
    texts.extend(random_texts(200));

    for file in &files {
        let path = file["path"].as_str().expect("path");
        let spm = SentencePiece::from_file(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            spm.vocab_size() as u64,
            file["vocab_size"].as_u64().unwrap()
        );
        assert_eq!(format!("v{}", spm.version()), file["version"], "{path}");
        assert_eq!(spm.bos_id().map(u64::from), file["bos"].as_u64());
        assert_eq!(spm.eos_id().map(u64::from), file["eos"].as_u64());
        let n = spm.vocab_size() as u32;
        let controls: Vec<u32> = (0..n).filter(|&id| spm.is_control(id)).collect();
        assert_eq!(controls, ids_of(&file["controls"]), "{path}: control ids");
        for &id in &controls {
            assert_eq!(spm.special_id(spm.piece(id).unwrap()), Some(id));
        }

        // Ids to decode: the texts', and seeded random ones over the whole
        // vocabulary with control, unknown and byte pieces among them.
        let bytes: Vec<u32> = (0..n)
            .filter(|&id| spm.piece(id).is_some_and(|p| p.starts_with("<0x")))
            .collect();
        let mut rng = fastrand::Rng::with_seed(11);
        let mut sequences: Vec<Vec<u32>> =
            texts.iter().map(|t| spm.encode(t, true, false)).collect();
        for _ in 0..300 {
            let len = rng.usize(1..30);
            sequences.push(
                (0..len)
                    .map(|_| match rng.u8(0..10) {
                        0 => controls[rng.usize(0..controls.len())],
                        1 => 0,
                        2 | 3 => bytes[rng.usize(0..bytes.len())],
                        _ => rng.u32(0..n),
                    })
                    .collect(),
            );
        }
        let answer = run_json(
            "refs.sentencepiece_ref",
            &json!({"files": [path], "texts": texts, "ids": sequences}),
        );
        let answer = &answer["files"][0];
        check_encode_decode(&spm.clone().into(), answer, &texts, &sequences, path);

        // The `tokenizers` form of the same file.
        let hf = spm.to_tokenizer().expect("to_tokenizer");
        let spelled: Vec<&str> = (0..n)
            .filter_map(|id| spm.piece(id))
            .filter(|p| p.starts_with('<') || p.starts_with('['))
            .collect();
        let plain: Vec<(usize, &String)> = texts
            .iter()
            .enumerate()
            .filter(|(_, t)| spelled.iter().all(|s| !t.contains(s)))
            .collect();
        assert!(plain.len() > 200, "most texts spell no control piece");
        for &(i, text) in &plain {
            let ids = hf.encode(text.as_str(), true).expect("encode");
            let mut want = ids_of(&answer["ids_bos_eos"][i]);
            want.pop(); // </s>: only <s> is added by the tokenizer
            assert_eq!(ids.get_ids(), want, "{path}: tokenizers ids of {text:?}");
        }
        for (i, ids) in sequences.iter().enumerate() {
            let text = hf.decode(ids, true).expect("decode");
            let want = answer["decode_ignore"][i].as_str().expect("text");
            // Invalid UTF-8 in byte runs and `<unk>`: the two forms write
            // them differently (sentencepiece one U+FFFD per byte and ` ⁇ `).
            if !want.contains('\u{fffd}') && !ids.contains(&0) {
                assert_eq!(text, want, "{path}: tokenizers decode of {ids:?}");
            }
        }
        eprintln!(
            "{path}: {} texts and {} id sequences as mistral-common; the tokenizers form on {} texts",
            texts.len(),
            sequences.len(),
            plain.len()
        );
    }
}

/// A folder with a `tokenizer.model.vN` and no `tokenizer.json` gets its
/// tokenizer from it.
#[test]
fn load_tokenizer_reads_tokenizer_model_when_there_is_no_tokenizer_json() {
    let file = shipped()
        .into_iter()
        .find(|f| f["version"] == "v3")
        .expect("a v3 file");
    let path = file["path"].as_str().expect("path");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(path, dir.path().join("tokenizer.model.v3")).expect("copy");
    let loaded = mistral_loader::load_tokenizer(dir.path()).expect("load_tokenizer");
    let spm = SentencePiece::from_file(path).expect("sentencepiece");
    for text in corpus() {
        if text.contains('[') || text.contains('<') {
            continue;
        }
        let ids = loaded.encode(text.as_str(), true).expect("encode");
        assert_eq!(ids.get_ids(), spm.encode(&text, true, false), "{text:?}");
    }
}
