//! Safetensors discovery and conversion, on checkpoints the tests write.

mod common;

use std::collections::BTreeMap;

use common::*;
use mistral_loader::{
    discover_checkpoint, CheckpointLayout, FileAccess, LoadError, SafetensorsWeights, WeightSource,
};
use safetensors::tensor::Dtype;

/// A mixed set: f32, f16, bf16, u32 (packed quantized), i32, i64, u8, a
/// scalar and an empty tensor.
fn mixed_tensors() -> BTreeMap<String, RawTensor> {
    let mut t = BTreeMap::new();
    t.insert("model.embed_tokens.weight".into(), f32_tensor(&[7, 5], 1));
    t.insert("model.norm.weight".into(), half_tensor(Dtype::F16, &[5], 2));
    t.insert(
        "lm_head.weight".into(),
        half_tensor(Dtype::BF16, &[3, 4, 2], 3),
    );
    t.insert("q.weight".into(), u32_tensor(&[4, 6], 4));
    t.insert("q.scales".into(), half_tensor(Dtype::BF16, &[4, 1], 5));
    t.insert("i32".into(), int_tensor(Dtype::I32, &[3], 6));
    t.insert("i64".into(), int_tensor(Dtype::I64, &[2, 2], 7));
    t.insert("u8".into(), int_tensor(Dtype::U8, &[5], 8));
    t.insert("scalar".into(), f32_tensor(&[], 9));
    t.insert("empty".into(), f32_tensor(&[0, 4], 10));
    t
}

fn check_array(name: &str, a: &mlx_rs::Array, expected: &RawTensor) {
    let shape: Vec<usize> = a.shape().iter().map(|&d| d as usize).collect();
    assert_eq!(shape, expected.shape, "shape of {name}");
    let want = mistral_loader::mlx_dtype(expected.dtype);
    assert_eq!(Some(a.dtype()), want, "dtype of {name}");
    assert_eq!(array_bytes(a), expected.bytes, "bytes of {name}");
}

#[test]
fn single_file_all_dtypes_round_trip() {
    let dir = TempDir::new("single");
    let tensors = mixed_tensors();
    write_safetensors(&dir.path().join("model.safetensors"), &tensors);

    let cp = discover_checkpoint(dir.path()).unwrap();
    assert_eq!(cp.layout, CheckpointLayout::Single);

    let mut w = SafetensorsWeights::open(dir.path()).unwrap();
    assert_eq!(w.len(), tensors.len());
    let file = dir.path().join("model.safetensors");
    assert_eq!(w.file_of("q.weight"), Some(file.as_path()));
    let total: usize = tensors.values().map(|t| t.bytes.len()).sum();
    assert_eq!(w.remaining_bytes(), total);

    for (name, t) in &tensors {
        let a = w.take(name).unwrap_or_else(|| panic!("{name} missing"));
        check_array(name, &a, t);
        assert!(w.take(name).is_none(), "{name} taken twice");
        assert!(!w.contains(name));
        // Still known, for error messages about taken tensors.
        assert_eq!(w.file_of(name), Some(file.as_path()));
    }
    assert!(w.is_empty());
    assert!(w.file_of("no.such.tensor").is_none());
    assert!(w.failures().is_empty());
    assert!(w.finish().unwrap().is_empty());
}

#[test]
fn plain_reads_give_the_same_values_as_the_map() {
    let dir = TempDir::new("plainread");
    let tensors = mixed_tensors();
    write_safetensors(&dir.path().join("model.safetensors"), &tensors);
    let mut w = SafetensorsWeights::open_with(dir.path(), FileAccess::Read).unwrap();
    for (name, t) in &tensors {
        check_array(name, &w.take(name).unwrap(), t);
    }
    assert!(w.finish().unwrap().is_empty());
}

/// A file truncated after it was opened: with plain reads the read comes up
/// short, with the map the length check before each copy catches it; either
/// way an error naming the file and no SIGBUS (which would kill the test).
#[test]
fn a_file_truncated_while_loading_is_an_error_naming_it() {
    for access in [FileAccess::Read, FileAccess::Mmap] {
        let dir = TempDir::new("truncatedlater");
        let tensors = mixed_tensors();
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, &tensors);
        let mut w = SafetensorsWeights::open_with(dir.path(), access).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let mut failed = 0;
        for name in tensors.keys() {
            match w.try_take(name) {
                Ok(_) => {}
                Err(LoadError::Io { path: p, source }) => {
                    assert_eq!(p, path, "{access:?}");
                    assert!(
                        source.to_string().contains("truncated"),
                        "{access:?}: {source}"
                    );
                    failed += 1;
                }
                Err(other) => panic!("{access:?}: unexpected error {other}"),
            }
        }
        assert!(failed > 0, "{access:?}: no tensor lay past the cut");
    }
}

