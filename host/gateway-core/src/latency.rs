//! Latency histograms: atomics to observe into, snapshots to expose.
//!
//! One [`Histograms`] holds a family (one metric name) of histograms keyed
//! by their label values; label sets are small and bounded (plugins ×
//! outcomes, ops × results). An observation is a map lookup under a lock
//! held for that lookup only, then relaxed atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Bucket upper bounds in seconds: from half a millisecond (a conversion,
/// a loopback round trip) to a minute (an agent's turn).
pub const BUCKETS: [f64; 16] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The most label sets one family keeps (plus the `other` one).
pub const MAX_SERIES: usize = 256;

/// The label value observations past [`MAX_SERIES`] are counted under.
const OVERFLOW: &str = "other";

/// One histogram: a count per bucket (not cumulative; `+Inf` last) and the
/// sum of the observations in microseconds.
#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// A family of histograms: one metric name, label names, and one histogram
/// per set of label values seen.
pub struct Histograms {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// Small and bounded (see the module doc), so a linear search.
    by_values: Mutex<Vec<(Vec<String>, Arc<Histogram>)>>,
}

impl Histograms {
    /// A family `name` with these label names.
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            by_values: Mutex::new(Vec::new()),
        }
    }

    /// Records one observation for these label values (in the order of the
    /// label names).
    ///
    /// Label values can come from the wire (a forward's platform names its
    /// lane when no plugin routes it), so a family keeps at most
    /// [`MAX_SERIES`] label sets; observations past that are counted under
    /// `other` for every label.
    pub fn observe(&self, values: &[&str], elapsed: Duration) {
        let histogram = {
            let mut map = self
                .by_values
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let find = |map: &[(Vec<String>, Arc<Histogram>)], values: &[&str]| {
                map.iter()
                    .find(|(k, _)| k.iter().eq(values.iter().copied()))
                    .map(|(_, h)| Arc::clone(h))
            };
            match find(&map, values) {
                Some(h) => h,
                None => {
                    let overflow = vec![OVERFLOW; values.len()];
                    let full = map.len() >= MAX_SERIES;
                    let values = if full { &overflow[..] } else { values };
                    find(&map, values).unwrap_or_else(|| {
                        let h = Arc::new(Histogram::default());
                        let key = values.iter().map(|v| (*v).to_owned()).collect();
                        map.push((key, Arc::clone(&h)));
                        h
                    })
                }
            }
        };
        histogram.observe(elapsed);
    }

    /// Observations so far for these label values (tests, readiness).
    pub fn count(&self, values: &[&str]) -> u64 {
        let map = self
            .by_values
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .find(|(k, _)| k.iter().eq(values.iter().copied()))
            .map_or(0, |(_, h)| {
                h.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
            })
    }

    /// The family's name (`…_seconds`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What the family measures.
    pub fn help(&self) -> &'static str {
        self.help
    }

    /// The label names, in the order of every series' values.
    pub fn label_names(&self) -> &'static [&'static str] {
        self.labels
    }

    /// A copy of every series at one moment, for an exposition layer.
    pub fn snapshot(&self) -> Vec<Series> {
        let map = self
            .by_values
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(values, h)| {
                let buckets: Vec<(f64, u64)> = h
                    .counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let le = BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
                        (le, c.load(Ordering::Relaxed))
                    })
                    .collect();
                Series {
                    values: values.clone(),
                    count: buckets.iter().map(|(_, n)| n).sum(),
                    sum_seconds: h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
                    buckets,
                }
            })
            .collect()
    }
}

/// One histogram of a family at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The label values, in the order of [`Histograms::label_names`].
    pub values: Vec<String>,
    /// `(upper bound in seconds, observations in that bucket alone)`, not
    /// cumulative; the last bound is `+∞`.
    pub buckets: Vec<(f64, u64)>,
    /// The sum of the observations in seconds.
    pub sum_seconds: f64,
    /// The number of observations.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let h = Histograms::new("t_seconds", "test", &["op"]);
        h.observe(&["send"], Duration::from_micros(300));
        h.observe(&["send"], Duration::from_millis(3));
        h.observe(&["send"], Duration::from_secs(120));
        assert_eq!(h.count(&["send"]), 3);
        assert_eq!(h.count(&["edit"]), 0);
        let series = h.snapshot();
        assert_eq!(series.len(), 1);
        let send = &series[0];
        assert_eq!(send.values, ["send"]);
        assert_eq!(send.count, 3);
        let in_bucket = |le: f64| {
            send.buckets
                .iter()
                .find(|(bound, _)| *bound == le)
                .map(|(_, n)| *n)
        };
        assert_eq!(in_bucket(0.000_5), Some(1), "300 µs is in the first bucket");
        assert_eq!(in_bucket(0.005), Some(1), "3 ms is in the 5 ms bucket");
        assert_eq!(
            in_bucket(f64::INFINITY),
            Some(1),
            "two minutes is past the last"
        );
        assert_eq!(send.buckets.iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert!(
            (send.sum_seconds - 120.0033).abs() < 1e-9,
            "{}",
            send.sum_seconds
        );
    }

    #[test]
    fn label_sets_are_bounded() {
        let h = Histograms::new("t_seconds", "test", &["platform"]);
        for i in 0..MAX_SERIES + 10 {
            h.observe(&[&format!("p{i}")], Duration::from_millis(1));
        }
        assert_eq!(h.count(&["p0"]), 1);
        assert_eq!(h.count(&[&format!("p{}", MAX_SERIES + 5)]), 0);
        assert_eq!(h.count(&["other"]), 10);
        let series = h.by_values.lock().expect("lock").len();
        assert_eq!(series, MAX_SERIES + 1, "the family stops growing");
    }
}
