//! `mistral_text::tekken` against mistral-common 1.13.1 (run live,
//! `xtask/python/refs/tekken_ref.py`) on the real tekken files its wheel ships
//! (`tekken_240718.json`, `tekken_240911.json`): ids, sizes and control
//! tokens; the shared corpus plus control-token text, whitespace runs,
//! digits, non-ASCII text and seeded random strings encoded to the same ids
//! (with and without `<s>`/`</s>`); seeded random id sequences (control
//! tokens and multi-byte characters cut in two included) decoded to the same
//! text under each special-token policy. The same files turned into a
//! `tokenizers` tokenizer (`Tekken::to_tokenizer`) give mistral-common's
//! ids on every text without a control token's spelling, and its text on
//! every id sequence.

mod python;
mod reference;

use mistral_text::tekken::Tekken;
use python::{check_encode_decode, corpus, ids_of, random_texts, run_json};
use serde_json::json;

#[test]
fn tekken_files_encode_and_decode_as_mistral_common() {
    let files = run_json("refs.tekken_ref", &json!({"files": null}))["files"]
        .as_array()
        .expect("files")
        .clone();
    assert!(
        files.len() >= 2,
        "expected mistral-common's two tekken files"
    );
    let mut texts = corpus();
    texts.extend(
        [
            "[INST] control-token text stays text [/INST]",
            "<s></s>[TOOL_CALLS]",
            "   leading and   inner   spaces\t\ttabs\n\n\nnewlines  ",
            "1234567890 3.14159 1,000,000",
            "Ünïcödé naïve café — « guillemets » 日本語のテキスト 🙂🚀",
            "",
        ]
        .map(String::from),
    );
    texts.extend(random_texts(200));

    for file in &files {
        let path = file["path"].as_str().expect("path");
        let tekken = Tekken::from_file(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            tekken.vocab_size() as u64,
            file["vocab_size"].as_u64().unwrap()
        );
        assert_eq!(
            tekken.num_special_tokens() as u64,
            file["num_special"].as_u64().unwrap()
        );
        assert_eq!(format!("v{}", tekken.version()), file["version"]);
        assert_eq!(tekken.bos_id().map(u64::from), file["bos"].as_u64());
        assert_eq!(tekken.eos_id().map(u64::from), file["eos"].as_u64());
        for (id, text) in file["specials"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                tekken.special_text(id as u32),
                text.as_str(),
                "{path}: control {id}"
            );
        }

        // Ids to decode: the corpus's, and seeded random ones over the whole
        // vocabulary with control tokens among them.
        let n = tekken.vocab_size() as u32;
        let specials = tekken.num_special_tokens() as u32;
        let mut rng = fastrand::Rng::with_seed(7);
        let mut sequences: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| tekken.encode(t, true, false))
            .collect();
        for _ in 0..300 {
            let len = rng.usize(1..30);
            sequences.push(
                (0..len)
                    .map(|_| match rng.u8(0..10) {
                        0 => rng.u32(0..specials),
                        1 => rng.u32(specials..specials + 256), // single bytes
                        _ => rng.u32(specials..n),
                    })
                    .collect(),
            );
        }
        let answer = run_json(
            "refs.tekken_ref",
            &json!({"files": [path], "texts": texts, "ids": sequences}),
        );
        let answer = &answer["files"][0];
        check_encode_decode(&tekken.clone().into(), answer, &texts, &sequences, path);
        // The `tokenizers` form of the same file.
        let hf = tekken.to_tokenizer().expect("to_tokenizer");
        let plain: Vec<(usize, &String)> = texts
            .iter()
            .enumerate()
            .filter(|(_, t)| (0..specials).all(|id| !t.contains(tekken.special_text(id).unwrap())))
            .collect();
        assert!(
            plain.len() > 200,
            "most texts have no control-token spelling"
        );
        for &(i, text) in &plain {
            let ids = hf
                .encode(text.as_str(), false)
                .expect("encode")
                .get_ids()
                .to_vec();
            assert_eq!(
                ids,
                ids_of(&answer["ids"][i]),
                "{path}: tokenizers ids of {text:?}"
            );
            let ids = hf
                .encode(text.as_str(), true)
                .expect("encode")
                .get_ids()
                .to_vec();
            let mut want = ids_of(&answer["ids_bos_eos"][i]);
            want.pop(); // </s>: only <s> is added by the tokenizer
            assert_eq!(ids, want, "{path}: tokenizers ids with <s> of {text:?}");
        }
        for (i, ids) in sequences.iter().enumerate() {
            let text = hf.decode(ids, true).expect("decode");
            let want = answer["decode_ignore"][i].as_str().expect("text");
            // tokenizers decodes all ids at once, mistral-common each run
            // between control tokens: they differ only where a run ends
            // inside a character (its bytes are replaced either way).
            if !want.contains('\u{fffd}') {
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

/// A folder with `tekken.json` and no `tokenizer.json` (Mistral's own
/// layout) gets its tokenizer from it.
#[test]
fn load_tokenizer_reads_tekken_json_when_there_is_no_tokenizer_json() {
    let files = run_json("refs.tekken_ref", &json!({"files": null}))["files"]
        .as_array()
        .expect("files")
        .clone();
    let path = files[0]["path"].as_str().expect("path");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(path, dir.path().join("tekken.json")).expect("copy");
    let loaded = mistral_loader::load_tokenizer(dir.path()).expect("load_tokenizer");
    let tekken = Tekken::from_file(path).expect("tekken");
    for text in corpus() {
        if (0..tekken.num_special_tokens() as u32)
            .any(|id| text.contains(tekken.special_text(id).unwrap()))
        {
            continue;
        }
        let ids = loaded.encode(text.as_str(), true).expect("encode");
        assert_eq!(ids.get_ids(), tekken.encode(&text, true, false), "{text:?}");
    }
}
