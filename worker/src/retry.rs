//! Retry delays: the email retry schedule and the queue-socket reconnect policy.
//!
//! This is the ONE module that uses the `backoff` crate. `backoff` is unmaintained
//! (RUSTSEC-2025-0012); it is kept by the user's choice because it works and is small. No other
//! module imports it: everything else goes through [`delay_for_attempt`] and [`Backoff`], so
//! swapping it for another crate (or twenty lines of our own) means editing only this file.
//!
//! Both policies are exponential with jitter: each delay is the nominal one (doubling from the
//! initial value, capped at the maximum) moved randomly by up to ±[`RANDOMIZATION_FACTOR`], and
//! never above the maximum, so many workers failing at once do not retry in lockstep.

use backoff::backoff::Backoff as _;
use std::time::Duration;

/// How far a delay may stray from its nominal value: 0.2 means ±20 %.
pub const RANDOMIZATION_FACTOR: f64 = 0.2;

/// The first email retry waits about this long; each further attempt doubles it.
pub const EMAIL_INITIAL_DELAY: Duration = Duration::from_secs(1);

/// The queue-socket reconnect policy: first wait, and longest wait.
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The delay before retry number `attempt` (1-based: the wait after the first failure is
/// attempt 1) of a transient email failure: about 1 s, 2 s, 4 s, ... capped at `max`, with ±20 %
/// jitter, and never more than `max`. Attempt 0 is treated as 1.
///
/// Stateless on purpose: the caller persists only the attempt count, so a restarted worker
/// resumes the schedule where it was.
pub fn delay_for_attempt(attempt: u32, max: Duration) -> Duration {
    let nominal = nominal_delay(EMAIL_INITIAL_DELAY, attempt, max);
    let mut b = exponential(EMAIL_INITIAL_DELAY, max);
    b.current_interval = nominal;
    jittered(b.next_backoff(), nominal, max)
}

/// `initial * 2^(attempt-1)`, capped at `max` (overflow means "the cap").
fn nominal_delay(initial: Duration, attempt: u32, max: Duration) -> Duration {
    2u32.checked_pow(attempt.saturating_sub(1))
        .and_then(|f| initial.checked_mul(f))
        .map_or(max, |d| d.min(max))
}

/// A `backoff` policy doubling from `initial` to `max`, with jitter and no overall deadline.
fn exponential(initial: Duration, max: Duration) -> backoff::ExponentialBackoff {
    let mut b = backoff::ExponentialBackoff {
        current_interval: initial.min(max),
        initial_interval: initial.min(max),
        randomization_factor: RANDOMIZATION_FACTOR,
        multiplier: 2.0,
        max_interval: max,
        max_elapsed_time: None,
        ..backoff::ExponentialBackoff::default()
    };
    b.reset();
    b
}

/// The jittered value `backoff` produced, held inside `nominal ± factor` and at most `max`
/// (`backoff` can overshoot its range by a nanosecond and happily jitters above the cap).
fn jittered(value: Option<Duration>, nominal: Duration, max: Duration) -> Duration {
    let lo = nominal.mul_f64(1.0 - RANDOMIZATION_FACTOR);
    let hi = nominal.mul_f64(1.0 + RANDOMIZATION_FACTOR).min(max);
    value.unwrap_or(nominal).clamp(lo.min(hi), hi)
}

/// A stateful exponential backoff with jitter, for loops that retry in place (reconnecting to
/// the queue socket): call [`Backoff::next_delay`] after each failure and [`Backoff::reset`]
/// after a success. It never gives up; the caller decides when to stop.
#[derive(Debug)]
pub struct Backoff {
    inner: backoff::ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Doubling from `initial` up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            inner: exponential(initial, max),
            max,
        }
    }

    /// The worker's queue-socket reconnect policy: 100 ms doubling to 5 s, no deadline.
    pub fn reconnect() -> Backoff {
        Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX)
    }

    /// How long to wait before the next try; each call roughly doubles it up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.inner.current_interval;
        jittered(self.inner.next_backoff(), nominal, self.max)
    }

    /// Back to the initial delay (after a successful connection).
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(d: Duration, nominal: Duration, max: Duration) -> bool {
        let lo = nominal.mul_f64(1.0 - RANDOMIZATION_FACTOR);
        let hi = nominal.mul_f64(1.0 + RANDOMIZATION_FACTOR).min(max);
        d >= lo && d <= hi
    }

    #[test]
    fn email_delays_grow_from_one_second_and_cap() {
        let max = Duration::from_secs(60);
        for _ in 0..100 {
            for (attempt, secs) in [
                (0u32, 1u64),
                (1, 1),
                (2, 2),
                (3, 4),
                (4, 8),
                (5, 16),
                (6, 32),
            ] {
                let d = delay_for_attempt(attempt, max);
                let nominal = Duration::from_secs(secs);
                assert!(
                    within(d, nominal, max),
                    "attempt {attempt}: {d:?} not within 20% of {nominal:?}"
                );
            }
            for attempt in [7u32, 8, 20, 31, 32, 33, 64, 1000, u32::MAX] {
                let d = delay_for_attempt(attempt, max);
                assert!(d <= max, "attempt {attempt}: {d:?} above the cap");
                assert!(
                    d >= max.mul_f64(0.8),
                    "attempt {attempt}: {d:?} far below the cap"
                );
            }
        }
    }

    #[test]
    fn email_delays_never_exceed_small_caps() {
        for _ in 0..100 {
            assert!(delay_for_attempt(1, Duration::from_millis(500)) <= Duration::from_millis(500));
            assert_eq!(delay_for_attempt(5, Duration::ZERO), Duration::ZERO);
            let d = delay_for_attempt(3, Duration::from_secs(3));
            assert!(
                d >= Duration::from_millis(2400) && d <= Duration::from_secs(3),
                "{d:?}"
            );
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let max = Duration::from_secs(3600);
        let seen: std::collections::HashSet<Duration> =
            (0..100).map(|_| delay_for_attempt(4, max)).collect();
        assert!(
            seen.len() > 10,
            "jitter produced only {} distinct values",
            seen.len()
        );
    }

    #[test]
    fn reconnect_backoff_grows_caps_and_resets() {
        for _ in 0..100 {
            let mut b = Backoff::reconnect();
            let mut nominal = RECONNECT_INITIAL;
            for i in 0..12 {
                let d = b.next_delay();
                assert!(
                    within(d, nominal, RECONNECT_MAX),
                    "step {i}: {d:?} vs nominal {nominal:?}"
                );
                nominal = (nominal * 2).min(RECONNECT_MAX);
            }
            assert_eq!(nominal, RECONNECT_MAX);
            b.reset();
            let d = b.next_delay();
            assert!(
                within(d, RECONNECT_INITIAL, RECONNECT_MAX),
                "after reset: {d:?}"
            );
        }
    }
}
