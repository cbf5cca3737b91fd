//! Tensor parallelism from the real test-model files, over MLX's ring
//! backend on 127.0.0.1 (two processes of this test binary, see
//! `mlx-rs-core/tests/support/ranks.rs`):
//! - each rank reads from the files only its share: its block of every
//!   split matrix and the replicated tensors whole (the bytes its `read`
//!   calls return, counted by the kernel in `/proc/self/io`, are that share
//!   plus the headers and the config), and holds exactly that share, as
//!   computed here from the safetensors headers;
//! - each rank's logits over every reference prompt equal those of mlx-lm's
//!   own tensor-parallel run (its `shard()`, two ranks of
//!   `xtask/python/refs/sharded_reference.py` over the same ring, run live here)
//!   within the single-process parity tolerance, and so do its argmaxes
//!   wherever mlx-lm's top two are further apart than that tolerance
//!   allows. (Against mlx-lm's single-process logits, float32 models agree
//!   within that tolerance too, and are checked; half-precision ones part by
//!   the rounding of the summed halves, which mlx-lm's split run shares.)
//! - a model whose quantization groups do not divide by the ranks is
//!   refused with an error naming them.

#[path = "../../mlx-rs-core/tests/support/ranks.rs"]
mod ranks;
mod reference;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use mistral_loader::{FileAccess, LoadOptions, Loader};
use mistral_model::TensorParallel;
use mlx_rs::Array;
use mlx_rs_core::distributed::{Backend, Group};
use mlx_rs_core::KVCache;
use ranks::{report, result, run_ranks, wait_all, CHILD};
use reference::{
    models_dir, python_module, references, test_model, test_models, Reference, TestModel,
};
use safetensors::SafeTensors;

/// Relative logits tolerance per compute dtype: the single-process parity
/// test's (`mlx_lm_parity.rs`).
fn tolerance(model: &TestModel) -> f32 {
    match model.dtype.as_str() {
        "bfloat16" => 1e-3,
        _ => 1e-4,
    }
}

/// Bytes this process's `read` calls have returned (`rchar`).
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("read /proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/self/io")
}

/// `n` as two exactly representable f32s (units of 2^20 and the rest).
fn split_u64(n: u64) -> [f32; 2] {
    [(n >> 20) as f32, (n & 0xF_FFFF) as f32]
}

fn joined_u64(v: &[f32]) -> u64 {
    ((v[0] as u64) << 20) + v[1] as u64
}

/// The rank side (does nothing unless started by `run_ranks`).
#[test]
fn rank_child() {
    let Ok(scenario) = std::env::var(CHILD) else {
        return;
    };
    // "<model>" or "<model> <mlx-lm's sharded logits file>"
    let (name, sharded) = match scenario.split_once(' ') {
        Some((name, file)) => (name, Some(file)),
        None => (scenario.as_str(), None),
    };
    let model = test_model(name);
    let group = Group::init_within(Backend::Ring, std::time::Duration::from_secs(60))
        .expect("join the ring");
    let options = LoadOptions {
        file_access: FileAccess::Read,
        ..LoadOptions::default()
    };
    let before = bytes_read();
    let loaded = Loader::new(&model.dir)
        .options(options)
        .ranks(Some(TensorParallel::new(group)))
        .load_planned();
    let read = bytes_read() - before;
    let mistral = match loaded {
        Ok((mistral, _)) => mistral,
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(7);
        }
    };
    report("read", &split_u64(read));
    report("held", &split_u64(mistral.weight_bytes() as u64));
    let sharded = std::fs::read(sharded.expect("the sharded logits file"))
        .expect("read mlx-lm's sharded logits");
    let sharded = SafeTensors::deserialize(&sharded).expect("parse mlx-lm's sharded logits");
    let tol = tolerance(&model);
    let (mut single, mut split, mut checked, mut equal) = (0f32, 0f32, 0f32, 0f32);
    for r in references(&model) {
        let mut cache: Vec<Option<KVCache>> = mistral.new_cache();
        let ids = Array::from_slice(&r.prompt_ids, &[1, r.prompt_ids.len() as i32]);
        let logits = mistral.forward(&ids, &mut cache).expect("forward");
        let logits = logits.as_dtype(mlx_rs::Dtype::Float32).expect("cast");
        logits.eval().expect("eval");
        let ours = logits.as_slice::<f32>();
        single = single.max(worst(ours, &r.logits, r.vocab));
        let theirs: Vec<f32> = sharded
            .tensor(&format!("{}.logits", r.prompt))
            .expect("mlx-lm's sharded logits of the prompt")
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        split = split.max(worst(ours, &theirs, r.vocab));
        let (c, e) = argmaxes(ours, &theirs, &r, tol);
        checked += c;
        equal += e;
    }
    report("single", &[single]);
    report("split", &[split]);
    report("argmax", &[checked, equal]);
}

/// The largest difference of two `[positions, vocab]` logits, relative to
/// the largest |logit| of `want`'s position.
fn worst(ours: &[f32], want: &[f32], vocab: usize) -> f32 {
    assert_eq!(ours.len(), want.len(), "logits of different shapes");
    ours.chunks(vocab)
        .zip(want.chunks(vocab))
        .map(|(row, want)| {
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = row
                .iter()
                .zip(want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            diff / scale
        })
        .fold(0f32, f32::max)
}

/// Positions where `want`'s top two are more than twice the tolerance
/// apart, and how many of them `ours` has the same argmax at.
fn argmaxes(ours: &[f32], want: &[f32], r: &Reference, tol: f32) -> (f32, f32) {
    let top2 = |v: &[f32]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        (idx[0], idx[1])
    };
    let (mut checked, mut equal) = (0.0, 0.0);
    for (row, want) in ours.chunks(r.vocab).zip(want.chunks(r.vocab)) {
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (first, second) = top2(want);
        if want[first] - want[second] > 2.0 * tol * scale {
            checked += 1.0;
            if top2(row).0 == first {
                equal += 1.0;
            }
        }
    }
    (checked, equal)
}

