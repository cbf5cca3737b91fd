//! The primitives of a lazy graph, counted by name (MLX's `print_graph`):
//! what a decode step costs in host time per node.

use std::collections::BTreeMap;

use mlx_rs::Array;

/// The primitives of the graph that computes `output`, counted by name
/// (MLX's `print_graph`, one line per primitive after two header lines).
pub fn primitives(output: &Array) -> BTreeMap<String, usize> {
    let mut text = Vec::new();
    // SAFETY: a temporary FILE owned here, closed once; the vector holds a
    // live array handle for the call and is freed after it.
    unsafe {
        let file = mlx_sys::tmpfile();
        assert!(!file.is_null(), "tmpfile");
        let raw = [output.as_ptr()];
        let outputs = mlx_sys::mlx_vector_array_new_data(raw.as_ptr(), raw.len());
        let namer = mlx_sys::mlx_node_namer_new();
        let status = mlx_sys::mlx_print_graph(file, namer, outputs);
        mlx_sys::mlx_node_namer_free(namer);
        mlx_sys::mlx_vector_array_free(outputs);
        assert_eq!(status, 0, "mlx_print_graph");
        mlx_sys::fflush(file);
        mlx_sys::rewind(file);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // size_t is u64 or usize in the bindings, by platform.
            #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
            let n = mlx_sys::fread(buf.as_mut_ptr().cast(), 1, buf.len() as _, file) as usize;
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
        mlx_sys::fclose(file);
    }
    let text = String::from_utf8(text).expect("utf-8 graph");
    let mut ops = BTreeMap::new();
    for line in text.lines().skip(2) {
        let name = line.split_whitespace().next().expect("a primitive's name");
        *ops.entry(name.to_owned()).or_insert(0) += 1;
    }
    ops
}