#[test]
fn page_release_off_gives_same_values() {
    let dir = TempDir::new("norelease");
    let tensors = mixed_tensors();
    write_safetensors(&dir.path().join("model.safetensors"), &tensors);
    let mut w = SafetensorsWeights::open(dir.path()).unwrap();
    w.set_release_pages(false);
    for (name, t) in &tensors {
        check_array(name, &w.take(name).unwrap(), t);
    }
}

#[test]
fn three_shards_with_index() {
    let dir = TempDir::new("sharded");
    let all = mixed_tensors();
    // Spread the tensors over three shards, round robin.
    let mut shards = vec![BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
    for (i, (name, t)) in all.iter().enumerate() {
        shards[i % 3].insert(name.clone(), t.clone());
    }
    let weight_map = write_sharded(dir.path(), &shards);

    let cp = discover_checkpoint(dir.path()).unwrap();
    assert_eq!(cp.layout, CheckpointLayout::Indexed);
    assert_eq!(cp.files.len(), 3);

    let mut w = SafetensorsWeights::open(dir.path()).unwrap();
    assert_eq!(w.len(), all.len());
    let remaining = w.remaining();
    assert_eq!(remaining.len(), all.len());
    for (tensor, file) in &remaining {
        assert_eq!(file, &dir.path().join(&weight_map[tensor]));
        assert_eq!(w.file_of(tensor), Some(file.as_path()));
    }

    // Take all but two; the rest are reported with their shards.
    let keep = ["u8", "q.scales"];
    for (name, t) in &all {
        if !keep.contains(&name.as_str()) {
            check_array(name, &w.take(name).unwrap(), t);
        }
    }
    let left = w.finish().unwrap();
    let want: Vec<(String, std::path::PathBuf)> = {
        let mut v: Vec<_> = keep
            .iter()
            .map(|k| (k.to_string(), dir.path().join(&weight_map[*k])))
            .collect();
        v.sort();
        v
    };
    assert_eq!(left, want);
}

/// [`mixed_tensors`] in two shards without an index.
fn two_unindexed_shards(tag: &str) -> (TempDir, BTreeMap<String, RawTensor>) {
    let dir = TempDir::new(tag);
    let all = mixed_tensors();
    let mut shards = vec![BTreeMap::new(), BTreeMap::new()];
    for (i, (name, t)) in all.iter().enumerate() {
        shards[i % 2].insert(name.clone(), t.clone());
    }
    write_sharded(dir.path(), &shards);
    std::fs::remove_file(dir.path().join("model.safetensors.index.json")).unwrap();
    (dir, all)
}

#[test]
fn shards_without_index() {
    let (dir, all) = two_unindexed_shards("noindex");
    let cp = discover_checkpoint(dir.path()).unwrap();
    assert_eq!(cp.layout, CheckpointLayout::ShardsWithoutIndex);
    let mut w = SafetensorsWeights::open(dir.path()).unwrap();
    for (name, t) in &all {
        check_array(name, &w.take(name).unwrap(), t);
    }

    // Remove one shard: incomplete set.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = SafetensorsWeights::open(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::ShardSet { .. }), "{err}");
}

#[test]
fn a_huge_shard_count_in_a_file_name_is_a_quick_error() {
    // Before: discovery looped 1..=total with total from the file name.
    let dir = TempDir::new("hugecount");
    let one: BTreeMap<String, RawTensor> = mixed_tensors().into_iter().take(1).collect();
    write_sharded(dir.path(), &[one]);
    std::fs::remove_file(dir.path().join("model.safetensors.index.json")).unwrap();
    std::fs::rename(
        dir.path().join("model-00001-of-00001.safetensors"),
        dir.path().join("model-00001-of-4294967295.safetensors"),
    )
    .unwrap();
    let err = SafetensorsWeights::open(dir.path()).unwrap_err();
    match &err {
        LoadError::ShardSet { reason, .. } => {
            assert!(reason.contains("shard 2 of 4294967295 is missing"), "{err}")
        }
        other => panic!("expected a shard-set error, got {other}"),
    }
}

#[test]
fn differently_padded_names_of_one_shard_are_an_error() {
    // Before: the second name silently replaced the first.
    let (dir, _) = two_unindexed_shards("padding");
    std::fs::copy(
        dir.path().join("model-00001-of-00002.safetensors"),
        dir.path().join("model-1-of-2.safetensors"),
    )
    .unwrap();
    let err = SafetensorsWeights::open(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LoadError::ShardSet { .. }), "{text}");
    assert!(
        text.contains("model-1-of-2.safetensors")
            && text.contains("model-00001-of-00002.safetensors")
            && text.contains("shard 1"),
        "{text}"
    );
}

