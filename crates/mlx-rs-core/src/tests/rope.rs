//! `initialize_rope` + `Rope::forward` against the rotation written out in
//! f64, with and without linear position scaling.

use mlx_rs::Array;

use super::host;
use crate::rope::{initialize_rope, RopeScaling};

fn rotated(x: &[f32], seq: usize, dim: usize, offset: i32, base: f64, scale: f64) -> Vec<f64> {
    let half = dim / 2;
    let mut out = vec![0.0; x.len()];
    for s in 0..seq {
        let position = (f64::from(offset) + s as f64) * scale;
        for i in 0..half {
            let theta = position * base.powf(-2.0 * i as f64 / dim as f64);
            let (a, b) = (f64::from(x[s * dim + i]), f64::from(x[s * dim + i + half]));
            out[s * dim + i] = a * theta.cos() - b * theta.sin();
            out[s * dim + i + half] = b * theta.cos() + a * theta.sin();
        }
    }
    out
}

#[test]
fn rope_rotates_halves_at_scaled_positions() {
    let (seq, dim, offset) = (6usize, 16usize, 5i32);
    let x: Vec<f32> = (0..seq * dim).map(|i| ((i as f32) * 0.37).sin()).collect();
    let input = Array::from_slice(&x, &[1, 1, seq as i32, dim as i32]);
    for (scaling, scale) in [
        (RopeScaling::None, 1.0),
        (RopeScaling::Linear { factor: 4.0 }, 0.25),
    ] {
        let rope = initialize_rope(dim as i32, 1e6, false, scaling).unwrap();
        let got = host(&rope.forward(&input, offset).unwrap());
        let want = rotated(&x, seq, dim, offset, 1e6, scale);
        assert_eq!(got.len(), want.len(), "{scaling:?}: element count");
        for (g, w) in got.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "{scaling:?}: {g} vs {w}");
        }
    }
}

#[test]
fn bad_settings_are_named() {
    let odd = initialize_rope(7, 1e4, false, RopeScaling::None)
        .unwrap_err()
        .to_string();
    assert!(odd.contains("dims"), "{odd}");
    let base = initialize_rope(8, 0.0, false, RopeScaling::None)
        .unwrap_err()
        .to_string();
    assert!(base.contains("rope_theta"), "{base}");
    let factor = initialize_rope(8, 1e4, false, RopeScaling::Linear { factor: 0.0 })
        .unwrap_err()
        .to_string();
    assert!(factor.contains("factor"), "{factor}");
}
