//! SentencePiece files that Mistral's code paths do not cover are refused
//! naming the file and field; a small valid one round-trips text. The files
//! are written here with prost from the same message declarations.

use std::path::Path;

use prost::Message;

use crate::sentencepiece::{
    file_version, ModelProto, NormalizerSpec, PieceProto, SentencePiece, SpecialTokenPolicy,
    TrainerSpec,
};

/// A small valid model: `<unk>`, `<s>`, `</s>`, `[INST]`, the 256 bytes,
/// then `▁`, `a`, `b`, `▁a`, `ab`, `▁ab`.
fn model() -> ModelProto {
    let piece = |text: &str, score: f32, kind: i32| PieceProto {
        piece: Some(text.to_owned()),
        score: Some(score),
        kind: Some(kind),
    };
    let mut pieces = vec![
        piece("<unk>", 0.0, 2),
        piece("<s>", 0.0, 3),
        piece("</s>", 0.0, 3),
        piece("[INST]", 0.0, 3),
    ];
    pieces.extend((0..=255u8).map(|b| piece(&format!("<0x{b:02X}>"), 0.0, 6)));
    for (i, text) in ["\u{2581}", "a", "b", "\u{2581}a", "ab", "\u{2581}ab"]
        .iter()
        .enumerate()
    {
        pieces.push(piece(text, -(i as f32), 1));
    }
    ModelProto {
        pieces,
        trainer_spec: Some(TrainerSpec {
            model_type: Some(2),
            byte_fallback: Some(true),
            ..Default::default()
        }),
        normalizer_spec: Some(NormalizerSpec {
            name: Some("identity".into()),
            remove_extra_whitespaces: Some(false),
            ..Default::default()
        }),
    }
}

fn load(m: &ModelProto) -> Result<SentencePiece, String> {
    SentencePiece::from_bytes(&m.encode_to_vec(), 3, Path::new("tokenizer.model.v3"))
        .map_err(|e| e.to_string())
}

#[test]
fn a_small_model_round_trips_text() {
    let spm = load(&model()).expect("valid");
    let ids = spm.encode("ab a [INST]é", true, true);
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
    assert_eq!(
        spm.decode(&ids, SpecialTokenPolicy::Ignore).unwrap(),
        "ab a [INST]é"
    );
    assert!(spm.decode(&ids, SpecialTokenPolicy::Raise).is_err());
    assert!(spm.decode(&[9999], SpecialTokenPolicy::Ignore).is_err());
}

#[test]
fn unsupported_files_name_the_field() {
    type Change = fn(&mut ModelProto);
    let cases: [(&str, Change); 6] = [
        ("trainer_spec.model_type", |m| {
            m.trainer_spec.as_mut().unwrap().model_type = Some(1)
        }),
        ("trainer_spec.byte_fallback", |m| {
            m.trainer_spec.as_mut().unwrap().byte_fallback = None
        }),
        ("normalizer_spec.name", |m| {
            m.normalizer_spec.as_mut().unwrap().name = Some("nmt_nfkc".into())
        }),
        ("normalizer_spec.remove_extra_whitespaces", |m| {
            m.normalizer_spec.as_mut().unwrap().remove_extra_whitespaces = None
        }),
        ("pieces[5].type", |m| m.pieces[5].kind = Some(5)),
        ("no byte piece <0x41>", |m| {
            m.pieces.remove(4 + 0x41);
        }),
    ];
    for (field, change) in cases {
        let mut m = model();
        change(&mut m);
        let e = load(&m).expect_err(field);
        assert!(
            e.starts_with("tokenizer.model.v3: ") && e.contains(field),
            "{field}: {e}"
        );
    }
    let e = SentencePiece::from_bytes(b"\xff\xff\xff", 3, Path::new("t.model.v3"))
        .expect_err("not protobuf")
        .to_string();
    assert!(e.contains("not a SentencePiece model"), "{e}");
}

#[test]
fn versions_come_from_the_file_name_as_mistral_common_reads_them() {
    for (name, version) in [
        ("tokenizer.model", Some(1)),
        ("tokenizer.model.v1", Some(1)),
        ("mistral_instruct_tokenizer_241114.model.v7m1", Some(7)),
        ("tokenizer.model.v13", Some(13)),
        ("tokenizer.model.v4", None),
        ("tokenizer.model.v7m2", None),
        ("tokenizer.model.vx", None),
    ] {
        assert_eq!(file_version(Path::new(name)).ok(), version, "{name}");
    }
}