#[test]
fn index_naming_missing_shard() {
    let dir = TempDir::new("missingshard");
    let mut shards = vec![BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
    shards[0].insert("a".to_string(), f32_tensor(&[2], 1));
    shards[1].insert("b".to_string(), f32_tensor(&[2], 2));
    shards[2].insert("c".to_string(), f32_tensor(&[2], 3));
    write_sharded(dir.path(), &shards);
    let gone = dir.path().join("model-00003-of-00003.safetensors");
    std::fs::remove_file(&gone).unwrap();
    let err = SafetensorsWeights::open(dir.path()).unwrap_err();
    match &err {
        LoadError::MissingShard { shard, tensor, .. } => {
            assert_eq!(shard, &gone);
            assert_eq!(tensor, "c");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("model-00003-of-00003.safetensors"));
}

#[test]
fn index_listing_tensor_absent_from_shard() {
    let dir = TempDir::new("absent");
    let mut shards = vec![BTreeMap::new(), BTreeMap::new()];
    shards[0].insert("a".to_string(), f32_tensor(&[2], 1));
    shards[1].insert("b".to_string(), f32_tensor(&[2], 2));
    let mut weight_map = write_sharded(dir.path(), &shards);
    weight_map.insert("ghost".into(), "model-00002-of-00002.safetensors".into());
    write_index(dir.path(), &weight_map);
    let err = SafetensorsWeights::open(dir.path()).unwrap_err();
    match &err {
        LoadError::TensorNotInShard { tensor, shard, .. } => {
            assert_eq!(tensor, "ghost");
            assert_eq!(shard, &dir.path().join("model-00002-of-00002.safetensors"));
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn index_with_bad_entries() {
    let dir = TempDir::new("badindex");
    let idx = dir.path().join("model.safetensors.index.json");
    std::fs::write(&idx, "{ not json").unwrap();
    let err = discover_checkpoint(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::Json { path, .. } if path == &idx),
        "{err}"
    );

    std::fs::write(&idx, r#"{"metadata": {}}"#).unwrap();
    let err = discover_checkpoint(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::InvalidIndex { .. }), "{err}");

    std::fs::write(&idx, r#"{"weight_map": {"a": "../etc/passwd"}}"#).unwrap();
    let err = discover_checkpoint(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::InvalidField { field, .. } if field == "weight_map.a"),
        "{err}"
    );

    std::fs::write(&idx, r#"{"weight_map": {"a": 3}}"#).unwrap();
    let err = discover_checkpoint(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::InvalidField { .. }), "{err}");
}

#[test]
fn missing_dir_and_no_weights() {
    let dir = TempDir::new("nodir");
    let missing = dir.path().join("nope");
    let err = SafetensorsWeights::open(&missing).unwrap_err();
    assert!(
        matches!(&err, LoadError::DirNotFound { dir } if dir == &missing),
        "{err}"
    );

    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = SafetensorsWeights::open(&file).unwrap_err();
    assert!(matches!(err, LoadError::NotADirectory { .. }), "{err}");

    let err = SafetensorsWeights::open(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::NoWeights { .. }), "{err}");
}

#[test]
fn truncated_and_garbage_files_are_errors_naming_the_file() {
    let dir = TempDir::new("corrupt");
    let path = dir.path().join("model.safetensors");
    write_safetensors(&path, &mixed_tensors());
    let good = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("3 bytes", good[..3].to_vec()),
        ("header cut", good[..8 + header_len / 2].to_vec()),
        ("data cut by one byte", good[..good.len() - 1].to_vec()),
        (
            "data cut in half",
            good[..8 + header_len + (good.len() - 8 - header_len) / 2].to_vec(),
        ),
        ("extra byte", [good.as_slice(), &[0u8]].concat()),
        ("garbage", pseudo_bytes(42, 4096)),
        ("huge header length", {
            let mut v = u64::MAX.to_le_bytes().to_vec();
            v.extend_from_slice(&good[8..]);
            v
        }),
        ("header length past end", {
            let mut v = ((good.len() as u64) * 2).to_le_bytes().to_vec();
            v.extend_from_slice(&good[8..]);
            v
        }),
        ("non-utf8 header", {
            let mut v = 16u64.to_le_bytes().to_vec();
            v.extend_from_slice(&[0xff; 16]);
            v
        }),
        ("header not json", {
            let mut v = 8u64.to_le_bytes().to_vec();
            v.extend_from_slice(b"{{{{{{{{");
            v
        }),
    ];
    // A header that is valid JSON but lies about a tensor's size.
    let header = String::from_utf8(good[8..8 + header_len].to_vec()).unwrap();
    let lie = header.replacen("[7,5]", "[7,6]", 1);
    assert_ne!(lie, header);
    let mut v = (lie.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(lie.as_bytes());
    v.extend_from_slice(&good[8 + header_len..]);
    cases.push(("shape does not match offsets", v));

    for ((what, bytes), access) in cases
        .iter()
        .flat_map(|case| [(case, FileAccess::Mmap), (case, FileAccess::Read)])
    {
        std::fs::write(&path, bytes).unwrap();
        let err = SafetensorsWeights::open_with(dir.path(), access)
            .err()
            .unwrap_or_else(|| panic!("{what} ({access:?}): opened a corrupt file"));
        match &err {
            LoadError::Safetensors { path: p, .. } => assert_eq!(p, &path, "{what}"),
            other => panic!("{what} ({access:?}): unexpected error {other}"),
        }
        assert!(
            err.to_string().contains("model.safetensors"),
            "{what}: {err}"
        );
    }
}

#[test]
fn corrupt_shard_is_named() {
    let dir = TempDir::new("corruptshard");
    let mut shards = vec![BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
    for (i, s) in shards.iter_mut().enumerate() {
        s.insert(format!("t{i}"), f32_tensor(&[3], i as u64));
    }
    write_sharded(dir.path(), &shards);
    let bad = dir.path().join("model-00002-of-00003.safetensors");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() - 4]).unwrap();
    let err = SafetensorsWeights::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::Safetensors { path, .. } if path == &bad),
        "{err}"
    );
}

