//! Tensor parallelism over MLX's ring backend on 127.0.0.1: the shared test
//! models (random weights) split over 2 ranks (two processes of this test
//! binary) give the logits of the same model in one process, within float32
//! rounding (the partial products are summed in another order), and the
//! same greedy ids, prompt and cached decode steps alike, each rank holding
//! a share of the weights (Mixtral's experts and Ministral 3 included;
//! Mistral 4 is refused naming what cannot be split yet); a model whose key
//! and value heads do not divide by the ranks is refused with an error
//! naming them.

mod common;
#[path = "../../mlx-rs-core/tests/support/ranks.rs"]
mod ranks;

use common::{all_configs, assert_close, host, random_weights};
use mistral_model::{Mistral, TensorParallel, WeightOptions};
use mlx_rs::{ops::indexing::IndexOp, Array};
use mlx_rs_core::distributed::{Backend, Group};
use mlx_rs_core::KVCache;
use ranks::{report, result, run_ranks, CHILD};

const PROMPT: &[i32] = &[5, 17, 3, 60, 2, 33, 11];
const STEPS: usize = 4;

/// The last position's logits after the prompt and after each greedy step,
/// and the greedy ids.
fn run(model: &Mistral) -> (Vec<Vec<f32>>, Vec<f32>) {
    let mut cache: Vec<Option<KVCache>> = model.new_cache();
    let mut input = PROMPT.to_vec();
    let (mut rows, mut ids) = (Vec::new(), Vec::new());
    for _ in 0..=STEPS {
        let logits = model
            .forward(
                &Array::from_slice(&input, &[1, input.len() as i32]),
                &mut cache,
            )
            .unwrap();
        let row = host(&logits.index((0, logits.dim(1) - 1)));
        let next = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as i32)
            .unwrap();
        rows.push(row);
        ids.push(next as f32);
        input = vec![next];
    }
    (rows, ids)
}

/// The rank side (does nothing unless started by `run_ranks`).
#[test]
fn rank_child() {
    let Ok(scenario) = std::env::var(CHILD) else {
        return;
    };
    let index: usize = scenario.parse().expect("a config index");
    let (_, cfg) = &all_configs()[index];
    let group = Group::init_within(Backend::Ring, std::time::Duration::from_secs(60))
        .expect("join the ring");
    let parallel = TensorParallel::new(group);
    let model = match Mistral::with_tensor_parallel(
        cfg,
        &mut random_weights(cfg),
        WeightOptions::default(),
        parallel,
    ) {
        Ok(model) => model,
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(7);
        }
    };
    report("bytes", &[model.weight_bytes() as f32]);
    let (rows, ids) = run(&model);
    for (i, row) in rows.iter().enumerate() {
        report(&format!("logits{i}"), row);
    }
    report("ids", &ids);
}

#[test]
fn two_ranks_give_the_single_process_logits() {
    for (index, (name, cfg)) in all_configs().iter().enumerate() {
        let ranks = run_ranks(2, &index.to_string());
        if cfg.latent.is_some() {
            for (code, out) in &ranks {
                assert_eq!(*code, Some(7), "{name}: refused\n{out}");
                assert!(
                    out.contains("cannot be split over ranks yet"),
                    "{name}: {out}"
                );
            }
            continue;
        }
        if cfg.num_key_value_heads() % 2 != 0 {
            for (code, out) in &ranks {
                assert_eq!(*code, Some(7), "{name}: refused\n{out}");
                assert!(
                    out.contains("num_key_value_heads (1) does not divide by the 2 ranks"),
                    "{name}: {out}"
                );
            }
            continue;
        }
        let single = Mistral::new(cfg, &mut random_weights(cfg), None).unwrap();
        let (want_rows, want_ids) = run(&single);
        let whole = single.weight_bytes() as f32;
        for (rank, (code, out)) in ranks.iter().enumerate() {
            assert_eq!(*code, Some(0), "{name}: rank {rank} failed\n{out}");
            // Each rank holds half the layers' matrices, and the replicated
            // embedding, norms and head.
            let held = result(out, "bytes")[0];
            assert!(
                held < 0.8 * whole && held > 0.5 * whole,
                "{name}: rank {rank} holds {held} of {whole} bytes"
            );
            assert_eq!(
                result(out, "ids"),
                want_ids,
                "{name}: rank {rank} greedy ids"
            );
            for (i, want) in want_rows.iter().enumerate() {
                let what = format!("{name}: rank {rank}, step {i}");
                assert_close(&result(out, &format!("logits{i}")), want, 1e-5, 1e-5, &what);
            }
        }
        eprintln!("{name}: 2 ranks = one process ({} steps)", STEPS + 1);
    }
}
