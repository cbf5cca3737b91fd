//! [`KvBudget`]: what a sequence's key/value cache costs on this model, and
//! the bytes the running requests' caches (with the prompt cache) may hold
//! (`--max-kv-bytes`).
//!
//! The cost is measured, not derived from the config: one token is fed
//! through a fresh cache of every layer, whose bytes per position are read
//! back (this covers the dtype, grouped or latent heads and a split over
//! ranks alike). A sequence of `n` positions then holds, per layer, its
//! positions rounded up to the cache's growth step, or the layer's sliding
//! window if that is smaller. Admission reserves a request's whole cost
//! (prompt and `max_tokens`) before it starts, so the caches stay within
//! the budget whatever the requests generate.
//!
//! With a quantized cache (`--kv-bits`) the probe's cache is also quantized
//! and measured again. A sequence's cache is dense until a forward call
//! brings it to the quantization start (so up to a prefill chunk past it),
//! quantized after: per layer its cost is the larger of the two.

use mistral_model::Mistral;
use mlx_rs::Array;
use mlx_rs_core::{BatchKVCache, KVCache, KeyValueCache, KvQuantization};

/// Prompt tokens prefilled per chunk (one chunk between decode steps); a
/// sequence is dense for up to one chunk past the quantization start.
pub const PREFILL_CHUNK: i32 = 512;

/// The share of the memory left after the weights that the default budget
/// takes.
const DEFAULT_SHARE: f64 = 0.5;

/// One layer's cache: bytes per position, and its sliding window.
pub type LayerCost = (u64, Option<usize>);

/// Key/value cache costs and the budget (see the module notes).
#[derive(Debug, Clone, Default)]
pub struct KvBudget {
    /// Per layer: bytes per position and sliding window.
    layers: Vec<LayerCost>,
    /// The budget in bytes.
    limit: u64,
    /// Whether the limit was given (else it is the default share).
    given: bool,
    /// The most positions one sequence alone holds within the limit.
    longest: usize,
    /// With a quantized cache: per layer the bytes of a quantized position,
    /// and up to how many positions a cache may still be dense.
    quantized: Option<(Vec<u64>, usize)>,
}

impl KvBudget {
    /// Measures `model`'s cost per position; the budget is `limit`, or by
    /// default half of what MLX's memory limit leaves after the weights.
    ///
    /// On a model split over ranks, every rank must measure too: the probe
    /// is a forward pass, whose collectives pair across the ranks.
    pub fn measure(
        model: &Mistral,
        limit: Option<u64>,
        quantization: Option<KvQuantization>,
    ) -> Result<Self, String> {
        let failed = |e: &dyn std::fmt::Display| format!("measuring the cache's size: {e}");
        let (layers, quantized) = probe(model, quantization).map_err(|e| failed(&e))?;
        let (limit, given) = match limit {
            Some(limit) => (limit, true),
            None => {
                let total = mlx_rs::memory::memory_limit().map_err(|e| failed(&e))? as u64;
                let weights = mlx_rs::memory::active_memory().map_err(|e| failed(&e))? as u64;
                let left = total.saturating_sub(weights) as f64;
                ((left * DEFAULT_SHARE) as u64, false)
            }
        };
        let quantized = quantized.zip(quantization).map(|(bytes, q)| {
            let start = usize::try_from(q.start).unwrap_or(0);
            (bytes, start + PREFILL_CHUNK as usize)
        });
        Ok(KvBudget::new(layers, limit, given, quantized))
    }

    fn new(
        layers: Vec<LayerCost>,
        limit: u64,
        given: bool,
        quantized: Option<(Vec<u64>, usize)>,
    ) -> Self {
        let mut budget = KvBudget {
            layers,
            limit,
            given,
            longest: 0,
            quantized,
        };
        budget.longest = budget.fit_longest();
        budget
    }

