//! Reconnect delays shared by every long-lived connection of the project (the worker's
//! broker session, the gateway's client link): exponential from `initial` to `max`,
//! with "equal jitter" so that processes which lost the broker together do not come
//! back in lockstep.
//!
//! The exponential sequence is `backon`'s. Its own jitter adds up to 100 % on top of
//! each delay, so `max` would not be a cap; here each delay is drawn from
//! `[d/2, d]` instead (with `fastrand`, which `backon` already brings), and
//! `amqp.reconnect_max_ms` stays the longest wait.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays between reconnect attempts: doubling from `initial` to `max`, each jittered
/// into `[d/2, d]`; [`Backoff::reset`] after a connection that worked.
#[derive(Debug)]
pub struct Backoff {
    max: Duration,
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
}

impl Backoff {
    /// A sequence starting at `initial` and doubling up to `max` (`max` below
    /// `initial` is taken as `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        let builder = ExponentialBuilder::new()
            .with_min_delay(initial)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        Self {
            max,
            builder,
            delays: builder.build(),
        }
    }

    /// The next delay to wait before reconnecting.
    pub fn next_delay(&mut self) -> Duration {
        // Without a cap on attempts the sequence never ends; the fallback is the cap.
        jittered(self.delays.next().unwrap_or(self.max))
    }

    /// Starts again from `initial` (after a connection that came up).
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

/// A delay in `[d/2, d]`.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_jittered_into_the_upper_half() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        for nominal in [100, 200, 400, 800, 1000, 1000, 1000] {
            let d = b.next_delay();
            assert!(
                d >= ms(nominal / 2) && d <= ms(nominal),
                "{d:?} for {nominal}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        // Not all the same: jitter is applied.
        let mut b = Backoff::new(ms(1000), ms(1000));
        let draws: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(draws.len() > 1);
    }
}
