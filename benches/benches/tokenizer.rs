//! The text side: the benchmark model's tokenizer on a fixed English text of
//! about 2 KB.
//!
//! `tokenizer/encode` is the prompt's cost before prefill;
//! `detokenize/one_shot` decodes all its ids at once, and
//! `detokenize/streaming` feeds them one at a time through
//! `StreamingDetokenizer` (every `step`, then `finish`), as generation prints
//! text. The two are in one group because they produce the same text: their
//! ratio is what streaming costs. No MLX is involved.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mistral_benches::load_bench_tokenizer;
use mistral_text::{StreamingDetokenizer, Tokenizer};
use std::hint::black_box;

/// About 2 KB of plain English prose, written for this benchmark.
const TEXT: &str = "The harbour town woke slowly on winter mornings. Before the sun \
cleared the hills, the fishing boats were already out past the breakwater, their \
lamps swinging like small planets over the grey water, and the bakery on the corner \
of Mill Street had been warm for hours. Mrs. Alder, who had run it for thirty-one \
years, liked to say that bread was the only honest clock in town: it rose when it \
was ready and not a minute before, no matter who was waiting at the door. By seven \
o'clock the queue reached the post office. Children on their way to school pressed \
their faces against the glass to watch the cinnamon rolls come out of the oven, and \
the older men from the harbour stood in a loose circle by the lamp post, arguing \
about the weather, the price of diesel, and whether the new harbour master knew \
anything at all about tides. Nobody ever settled the last question. In the afternoon \
the town grew quiet again. The boats came back heavy or light, depending on luck \
and on the season, and the catch was sorted on the long wooden tables by the fish \
market while gulls circled overhead, waiting for someone to look away. The library \
opened at two, and its single room filled with students, retired teachers and \
anyone who wanted to read a newspaper without paying for it. Miss Okafor, the \
librarian, kept a list of every book that had ever been borrowed and not returned; \
the oldest entry dated from 1974, a field guide to the birds of the northern coast. \
She had not given up hope. When evening came, lights appeared one by one along the \
hillside, and the smell of wood smoke drifted down to the water. The last ferry left \
at nine. From its deck the town looked smaller than it was, a handful of warm windows \
between the dark sea and the darker hills, and most passengers stayed outside in the \
cold wind just to watch it fade. Some of them were leaving for good, and knew it; \
others would be back on Monday, complaining about the coffee on board. The harbour \
master, for his part, said nothing and checked the tide tables twice.";

/// Feeds `ids` one at a time through a streaming detokenizer and returns
/// the text it emitted.
fn stream(tokenizer: &Tokenizer, ids: &[u32]) -> String {
    let mut detok = StreamingDetokenizer::new(tokenizer, true);
    let mut text = String::new();
    for &id in ids {
        text += &detok.step(id).expect("step");
    }
    text += &detok.finish().expect("finish");
    text
}

fn tokenizer(c: &mut Criterion) {
    let tokenizer = load_bench_tokenizer().expect("benchmark tokenizer");
    let ids = tokenizer
        .encode(TEXT, false)
        .expect("encode")
        .get_ids()
        .to_vec();
    // The comparison is only fair if both produce the same text.
    let decoded = tokenizer.decode(&ids, true).expect("decode");
    assert_eq!(
        stream(&tokenizer, &ids),
        decoded,
        "streaming and one-shot differ"
    );

    let mut group = c.benchmark_group("tokenizer");
    group.throughput(Throughput::Bytes(TEXT.len() as u64));
    group.bench_function("encode", |b| {
        b.iter(|| tokenizer.encode(black_box(TEXT), false).expect("encode"))
    });
    group.finish();

    let mut group = c.benchmark_group("detokenize");
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("one_shot", |b| {
        b.iter(|| tokenizer.decode(black_box(&ids), true).expect("decode"))
    });
    group.bench_function("streaming", |b| {
        b.iter(|| stream(&tokenizer, black_box(&ids)))
    });
    group.finish();
}

criterion_group!(benches, tokenizer);
criterion_main!(benches);
