//! `mistral-cli`: generate text with, and benchmark, Mistral models on MLX.

fn main() {}
