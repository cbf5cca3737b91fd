//! Mistral's tekken tokenizer on about 180k tokens of text: `tiktoken`
//! (`Tekken::encode`, tiktoken's BPE through `tiktoken-rs`) against
//! `tokenizers` (the same vocabulary as `Tekken::to_tokenizer` builds it,
//! the `tokenizers` crate's BPE), both giving the same ids (asserted).
//!
//! The file is mistral-common's `tekken_240911.json`: `MISTRAL_MLX_TEKKEN`,
//! else the one in the reference venv `cargo xtask test` makes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mistral_text::tekken::Tekken;
use std::hint::black_box;
use std::path::PathBuf;

fn tekken_file() -> PathBuf {
    if let Some(p) = std::env::var_os("MISTRAL_MLX_TEKKEN") {
        return PathBuf::from(p);
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/xtask/venv/lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages/mistral_common/data/tekken_240911.json")
        })
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no tekken file under {}: run `cargo xtask test` or set MISTRAL_MLX_TEKKEN",
                lib.display()
            )
        })
}

/// Mixed prose, code, digits and non-ASCII text, repeated to about 180k
/// tokens.
fn text() -> String {
    let unit = "The harbour town woke slowly on winter mornings; the boats were out \
        before seven, and 1,234 crates of fish were sorted by noon. \
        fn main() {\n    let total: u64 = (1..=100).sum();\n    println!(\"{total}\");\n}\n\
        Ünïcödé naïve café — « guillemets » 日本語のテキスト 🙂   spaces\t\ttabs\n\n";
    unit.repeat(2000)
}

fn tekken(c: &mut Criterion) {
    let tekken = Tekken::from_file(tekken_file()).expect("tekken file");
    let hf = tekken.to_tokenizer().expect("tokenizers form");
    let text = text();
    let ids = tekken.encode(&text, false, false);
    let hf_ids = hf
        .encode(text.as_str(), false)
        .expect("encode")
        .get_ids()
        .to_vec();
    assert_eq!(ids, hf_ids, "the two encoders differ");
    let mut group = c.benchmark_group("tekken_encode");
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.sample_size(10);
    group.bench_function("tiktoken", |b| {
        b.iter(|| tekken.encode(black_box(&text), false, false))
    });
    group.bench_function("tokenizers", |b| {
        b.iter(|| hf.encode(black_box(text.as_str()), false).expect("encode"))
    });
    group.finish();
}

criterion_group!(benches, tekken);
criterion_main!(benches);
