//! The row order of query and key matrices for RoPE: Hugging Face's
//! rotate-half layout against the interleaved pairs llama.cpp's GGUF files
//! and Mistral's own `consolidated.safetensors` store.

/// For each Hugging Face row, the stored row it comes from: llama.cpp and
/// Mistral's layout store row `j * half + i` of a head (`j` in 0..2, `i` in
/// 0..half) at `2 i + j`.
pub fn hf_row_order(rows: usize, heads: i32) -> Option<Vec<usize>> {
    let heads = usize::try_from(heads).ok().filter(|&h| h > 0)?;
    if rows % heads != 0 || (rows / heads) % 2 != 0 {
        return None;
    }
    let head_dim = rows / heads;
    let half = head_dim / 2;
    Some(
        (0..rows)
            .map(|r| {
                let (h, within) = (r / head_dim, r % head_dim);
                let (j, i) = (within / half, within % half);
                h * head_dim + 2 * i + j
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::hf_row_order;

    #[test]
    fn row_order_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(n, 2, rows/n/2, cols).swapaxes(1, 2): HF row
        // h*hd + j*half + i goes to GGUF row h*hd + 2i + j.
        let (rows, heads) = (12, 2);
        let hf: Vec<usize> = (0..rows).collect();
        let mut gguf = vec![0; rows];
        let hd = rows / heads;
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    gguf[h * hd + 2 * i + j] = hf[h * hd + j * hd / 2 + i];
                }
            }
        }
        let order = hf_row_order(rows, heads as i32).unwrap();
        let back: Vec<usize> = order.iter().map(|&g| gguf[g]).collect();
        assert_eq!(back, hf);
        assert_eq!(hf_row_order(10, 4), None);
        assert_eq!(hf_row_order(12, 0), None);
    }
}