/// mlx-lm's own split run of `model` over 2 ranks of the ring (two Python
/// processes, killed past two minutes): the logits of its reference
/// prompts, written to a file in `dir`.
fn mlx_lms_sharded_logits(model: &TestModel, dir: &Path) -> PathBuf {
    let hostfile = dir.join("hosts.json");
    mlx_rs_core::distributed::write_loopback_hostfile(2, &hostfile).expect("a hostfile");
    let out = dir.join(format!("{}.safetensors", model.name));
    let refs = models_dir()
        .join("refs")
        .join(format!("{}.safetensors", model.name));
    let mut children: Vec<_> = (0..2)
        .map(|rank| {
            python_module("refs.sharded_reference")
                .args([&model.dir, &refs, &out])
                .env("MLX_RANK", rank.to_string())
                .env("MLX_HOSTFILE", &hostfile)
                .stdout(Stdio::null())
                .spawn()
                .expect("start mlx-lm's rank")
        })
        .collect();
    let what = format!("{}: mlx-lm's sharded run", model.name);
    let codes = wait_all(&mut children, &what);
    assert!(
        codes.iter().all(|c| *c == Some(0)),
        "{what} failed: {codes:?}"
    );
    out
}

/// What a rank of 2 should hold: half of each split matrix (and of its
/// quantization scales and biases), every other tensor whole; and the bytes
/// of the safetensors headers and the JSON files beside them.
fn share_and_overhead(dir: &Path) -> (u64, u64) {
    let split = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ];
    let (mut share, mut overhead) = (0u64, 0u64);
    for entry in std::fs::read_dir(dir).expect("model dir") {
        let path = entry.expect("entry").path();
        let size = std::fs::metadata(&path).expect("size").len();
        match path.extension().and_then(|e| e.to_str()) {
            // Read by the loader: the config (and generation config, and a
            // shard index), not the tokenizer's files.
            Some("json") if !name_starts(&path, "tokenizer") => overhead += size,
            Some("safetensors") => {
                let bytes = std::fs::read(&path).expect("read safetensors");
                let (header, meta) = SafeTensors::read_metadata(&bytes).expect("header");
                overhead += 8 + header as u64;
                for (name, info) in meta.tensors() {
                    let n = (info.data_offsets.1 - info.data_offsets.0) as u64;
                    let module = name.rsplit('.').nth(1).unwrap_or_default();
                    let whole_bias =
                        name.ends_with(".bias") && (module == "o_proj" || module == "down_proj");
                    share += if split.contains(&module) && !whole_bias {
                        n / 2
                    } else {
                        n
                    };
                }
            }
            _ => {}
        }
    }
    (share, overhead)
}

fn name_starts(path: &Path, prefix: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(prefix))
}

#[test]
fn two_ranks_read_and_hold_their_share_and_give_mlx_lms_split_logits() {
    let dir = tempfile::tempdir().expect("temp dir");
    for model in test_models() {
        if model.quantized.is_some_and(|(_, group)| group == 128) {
            // 64 input columns of o_proj per rank: half a group.
            for (code, out) in &run_ranks(2, &model.name) {
                assert_eq!(*code, Some(7), "{}: refused\n{out}", model.name);
                assert!(out.contains("group"), "{}: {out}", model.name);
            }
            continue;
        }
        let sharded = mlx_lms_sharded_logits(&model, dir.path());
        let ranks = run_ranks(2, &format!("{} {}", model.name, sharded.display()));
        let (share, overhead) = share_and_overhead(&model.dir);
        let tol = tolerance(&model);
        for (rank, (code, out)) in ranks.iter().enumerate() {
            let what = format!("{} rank {rank}", model.name);
            assert_eq!(*code, Some(0), "{what} failed\n{out}");
            let held = joined_u64(&result(out, "held"));
            let read = joined_u64(&result(out, "read"));
            assert_eq!(held, share, "{what}: bytes held");
            assert!(
                read >= share && read <= share + 2 * overhead + 4096,
                "{what}: read {read} bytes; its share is {share}, headers and JSON {overhead} \
                 (each read at most twice) and 4 KiB for the rest"
            );
            let (single, split) = (result(out, "single")[0], result(out, "split")[0]);
            let argmax = result(out, "argmax");
            eprintln!(
                "{what}: held {held} = share, read {read}; logits vs mlx-lm split {split:.2e}, \
                 single {single:.2e}; argmax {}/{}",
                argmax[1], argmax[0]
            );
            assert!(
                split <= tol,
                "{what}: logits {split} (relative) from mlx-lm's split run"
            );
            if model.dtype == "float32" {
                assert!(
                    single <= tol,
                    "{what}: logits {single} from mlx-lm's single process"
                );
            }
            assert!(
                argmax[0] > 0.0,
                "{what}: no position to compare argmaxes at"
            );
            assert_eq!(argmax[0], argmax[1], "{what}: argmaxes equal to mlx-lm's");
        }
    }
}
