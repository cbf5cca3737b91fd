//! A server whose model is split over 2 ranks (MLX's ring on 127.0.0.1,
//! two processes of this test binary): rank 0 serves, rank 1 follows each
//! of its steps. Concurrent requests (greedy, seeded sampling, with
//! log-probabilities, a repeated prompt served from the prompt cache, one
//! sampled without a seed) get the same texts as from the same model in
//! one process, log-probabilities within 1e-4; afterwards rank 1 has
//! followed to the end and exits cleanly.

mod common;
#[path = "../../mlx-rs-core/tests/support/ranks.rs"]
mod ranks;

use common::{post, start_configured, test_env, MODEL_ID};
use mistral_model::TensorParallel;
use mlx_rs_core::distributed::{Backend, Group};
use ranks::{report, result, run_ranks, CHILD};
use serde_json::{json, Value};

/// A float32 test model whose heads divide by 2.
fn model_dir() -> std::path::PathBuf {
    test_env::models_dir().join("gqa4_f32")
}

fn request(prompt: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL_ID,
        "prompt": prompt,
        "max_tokens": 24,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    body
}

/// The requests, in two waves sent at once each: the deterministic ones,
/// then the first prompt again (a prompt-cache hit) beside an unseeded
/// sampled one.
fn waves() -> Vec<Vec<Value>> {
    vec![
        vec![
            request("The capital of France is", json!({})),
            request("Once upon a time", json!({})),
            request(
                "Here is a list of fruits:",
                json!({"temperature": 0.8, "top_k": 20, "seed": 7}),
            ),
            request("One, two, three,", json!({"logprobs": 2})),
        ],
        vec![
            request("The capital of France is", json!({})),
            request("Tell me a story", json!({"temperature": 0.9})),
        ],
    ]
}

/// Each wave's requests at once: each answer's text and
/// token log-probabilities (empty without), in order.
fn run_waves(server: &common::Server) -> Vec<(String, Vec<f32>)> {
    let mut answers = Vec::new();
    for wave in waves() {
        let replies: Vec<Value> = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .map(|body| {
                    scope.spawn(move || {
                        let (status, answer) = post(server, "/v1/completions", body);
                        assert_eq!(status, 200, "{answer}");
                        answer
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        for answer in replies {
            let choice = &answer["choices"][0];
            let text = choice["text"].as_str().expect("text").to_owned();
            let logprobs = choice["logprobs"]["token_logprobs"]
                .as_array()
                .map(|v| v.iter().map(|x| x.as_f64().unwrap() as f32).collect())
                .unwrap_or_default();
            answers.push((text, logprobs));
        }
    }
    answers
}

fn spec_change(parallel: Option<TensorParallel>) -> impl FnOnce(&mut mistral_server::ServerConfig) {
    move |config| {
        config.model.path = model_dir();
        config.model.tensor_parallel = parallel;
        config.max_batch = 4;
    }
}

/// The rank side (does nothing unless started by `run_ranks`).
#[test]
fn rank_child() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let group = Group::init_within(Backend::Ring, std::time::Duration::from_secs(60))
        .expect("join the ring");
    let parallel = TensorParallel::new(group);
    if parallel.rank() != 0 {
        let mut model = mistral_loader::Loader::new(model_dir())
            .ranks(Some(parallel.clone()))
            .load()
            .expect("load this rank's share");
        mistral_server::follow(&mut model, &parallel, 1 << 30, None).expect("follow rank 0");
        report("followed", &[1.0]);
        return;
    }
    let server = start_configured(spec_change(Some(parallel)));
    let answers = run_waves(&server);
    for (i, (text, logprobs)) in answers.iter().enumerate() {
        let bytes: Vec<f32> = text.bytes().map(f32::from).collect();
        report(&format!("text{i}"), &bytes);
        report(&format!("logprobs{i}"), logprobs);
    }
    drop(server); // the engine ends, and with it rank 1
}

#[test]
fn two_ranks_serve_the_single_process_answers() {
    let ranks = run_ranks(2, "serve");
    let server = start_configured(spec_change(None));
    let want = run_waves(&server);
    let (code, out) = &ranks[0];
    assert_eq!(*code, Some(0), "rank 0 failed\n{out}");
    let (code1, out1) = &ranks[1];
    assert_eq!(*code1, Some(0), "rank 1 failed\n{out1}");
    assert_eq!(
        result(out1, "followed"),
        vec![1.0],
        "rank 1 followed to the end"
    );
    let unseeded = want.len() - 1;
    for (i, (text, logprobs)) in want.iter().enumerate() {
        let got: Vec<u8> = result(out, &format!("text{i}"))
            .iter()
            .map(|&b| b as u8)
            .collect();
        let got = String::from_utf8(got).expect("UTF-8");
        if i == unseeded {
            // Sampled without a seed: any text, but there is one.
            assert!(!got.is_empty(), "request {i}: an answer");
            continue;
        }
        assert_eq!(&got, text, "request {i}: the single-process text");
        let got_lp = result(out, &format!("logprobs{i}"));
        assert_eq!(
            got_lp.len(),
            logprobs.len(),
            "request {i}: log-probabilities"
        );
        for (a, b) in got_lp.iter().zip(logprobs) {
            assert!(
                (a - b).abs() <= 1e-4,
                "request {i}: log-probability {a} vs {b}"
            );
        }
    }
    assert!(want[3].1.len() == 24, "the log-probability request got 24");
}
