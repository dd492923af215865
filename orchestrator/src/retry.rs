//! Retry policies as data: given how many attempts failed, the delay before
//! the next one, or none when the step is out of attempts. The engine turns
//! the delay into a durable deadline; nothing ever sleeps on a policy.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Each retry waits this many times longer than the one before.
    pub multiplier: u32,
    /// Up to this percentage of the delay is added as jitter.
    pub jitter_percent: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 3, initial_backoff_ms: 1_000, max_backoff_ms: 60_000, multiplier: 2, jitter_percent: 20 }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..Self::default() }
    }

    /// The delay before the next attempt after `failures` failed attempts, or
    /// `None` when no attempt is left. `seed` makes the jitter deterministic.
    pub fn delay_ms(&self, failures: u32, seed: u64) -> Option<u64> {
        if failures >= self.max_attempts.max(1) {
            return None;
        }
        let exponent = failures.saturating_sub(1).min(32);
        let base = self
            .initial_backoff_ms
            .saturating_mul(u64::from(self.multiplier.max(1)).saturating_pow(exponent))
            .min(self.max_backoff_ms.max(self.initial_backoff_ms));
        let jitter_span = base.saturating_mul(u64::from(self.jitter_percent.min(100))) / 100;
        let jitter = if jitter_span == 0 { 0 } else { splitmix(seed) % (jitter_span + 1) };
        Some(base.saturating_add(jitter))
    }
}

/// A cheap deterministic mix of a seed (splitmix64).
pub(crate) fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_runs_out() {
        let p = RetryPolicy { max_attempts: 5, initial_backoff_ms: 100, max_backoff_ms: 300, multiplier: 2, jitter_percent: 0 };
        assert_eq!(p.delay_ms(1, 0), Some(100));
        assert_eq!(p.delay_ms(2, 0), Some(200));
        assert_eq!(p.delay_ms(3, 0), Some(300));
        assert_eq!(p.delay_ms(4, 0), Some(300));
        assert_eq!(p.delay_ms(5, 0), None);
        assert_eq!(RetryPolicy::none().delay_ms(1, 0), None);
    }

    #[test]
    fn jitter_stays_within_its_share_and_is_deterministic() {
        let p = RetryPolicy { max_attempts: 9, initial_backoff_ms: 1000, max_backoff_ms: 1000, multiplier: 2, jitter_percent: 20 };
        for seed in 0..200 {
            let d = p.delay_ms(1, seed).unwrap();
            assert!((1000..=1200).contains(&d), "{d}");
            assert_eq!(Some(d), p.delay_ms(1, seed));
        }
        let distinct: std::collections::HashSet<u64> = (0..50).map(|s| p.delay_ms(1, s).unwrap()).collect();
        assert!(distinct.len() > 10, "jitter should spread delays");
    }
}
