//! One decode step builds the graph mlx-lm builds: for each test model, the
//! primitives of one more token's logits after a prompt, counted by name,
//! against mlx-lm 0.32.2's for the same model, prompt and token (live,
//! `xtask/python/refs/decode_graph.py`); and likewise the prompt's own graph.
//!
//! Why: in decode every primitive costs host time on each step (building
//! the graph, then encoding each node for the device), and on a GPU a
//! kernel launch; the model's weights are read once either way. So a node
//! more than mlx-lm per layer is a cost per layer and token. This test found
//! six per layer (two `Reshape` per cache write from mlx-rs's indexing, and
//! SwiGLU as two kernels where mlx-lm compiles it into one) and keeps them
//! out.
//!
//! Ours may use each primitive at most as often as mlx-lm does, except the
//! embedding's id guard (`Embedding::forward` clamps ids on the device:
//! one `Maximum`, one `Minimum`, two `Broadcast`), which mlx-lm lacks.
//! `Reshape`, `Flatten` and `Unflatten` count as one kind (shape changes):
//! our layers run on rows `[B * L, hidden]`, which takes two reshapes per
//! graph (allowed) and saves a flatten and an unflatten around every dense
//! projection.
//!
//! With q/k/v and gate/up stacked (`WeightOptions::fuse_projections`, as a
//! GPU load does), a one-row step takes one product per stack and slices
//! its output (views): each product saved may be traded for up to two
//! cuts (`Split` or `Slice`). The graphs are checked stacked and unstacked.
//!
//! The model is loaded with the weight options of a GPU load (no row split
//! over CPU streams, no transposed float32 layout: those are CPU-only
//! layouts, see `mistral_loader::LoadPlan`). On the CPU both engines expand
//! MLX's fast ops (RMSNorm, RoPE, attention) into the same primitives, so
//! the counts also show that both call the same fast ops.

mod reference;

use std::collections::BTreeMap;

use mistral_loader::{load_model_config, SafetensorsWeights};
use mistral_model::{Mistral, WeightOptions};
use mlx_rs::Array;
use mlx_rs_core::{KVCache, KeyValueCache, LanguageModel, RotatingKVCache};
use reference::{python_module, selected, test_model, TestModel};

/// The primitives ours may add: the embedding's id guard, and the two
/// reshapes to rows and back (which save nothing where every projection is
/// quantized: MLX's quantized product takes 3-D inputs as they are).
const GUARD: [(&str, usize); 4] = [
    ("Maximum", 1),
    ("Minimum", 1),
    ("Broadcast", 2),
    ("Reshape/Flatten/Unflatten", 2),
];

const PROMPT: [i32; 8] = [1, 330, 1136, 4685, 302, 272, 3340, 28723];
const TOKEN: i32 = 13;

/// The primitives of the graph that computes `output`, counted by
/// [`kind`].
fn graph_ops(output: &Array) -> BTreeMap<String, usize> {
    let mut ops = BTreeMap::new();
    for (name, count) in reference::graph::primitives(output) {
        *ops.entry(kind(&name)).or_insert(0) += count;
    }
    ops
}

/// The kind a primitive counts as: its name, the shape changes as one.
fn kind(name: &str) -> String {
    match name {
        "Reshape" | "Flatten" | "Unflatten" => "Reshape/Flatten/Unflatten".to_owned(),
        _ => name.to_owned(),
    }
}

/// Our primitives with cache type `C`: of the prompt's logits (from empty
/// caches), and of the next token's after the prompt is evaluated.
fn ours<C: KeyValueCache>(spec: &TestModel, fuse: bool) -> [BTreeMap<String, usize>; 2] {
    let config = load_model_config(&spec.dir).expect("config");
    let mut weights = SafetensorsWeights::open(&spec.dir).expect("weights");
    let options = WeightOptions {
        dtype: None,
        dequantize: false,
        transpose_f32: false,
        row_split: 1,
        fuse_projections: fuse,
        qmv: reference::qmv(),
        cpu_qmm: Default::default(),
        // MLX's fast ops, which mlx-lm's graph also expands.
        cpu_fast: Default::default(),
        narrow_scales: false,
    };
    let mut model = Mistral::with_options(&config, &mut weights, options).expect("model");
    let mut cache: Vec<Option<C>> = Vec::new();
    let prompt = Array::from_slice(&PROMPT, &[1, PROMPT.len() as i32]);
    let logits = LanguageModel::<C>::forward(&mut model, &prompt, &mut cache).expect("prompt");
    let prompt_ops = graph_ops(&logits);
    logits.eval().expect("eval");
    let token = Array::from_slice(&[TOKEN], &[1, 1]);
    let logits = LanguageModel::<C>::forward(&mut model, &token, &mut cache).expect("step");
    [prompt_ops, graph_ops(&logits)]
}

