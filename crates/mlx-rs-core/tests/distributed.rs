//! MLX's ring backend over loopback, two processes: this test binary starts
//! itself twice as ranks 0 and 1 (`MLX_RANK`, `MLX_HOSTFILE`, as MLX's
//! launcher sets them), each runs the collectives and prints what it got;
//! the parent checks the results against sums computed here, and that
//! both ranks end inside a time limit.

#[path = "support/ranks.rs"]
mod ranks;

use std::time::Duration;

use mlx_rs::{transforms::eval, Array, Dtype};
use mlx_rs_core::distributed::{
    all_gather, all_max, all_sum, broadcast_bytes, recv, send, shared_seed, sum_scatter, Backend,
    Group,
};
use ranks::{report, result, run_ranks, CHILD};

fn floats(a: &Array) -> Vec<f32> {
    let a = a.as_dtype(Dtype::Float32).unwrap();
    eval([&a]).unwrap();
    a.as_slice::<f32>().to_vec()
}

/// The rank side (does nothing unless started by `run_ranks`).
#[test]
fn rank_child() {
    let Ok(scenario) = std::env::var(CHILD) else {
        return;
    };
    if scenario == "rank1_never_joins" && std::env::var("MLX_RANK").as_deref() == Ok("1") {
        std::process::exit(3);
    }
    let group = match Group::init_within(Backend::Ring, Duration::from_secs(10)) {
        Ok(group) => group,
        Err(e) => {
            eprintln!("rank {:?}: {e}", std::env::var("MLX_RANK"));
            std::process::exit(5);
        }
    };
    let (rank, size) = (group.rank(), group.size());
    println!("RESULT rank: [{rank}, {size}]");
    match scenario.as_str() {
        "collectives" => {
            let r = rank as f32;
            let x = Array::from_slice(&[1.0 + r, 10.0 * (r + 1.0), -r, 0.5], &[4]);
            report("all_sum", &floats(&all_sum(&x, &group).unwrap()));
            report("all_max", &floats(&all_max(&x, &group).unwrap()));
            let rows = Array::from_slice(&[r, r + 0.25], &[1, 2]);
            report("all_gather", &floats(&all_gather(&rows, &group).unwrap()));
            // MLX 0.32.2's ring has no sum_scatter: an error when run.
            let y = Array::from_slice(&[1.0 + r, 2.0 + r, 3.0 + r, 4.0 + r], &[4]);
            let scattered = sum_scatter(&y, &group).unwrap();
            let err = eval([&scattered]).expect_err("ring sum_scatter");
            assert!(err.to_string().contains("not supported"), "{err}");
            let peer = 1 - rank;
            let mine = Array::from_slice(&[100.0 + r, 200.0 + r], &[2]);
            // Rank 0 sends first, then receives; rank 1 the other way round.
            let got = if rank == 0 {
                eval([&send(&mine, peer, &group).unwrap()]).unwrap();
                recv(&[2], Dtype::Float32, peer, &group).unwrap()
            } else {
                let got = recv(&[2], Dtype::Float32, peer, &group).unwrap();
                eval([&got]).unwrap();
                eval([&send(&mine, peer, &group).unwrap()]).unwrap();
                got
            };
            report("recv", &floats(&got));
            // Rank 0's bytes (7: not a multiple of 4; then none) everywhere.
            let bytes: &[u8] = if rank == 0 {
                b"\x00\xffrank 0"
            } else {
                b"ignored bytes"
            };
            let got = broadcast_bytes(bytes, &group).unwrap();
            report(
                "broadcast",
                &got.iter().map(|&b| b as f32).collect::<Vec<_>>(),
            );
            let none = broadcast_bytes(if rank == 0 { b"" } else { b"x" }, &group).unwrap();
            report("broadcast_empty", &[none.len() as f32]);
            // The seed as four exact 16-bit pieces.
            let seed = shared_seed(&group).unwrap();
            let pieces: Vec<f32> = (0..4)
                .map(|i| ((seed >> (16 * i)) & 0xffff) as f32)
                .collect();
            report("seed", &pieces);
            // Bad arguments are errors, not aborts.
            assert!(send(&mine, rank, &group).is_err());
            assert!(sum_scatter(&Array::from_slice(&[1.0f32; 3], &[3]), &group).is_err());
        }
        "rank1_dies" => {
            if rank == 1 {
                std::process::exit(3);
            }
            let x = Array::from_slice(&[1.0f32, 2.0], &[2]);
            match all_sum(&x, &group).and_then(|s| Ok(eval([&s])?)) {
                Ok(()) => println!("RESULT survived: [1]"),
                Err(e) => {
                    eprintln!("rank 0: {e}");
                    std::process::exit(4);
                }
            }
        }
        "rank1_never_joins" => println!("RESULT joined: [1]"),
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn two_ranks_over_loopback_get_the_collectives_right() {
    let ranks = run_ranks(2, "collectives");
    for (i, (code, out)) in ranks.iter().enumerate() {
        assert_eq!(*code, Some(0), "rank {i} failed:\n{out}");
        assert_eq!(result(out, "rank"), vec![i as f32, 2.0]);
    }
    let x = |r: f32| [1.0 + r, 10.0 * (r + 1.0), -r, 0.5];
    let sum: Vec<f32> = (0..4).map(|j| x(0.0)[j] + x(1.0)[j]).collect();
    let max: Vec<f32> = (0..4).map(|j| x(0.0)[j].max(x(1.0)[j])).collect();
    for (i, (_, out)) in ranks.iter().enumerate() {
        assert_eq!(result(out, "all_sum"), sum, "rank {i}");
        assert_eq!(result(out, "all_max"), max, "rank {i}");
        assert_eq!(
            result(out, "all_gather"),
            vec![0.0, 0.25, 1.0, 1.25],
            "rank {i}"
        );
        let sent: Vec<f32> = b"\x00\xffrank 0".iter().map(|&b| b as f32).collect();
        assert_eq!(result(out, "broadcast"), sent, "rank {i}");
        assert_eq!(result(out, "broadcast_empty"), vec![0.0], "rank {i}");
        // Rank 0's clock, so not zero, and the same on both ranks.
        assert_eq!(result(out, "seed"), result(&ranks[0].1, "seed"), "rank {i}");
        assert!(result(out, "seed").iter().any(|&p| p != 0.0), "rank {i}");
        let peer = (1 - i) as f32;
        assert_eq!(
            result(out, "recv"),
            vec![100.0 + peer, 200.0 + peer],
            "rank {i}"
        );
    }
}

/// Rank 1 of `scenario` exits with status 3; rank 0 must end with an
/// error (within the launcher's time limit).
fn rank_zero_fails_when_rank_one_is_gone(scenario: &str) {
    let ranks = run_ranks(2, scenario);
    assert_eq!(ranks[1].0, Some(3), "{scenario}: rank 1 exits");
    let (code, out) = &ranks[0];
    assert_ne!(*code, Some(0), "{scenario}: rank 0 must fail, got:\n{out}");
}

#[test]
fn a_rank_that_dies_ends_the_other_with_an_error() {
    rank_zero_fails_when_rank_one_is_gone("rank1_dies");
}

#[test]
fn a_rank_that_never_joins_ends_the_other_with_an_error() {
    rank_zero_fails_when_rank_one_is_gone("rank1_never_joins");
}
