//! Small measurement helpers: a log-linear histogram for latencies (constant memory,
//! ~3 % relative error, mergeable across threads) and exact percentiles of short lists.

/// Sub-buckets per power of two.
const SUB: u64 = 64;
/// Powers of two covered (values up to 2^40).
const POW: usize = 40;

/// Histogram of non-negative integer values (we record microseconds).
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; POW * SUB as usize],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let p = 63 - v.leading_zeros() as u64; // v in [2^p, 2^(p+1))
    // v >> (p - 5) is in [32, 64): 32 sub-buckets per octave, ~3 % wide.
    let i = (p - 5) * SUB + (v >> (p - 5));
    (i as usize).min(POW * SUB as usize - 1)
}

fn lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let p = i / SUB + 5;
    let sub = i % SUB;
    sub << (p - 5)
}

impl Histogram {
    /// Record one value.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Add another histogram's values.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
    }

    /// The value at quantile `q` (0..=1), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(lower_bound(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// Exact percentile of a list (nearest rank), `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.95, 95_000.0), (0.99, 99_000.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - want).abs() / want < 0.04, "q{q}: {got} vs {want}");
        }
        let top = h.quantile(1.0).unwrap();
        assert!((97_000..=100_000).contains(&top), "max bucket {top}");
        let mut small = Histogram::default();
        small.record(3);
        assert_eq!(small.quantile(0.5), Some(3));
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut m = Histogram::default();
        m.merge(&h);
        m.merge(&small);
        assert_eq!(m.count(), 100_001);
    }

    #[test]
    fn index_is_monotonic() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(97) {
            let i = index(v);
            assert!(i >= last);
            assert!(lower_bound(i) <= v, "{v}: lower bound {}", lower_bound(i));
            last = i;
        }
    }

    #[test]
    fn exact_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