/// mlx-lm's primitives, as [`ours`] counts them.
fn theirs(spec: &TestModel) -> [BTreeMap<String, usize>; 2] {
    [true, false].map(|prompt| mlx_lm_ops(spec, prompt))
}

fn mlx_lm_ops(spec: &TestModel, prompt_graph: bool) -> BTreeMap<String, usize> {
    let ids: Vec<String> = PROMPT.iter().map(i32::to_string).collect();
    let mut command = python_module("refs.decode_graph");
    command
        .arg("--model")
        .arg(&spec.dir)
        .arg("--prompt-ids")
        .arg(ids.join(","))
        .arg("--token")
        .arg(TOKEN.to_string());
    if prompt_graph {
        command.arg("--prompt-graph");
    }
    let output = command.output().expect("run decode_graph.py");
    assert!(
        output.status.success(),
        "decode_graph.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    doc["ops"]
        .as_object()
        .expect("ops")
        .iter()
        .fold(BTreeMap::new(), |mut ops, (name, n)| {
            *ops.entry(kind(name)).or_insert(0) += n.as_u64().expect("count") as usize;
            ops
        })
}

/// Ours, unstacked and stacked, against mlx-lm's.
fn compare<C: KeyValueCache>(name: &str, spec: &TestModel) {
    let theirs = theirs(spec);
    for fuse in [false, true] {
        let ours = ours::<C>(spec, fuse);
        let how = if fuse { "stacked" } else { "unstacked" };
        for (what, ours, theirs) in [
            ("prompt", &ours[0], &theirs[0]),
            ("step", &ours[1], &theirs[1]),
        ] {
            compare_graph(&format!("{name} {what} ({how})"), ours, theirs);
        }
    }
}

/// Matrix products in a graph, dense and quantized.
fn products(ops: &BTreeMap<String, usize>) -> usize {
    ["Matmul", "QuantizedMatmul"]
        .iter()
        .map(|op| ops.get(*op).copied().unwrap_or(0))
        .sum()
}

fn compare_graph(name: &str, ours: &BTreeMap<String, usize>, theirs: &BTreeMap<String, usize>) {
    let total = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
    eprintln!(
        "{name}: {} primitives, mlx-lm {}",
        total(ours),
        total(theirs)
    );
    // Products saved by stacking, each traded for at most two cuts of a
    // stack's output (`Split`, or `Slice`).
    let saved = products(theirs).saturating_sub(products(ours));
    let count = |m: &BTreeMap<String, usize>, op: &str| m.get(op).copied().unwrap_or(0);
    let cuts = |m: &BTreeMap<String, usize>| count(m, "Split") + count(m, "Slice");
    let mut extra = Vec::new();
    if cuts(ours) > cuts(theirs) + 2 * saved {
        extra.push(format!(
            "Split and Slice: {}, allowed {} (mlx-lm's, plus two per product saved)",
            cuts(ours),
            cuts(theirs) + 2 * saved
        ));
    }
    for (op, &n) in ours {
        if op == "Split" || op == "Slice" {
            continue;
        }
        let allowed = theirs.get(op).copied().unwrap_or(0)
            + GUARD
                .iter()
                .find(|(g, _)| g == op)
                .map_or(0, |(_, extra)| *extra);
        if n > allowed {
            extra.push(format!(
                "{op}: {n}, allowed {allowed} (mlx-lm's count, plus the guard's)"
            ));
        }
    }
    assert!(
        extra.is_empty(),
        "{name}: more primitives than mlx-lm's: {extra:?}\nours: {ours:?}\nmlx-lm: {theirs:?}"
    );
}

#[test]
fn prompt_and_decode_graphs_have_no_more_primitives_than_mlx_lm() {
    for name in [
        "gqa4_f32",
        "gqa4_bf16",
        "gqa4_q4_g64",
        "gqa4_q8_g32",
        "mha_tied_f32",
        "headdim_f32",
    ]
    .into_iter()
    .filter(|name| selected(name))
    {
        compare::<KVCache>(name, &test_model(name));
    }
    if !selected("window_v01_f32") {
        return;
    }
    compare::<RotatingKVCache>("window_v01_f32", &test_model("window_v01_f32"));
}