    /// A budget of `limit` bytes over layers of the given bytes per
    /// position and windows (tests).
    #[cfg(test)]
    pub fn with_layers(layers: Vec<LayerCost>, limit: u64) -> Self {
        KvBudget::new(layers, limit, true, None)
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The bytes a sequence of `positions` holds at most.
    pub fn cost(&self, positions: usize) -> u64 {
        let step = KVCache::STEP as usize;
        let held = |n: usize, window: Option<usize>| {
            let grown = n.div_ceil(step) * step;
            window.map_or(grown, |w| grown.min(w)) as u64
        };
        self.layers
            .iter()
            .enumerate()
            .map(|(i, &(bytes, window))| match &self.quantized {
                None => bytes * held(positions, window),
                Some((quantized, dense_until)) => {
                    let dense = bytes * held(positions.min(*dense_until), window);
                    let q = quantized.get(i).copied().unwrap_or(bytes);
                    dense.max(q * held(positions, window))
                }
            })
            .sum()
    }

    /// The most positions a sequence alone can hold within the budget.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// [`longest`](Self::longest), searched for.
    fn fit_longest(&self) -> usize {
        if self.cost(1) > self.limit {
            return 0;
        }
        // The cost grows with the positions: the last length that fits.
        let (mut fits, mut over) = (1usize, 2usize);
        while self.cost(over) <= self.limit {
            if over >= usize::MAX / 4 {
                return over; // only sliding windows: any length fits
            }
            fits = over;
            over *= 2;
        }
        while over - fits > 1 {
            let mid = fits + (over - fits) / 2;
            match self.cost(mid) <= self.limit {
                true => fits = mid,
                false => over = mid,
            }
        }
        fits
    }

    /// One line for the server's start: the budget and where it comes
    /// from.
    pub fn describe(&self) -> String {
        let gib = self.limit as f64 / (1u64 << 30) as f64;
        let source = match self.given {
            true => "--max-kv-bytes",
            false => "half of the memory left after the weights; --max-kv-bytes sets it",
        };
        format!(
            "key/value cache budget: {} bytes ({gib:.2} GiB, {source}); one request holds at \
             most {} tokens",
            self.limit,
            self.longest()
        )
    }
}

/// What [`probe`] measures: per layer its cost, and with a quantized cache
/// the bytes of a quantized position.
type Probed = (Vec<LayerCost>, Option<Vec<u64>>);

/// Per layer of `model`: the bytes of one position in a fresh cache, and
/// the layer's sliding window; with `quantization`, also the bytes of the
/// position quantized.
fn probe(
    model: &Mistral,
    quantization: Option<KvQuantization>,
) -> Result<Probed, Box<dyn std::error::Error>> {
    let mut cache: Vec<Option<BatchKVCache>> = model.new_cache();
    let token = Array::from_slice(&[0u32], &[1, 1]);
    model.forward(&token, &mut cache)?.eval()?;
    let config = model.config();
    let mut layers = Vec::with_capacity(cache.len());
    for (i, c) in cache.iter().enumerate() {
        // The row alone holds exactly its one position (the batch's
        // buffers are preallocated ahead).
        let bytes = match c {
            Some(c) => c.row(0)?.nbytes() as u64,
            None => 0,
        };
        let window = config.attention_mask(i).window();
        layers.push((bytes, window.and_then(|w| usize::try_from(w).ok())));
    }
    let Some(q) = quantization else {
        return Ok((layers, None));
    };
    let now = KvQuantization { start: 0, ..q };
    let mut quantized = Vec::with_capacity(cache.len());
    for c in cache.iter_mut() {
        quantized.push(match c {
            Some(c) => {
                c.quantize(&now)?;
                c.row(0)?.nbytes() as u64
            }
            None => 0,
        });
    }
    Ok((layers, Some(quantized)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_grows_by_steps_and_stops_at_each_window() {
        let step = KVCache::STEP as usize;
        let budget = KvBudget::with_layers(vec![(10, None), (3, Some(step + 5))], 1 << 20);
        assert_eq!(budget.cost(1), 10 * step as u64 + 3 * step as u64);
        assert_eq!(budget.cost(step), budget.cost(1));
        let long = 10 * step;
        assert_eq!(budget.cost(long), 10 * long as u64 + 3 * (step as u64 + 5));
        let n = budget.longest();
        assert!(budget.cost(n) <= budget.limit() && budget.cost(n + 1) > budget.limit());
    }

    #[test]
    fn a_quantized_cache_costs_its_dense_bytes_until_it_is_quantized() {
        let step = KVCache::STEP as usize;
        let layers = vec![(16, None), (16, Some(2 * step))];
        let budget = KvBudget::new(layers, 1 << 30, true, Some((vec![4, 4], 3 * step)));
        // Dense up to 3 steps: the dense bytes; past them, the larger of the
        // dense prefix and the quantized whole.
        assert_eq!(budget.cost(step), 16 * step as u64 * 2);
        assert_eq!(
            budget.cost(10 * step),
            16 * 3 * step as u64 + 16 * 2 * step as u64
        );
        let long = 100 * step;
        assert_eq!(budget.cost(long), 4 * long as u64 + 16 * 2 * step as u64);
    }
}
