//! Structured output (`response_format`: JSON schema, JSON object, regex,
//! Lark grammar) through the official `openai` Python client on the real
//! SmolLM2 model: xtask/python/checks/structured_output_check.py asks for each of
//! its schemas at temperature 0 and 0.8 (two seeds, streamed and not) and
//! validates every answer with the `jsonschema` package, and checks that
//! unusable formats are a 400 (see its header). Constrained and
//! unconstrained requests sharing decode steps each give their solo answer.

mod common;

use common::{run_client_check, start, MODEL_ID};

#[test]
fn every_constrained_answer_validates() {
    let server = start(Some("test-key"), 1 << 20);
    run_client_check(&server, "checks.structured_output_check", &[], 26);
}

/// Constrained and unconstrained requests decoded in one batch each give
/// their solo temperature-0 answer, non-streamed: the masks apply to their
/// own rows only.
#[test]
fn mixed_batches_give_each_request_its_solo_answer() {
    use common::{metric, post, start_configured};
    use serde_json::{json, Value};

    let server = start_configured(|c| c.prompt_cache_bytes = 0);
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["name", "age"], "additionalProperties": false});
    let bodies: Vec<Value> = (0..6)
        .map(|i| {
            let mut b = json!({
                "model": MODEL_ID,
                "messages": [{"role": "user", "content": format!("Describe person number {i}.")}],
                "temperature": 0,
                "max_tokens": 40,
            });
            match i % 3 {
                0 => {
                    b["response_format"] = json!({"type": "json_schema",
                    "json_schema": {"name": "p", "schema": schema}})
                }
                1 => {
                    b["response_format"] =
                        json!({"type": "regex", "regex": "[A-Z][a-z]{2,9}, [0-9]{1,2}"})
                }
                _ => {}
            }
            b
        })
        .collect();
    let answer = |b: &Value| {
        let (status, answer) = post(&server, "/v1/chat/completions", b);
        assert_eq!(status, 200, "{answer}");
        answer["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
            .to_owned()
    };
    let solo: Vec<String> = bodies.iter().map(answer).collect();
    let rows_before = metric(&server, "mistral_batch_rows_total");
    let steps_before = metric(&server, "mistral_batch_steps_total");
    let barrier = std::sync::Barrier::new(bodies.len());
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|b| {
                let (barrier, answer) = (&barrier, &answer);
                scope.spawn(move || {
                    barrier.wait();
                    answer(b)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    assert_eq!(together, solo);
    let rows = metric(&server, "mistral_batch_rows_total") - rows_before;
    let steps = metric(&server, "mistral_batch_steps_total") - steps_before;
    assert!(
        rows > steps,
        "the requests shared decode steps ({rows} rows in {steps} steps)"
    );
    eprintln!("solo = together: {solo:?}");
}