#[test]
fn unsupported_dtype_is_recorded_not_panicking() {
    let dir = TempDir::new("f8");
    let mut t = BTreeMap::new();
    t.insert("w.f8".to_string(), int_tensor(Dtype::F8_E5M2, &[4], 1));
    t.insert("w.ok".to_string(), f32_tensor(&[2], 2));
    write_safetensors(&dir.path().join("model.safetensors"), &t);
    let mut w = SafetensorsWeights::open(dir.path()).unwrap();
    assert!(w.take("w.f8").is_none());
    check_array("w.ok", &w.take("w.ok").unwrap(), &t["w.ok"]);
    assert_eq!(w.failures().len(), 1);
    let err = w.finish().unwrap_err();
    match &err {
        LoadError::UnsupportedDtype { tensor, path, .. } => {
            assert_eq!(tensor, "w.f8");
            assert_eq!(path, &dir.path().join("model.safetensors"));
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn misaligned_data_is_read_correctly() {
    // Hand-written header whose length is not a multiple of 4, so the f32
    // data starts at an odd address inside the map.
    let dir = TempDir::new("misaligned");
    let t = f32_tensor(&[3, 3], 7);
    let mut header = format!(
        r#"{{"x":{{"dtype":"F32","shape":[3,3],"data_offsets":[0,{}]}}}}"#,
        t.bytes.len()
    );
    while (8 + header.len()) % 4 == 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&t.bytes);
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    let mut w = SafetensorsWeights::open(dir.path()).unwrap();
    check_array("x", &w.try_take("x").unwrap().unwrap(), &t);
}

#[test]
fn dimension_over_i32_is_an_error_naming_file_and_tensor() {
    // [2^31, 0] holds no bytes, so the file is valid, but MLX dims are i32.
    let dir = TempDir::new("bigdim");
    let header = r#"{"huge":{"dtype":"F32","shape":[2147483648,0],"data_offsets":[0,0]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let mut w = SafetensorsWeights::open(dir.path()).unwrap();
    let meta = w.meta("huge").unwrap();
    assert_eq!(meta.shape, vec![1usize << 31, 0]);
    let err = w.try_take("huge").unwrap_err();
    match &err {
        LoadError::ShapeTooLarge {
            path: p, tensor, ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(tensor, "huge");
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn index_is_authoritative_over_shard_contents() {
    // A shard holding a tensor the index does not list: not loaded.
    let dir = TempDir::new("authoritative");
    let mut shards = vec![BTreeMap::new(), BTreeMap::new()];
    shards[0].insert("a".to_string(), f32_tensor(&[2], 1));
    shards[1].insert("b".to_string(), f32_tensor(&[2], 2));
    shards[1].insert("stray".to_string(), f32_tensor(&[2], 3));
    let mut weight_map = write_sharded(dir.path(), &shards);
    weight_map.remove("stray");
    write_index(dir.path(), &weight_map);
    let w = SafetensorsWeights::open(dir.path()).unwrap();
    assert_eq!(w.names(), vec!["a".to_string(), "b".to_string()]);
    assert!(w.file_of("stray").is_none());
}

#[test]
fn duplicate_tensor_across_unindexed_shards() {
    let dir = TempDir::new("dup");
    let mut shards = vec![BTreeMap::new(), BTreeMap::new()];
    shards[0].insert("a".to_string(), f32_tensor(&[2], 1));
    shards[1].insert("a".to_string(), f32_tensor(&[2], 2));
    write_sharded(dir.path(), &shards);
    std::fs::remove_file(dir.path().join("model.safetensors.index.json")).unwrap();
    let err = SafetensorsWeights::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::DuplicateTensor { tensor, .. } if tensor == "a"),
        "{err}"
    );
}

/// A tensor-parallel rank's read: each block of rows or columns, in both
/// file access modes, equals the block MLX cuts from the whole tensor (the
/// default `WeightSource::take_block` of an in-memory source); a tensor
/// whose axis does not divide comes whole, and a block take removes the
/// tensor.
#[test]
fn blocks_read_from_the_file_equal_blocks_cut_from_the_whole_tensor() {
    use mistral_model::{Block, BlockAxis};
    use std::collections::HashMap;

    let dir = TempDir::new("blocks");
    let mut tensors = mixed_tensors();
    tensors.insert("rows_cols".into(), f32_tensor(&[6, 12], 11));
    tensors.insert("bf16_3d".into(), half_tensor(Dtype::BF16, &[6, 4, 6], 12));
    tensors.insert("packed".into(), u32_tensor(&[4, 12], 13));
    write_safetensors(&dir.path().join("model.safetensors"), &tensors);

    for access in [FileAccess::Mmap, FileAccess::Read] {
        for parts in [1, 2, 3, 4] {
            for axis in [BlockAxis::First, BlockAxis::Last] {
                for index in 0..parts {
                    let block = Block { axis, index, parts };
                    let mut whole = SafetensorsWeights::open_with(dir.path(), access).unwrap();
                    let mut memory: HashMap<String, mlx_rs::Array> = tensors
                        .keys()
                        .map(|name| (name.clone(), whole.take(name).unwrap()))
                        .collect();
                    let mut w = SafetensorsWeights::open_with(dir.path(), access).unwrap();
                    for (name, t) in &tensors {
                        let what = format!("{name} {block:?} {access:?}");
                        let got = w.take_block(name, block).unwrap();
                        let want = memory.take_block(name, block).unwrap();
                        assert_eq!(got.shape(), want.shape(), "shape of {what}");
                        assert_eq!(got.dtype(), want.dtype(), "dtype of {what}");
                        assert_eq!(array_bytes(&got), array_bytes(&want), "bytes of {what}");
                        if block.range(&t.shape).is_none() {
                            check_array(name, &got, t);
                        } else if parts > 1 && !t.bytes.is_empty() {
                            assert!(array_bytes(&got).len() < t.bytes.len(), "{what}");
                        }
                        assert!(!w.contains(name), "{what} still there");
                    }
                    assert!(w.finish().unwrap().is_empty());
                }
            }
        }
    }
}
