//! Stop handling against a one-shot reference: the visible text of a
//! generation is the full decoded text cut before the earliest stop string
//! (or before the EOS token, or after `max_tokens` tokens), however the text
//! was split into tokens.

use super::detokenizer::byte_level_bpe;
use crate::detokenizer::StreamingDetokenizer;
use crate::stop::{StopChecker, StopCriteria, StopReason, StopStringMatcher};

/// The reference: the text before the earliest stop string (ties: the first
/// listed), and which one.
fn cut(text: &str, stops: &[&str]) -> (String, Option<usize>) {
    let mut best: Option<(usize, usize)> = None;
    for (i, s) in stops.iter().enumerate() {
        if let Some(at) = text.find(s) {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, i));
            }
        }
    }
    match best {
        Some((at, i)) => (text[..at].to_string(), Some(i)),
        None => (text.to_string(), None),
    }
}

/// Splits `text` at random char boundaries.
fn random_split(text: &str, rng: &mut fastrand::Rng) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        cur.push(c);
        if rng.u32(0..3) == 0 {
            pieces.push(std::mem::take(&mut cur));
        }
    }
    pieces.push(cur);
    pieces
}

#[test]
fn matcher_equals_cutting_the_whole_text() {
    let texts = [
        "Hello world. User: hi\nAssistant: ok",
        "no stop here at all",
        "User:User:",
        "Use Us U",
        "ab ab abc abcd",
        "café ☕ stop☕ here",
        "</s>",
    ];
    let stop_sets: &[&[&str]] = &[
        &["User:"],
        &["\nAssistant:", "User:"],
        &["abcd", "abc"],
        &["bc", "abcd"],
        &["☕ here", "p☕"],
        &["</s>", "s>"],
        &["zzz"],
    ];
    let mut rng = fastrand::Rng::with_seed(3);
    for text in texts {
        for stops in stop_sets {
            for _ in 0..20 {
                let mut m =
                    StopStringMatcher::new(stops.iter().map(|s| s.to_string()).collect()).unwrap();
                let mut out = String::new();
                let mut found = None;
                for piece in random_split(text, &mut rng) {
                    let (t, f) = m.push(&piece);
                    out += &t;
                    if f.is_some() {
                        found = f;
                        break;
                    }
                }
                if found.is_none() {
                    out += &m.finish();
                }
                assert_eq!((out, found), cut(text, stops), "{text:?} {stops:?}");
            }
        }
    }
}

#[test]
fn matcher_holds_back_only_possible_starts() {
    let mut m = StopStringMatcher::new(vec!["STOP".into()]).unwrap();
    let (t, f) = m.push("abc ST");
    assert_eq!((t.as_str(), f), ("abc ", None));
    let (t, f) = m.push("x");
    assert_eq!((t.as_str(), f), ("STx", None));
}

#[test]
fn empty_stop_string_is_an_error() {
    assert!(StopStringMatcher::new(vec!["a".into(), String::new()]).is_err());
}

#[test]
fn checker_stops_on_strings_eos_and_limit() {
    let tokenizer = byte_level_bpe();
    let eos = tokenizer.token_to_id("</s>").unwrap();
    let text = "Café 😀 done. User: more text 日本語";
    let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    let full = tokenizer.decode(&ids, true).unwrap();

    let run = |criteria: StopCriteria, ids: &[u32]| {
        let detok = StreamingDetokenizer::new(&tokenizer, true);
        let mut checker = StopChecker::new(criteria, detok).unwrap();
        let mut out = String::new();
        for &id in ids {
            let step = checker.push(id).unwrap();
            out += &step.text;
            if let Some(reason) = step.stop {
                return (out, Some(reason), checker.token_count());
            }
        }
        out += &checker.finish().unwrap();
        (out, None, checker.token_count())
    };

    // Stop strings spanning tokens, and one inside a multi-byte emoji's text.
    for stops in [
        vec!["User:"],
        vec![". U"],
        vec!["😀"],
        vec!["語"],
        vec!["nothing"],
    ] {
        let criteria = StopCriteria {
            stop_strings: stops.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let (out, reason, _) = run(criteria, &ids);
        let (want, index) = cut(&full, &stops);
        assert_eq!(out, want, "{stops:?}");
        let want_reason = index.map(|index| StopReason::StopString {
            index,
            text: stops[index].to_string(),
        });
        assert_eq!(reason, want_reason);
    }

    // EOS in the middle: the text before it, not the EOS's own text.
    let mid = ids.len() / 2;
    let mut with_eos = ids[..mid].to_vec();
    with_eos.push(eos);
    with_eos.extend_from_slice(&ids[mid..]);
    let criteria = StopCriteria {
        eos_token_ids: vec![eos],
        ..Default::default()
    };
    let (out, reason, count) = run(criteria, &with_eos);
    assert_eq!(out, tokenizer.decode(&ids[..mid], true).unwrap());
    assert_eq!((reason, count), (Some(StopReason::Eos(eos)), mid + 1));

    // Token limit: exactly the decode of the first n ids.
    for n in 1..ids.len() {
        let criteria = StopCriteria {
            max_tokens: Some(n),
            ..Default::default()
        };
        let (out, reason, count) = run(criteria, &ids);
        assert_eq!(out, tokenizer.decode(&ids[..n], true).unwrap(), "n={n}");
        assert_eq!((reason, count), (Some(StopReason::MaxTokens), n));
    }
}
