//! Repeated measurement: calibrate a batch size, take several samples, report the median.

use std::time::Duration;

/// Samples of one measurement, in seconds per operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Seconds per operation, one value per run, in the order taken.
    pub seconds: Vec<f64>,
}

impl Samples {
    /// The median (mean of the middle two for an even count).
    ///
    /// # Panics
    ///
    /// If there are no samples.
    #[must_use]
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }

    /// How many runs were taken.
    #[must_use]
    pub fn runs(&self) -> usize {
        self.seconds.len()
    }
}

/// The median of `values`.
///
/// # Panics
///
/// If `values` is empty or holds a NaN.
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// How long each sample runs, and how many samples to take.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// Aim for samples at least this long (batches of quick operations are sized up to it).
    pub target: Duration,
    /// Samples per measurement.
    pub runs: usize,
}

impl Sampler {
    /// Measures `op` (which runs the operation `iters` times and returns the time taken): a
    /// warm-up that also sizes the batch ([`calibrate`](Self::calibrate)), then `runs` samples.
    pub fn measure(&self, mut op: impl FnMut(u64) -> Duration) -> Samples {
        self.measure_runs(self.runs, &mut op)
    }

    /// As [`measure`](Self::measure) with a different number of runs (for slow operations).
    pub fn measure_runs(&self, runs: usize, mut op: impl FnMut(u64) -> Duration) -> Samples {
        let iters = self.calibrate(&mut op);
        let seconds = (0..runs.max(1))
            .map(|_| op(iters).as_secs_f64() / iters as f64)
            .collect();
        Samples { seconds }
    }

    /// Runs `op` on growing batches (a warm-up) until one lasts a quarter of the target, and
    /// returns how many operations make one sample. Sizing from a single call would let one
    /// slow first call (a worker starting, a page fault) shrink every sample to a few
    /// operations, at the mercy of any hiccup.
    pub fn calibrate(&self, mut op: impl FnMut(u64) -> Duration) -> u64 {
        let target = self.target.as_secs_f64();
        let mut iters: u64 = 1;
        loop {
            let took = op(iters).as_secs_f64().max(1e-9);
            if took >= target / 4.0 || iters >= 1 << 30 {
                return ((iters as f64) * target / took).clamp(1.0, 1e9) as u64;
            }
            iters = iters.saturating_mul(4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn sampler_takes_the_runs_asked_for() {
        let sampler = Sampler {
            target: Duration::from_micros(50),
            runs: 3,
        };
        let s = sampler.measure(|iters| Duration::from_nanos(10 * iters));
        assert_eq!(s.runs(), 3);
        assert!((s.median() - 10e-9).abs() < 1e-12);
    }
}
