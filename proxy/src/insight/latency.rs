//! A latency histogram read back from the exposition: cumulative counts by upper bound, the
//! way Prometheus stores them, and the quantiles `histogram_quantile` would compute from them.

/// Cumulative counts by upper bound in seconds (`le`, `+Inf` last), sorted by bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency(Vec<(f64, u64)>);

impl Latency {
    /// A histogram from `(upper bound, cumulative count)` pairs in any order.
    pub fn from_buckets(buckets: impl IntoIterator<Item = (f64, u64)>) -> Self {
        let mut this = Self::default();
        for (le, count) in buckets {
            this.add(le, count);
        }
        this
    }

    /// Adds `count` to the bucket bounded by `le` (series of one route under several cache
    /// results add up to the route's histogram).
    pub fn add(&mut self, le: f64, count: u64) {
        match self.0.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, total)) => *total += count,
            None => {
                let at = self.0.partition_point(|(bound, _)| *bound < le);
                self.0.insert(at, (le, count));
            }
        }
    }

    /// Adds every bucket of `other`, which must have the same bounds (histograms of one
    /// registry do).
    pub fn merge(&mut self, other: &Self) {
        for &(le, count) in &other.0 {
            self.add(le, count);
        }
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.0.last().map_or(0, |(_, count)| *count)
    }

    /// The observations made after `earlier` was read (counter resets count from zero).
    pub fn since(&self, earlier: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|&(le, count)| {
                    let before = earlier.0.iter().find(|(b, _)| *b == le).map_or(0, |(_, c)| *c);
                    (le, count.saturating_sub(before))
                })
                .collect(),
        )
    }

    /// The `q` quantile in seconds (0 < q < 1), interpolated inside its bucket; `None` without
    /// observations. A quantile in the `+Inf` bucket is reported as the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for &(le, count) in &self.0 {
            if count as f64 >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = (count - lower.1) as f64;
                if in_bucket == 0.0 {
                    return Some(le);
                }
                return Some(lower.0 + (le - lower.0) * (rank - lower.1 as f64) / in_bucket);
            }
            lower = (le, count);
        }
        Some(lower.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 100 observations: 50 up to 10 ms, 40 more up to 50 ms, 10 more up to 100 ms.
        let latency = Latency::from_buckets([(0.01, 50), (0.05, 90), (0.1, 100), (f64::INFINITY, 100)]);

        assert_eq!(latency.quantile(0.5), Some(0.01));
        let p95 = latency.quantile(0.95).unwrap();
        assert!((p95 - 0.075).abs() < 1e-9, "{p95}");
        assert_eq!(latency.count(), 100);
    }

    #[test]
    fn a_quantile_past_the_last_bound_is_that_bound() {
        let latency = Latency::from_buckets([(0.1, 1), (f64::INFINITY, 10)]);
        assert_eq!(latency.quantile(0.99), Some(0.1));
        assert_eq!(Latency::default().quantile(0.5), None);
    }

    #[test]
    fn since_subtracts_bucket_by_bucket() {
        let before = Latency::from_buckets([(0.1, 5), (f64::INFINITY, 6)]);
        let mut now = Latency::from_buckets([(0.1, 7), (f64::INFINITY, 10)]);
        now.add(0.1, 1);

        assert_eq!(now.since(&before), Latency::from_buckets([(0.1, 3), (f64::INFINITY, 4)]));
    }
}
