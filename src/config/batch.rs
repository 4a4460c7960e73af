//! `[batch]`: the dynamic batching policy.

use serde::{Deserialize, Serialize};

use super::{check, ConfigError};

/// Dynamic batching policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// A batch is cut when it holds this many distinct texts.
    pub max_batch_size: usize,
    /// Fewest texts per batch when more are in flight: the size adapts to the load
    /// (the larger of in-flight texts ÷ (2 × replicas) and queued texts ÷ replicas,
    /// between this and `max_batch_size`), so that as many texts wait to be sorted by
    /// length as run, and a held backlog drains in full batches. Equal to
    /// `max_batch_size`: a fixed size.
    pub min_batch_size: usize,
    /// ... or when its padded size (texts × longest source in tokens) would pass this.
    pub max_batch_tokens: usize,
    /// ... or when its oldest text has waited this long (ms) for a busy engine to free
    /// a replica. An idle engine never waits.
    pub max_wait_ms: u64,
    /// Longest (ms) a text may be passed over for batches of texts closer in length to
    /// each other; after that the next batch holds it. 0: every batch holds the oldest
    /// text.
    pub max_delay_ms: u64,
    /// Most distinct texts the batcher holds and sorts by length to choose batches
    /// from (its window), per lane; jobs wait to enter beyond it.
    pub max_queued: usize,
    /// Longest (ms) a burst of bulk texts is waited out while a replica is busy: no
    /// bulk batch is cut while texts keep arriving (each within `settle_gap_ms` of the
    /// last) and the window has room, so a backlog's first batches are sorted from the
    /// whole burst. Never past `max_delay_ms`; 0: off.
    pub max_settle_ms: u64,
    /// The pause (ms) in bulk arrivals that ends a burst (`max_settle_ms`); also how
    /// long a replica that has just freed waits, while another is busy, for the texts
    /// its answers bring back before cutting a bulk batch that is not full.
    pub settle_gap_ms: u64,
    /// Most batches in a row led by interactive texts while bulk texts wait: the next
    /// one is then cut from the bulk texts, so bulk work keeps at least one batch in
    /// `interactive_burst + 1` under any interactive load (its starvation bound).
    pub interactive_burst: usize,
    /// Most padded tokens in any batch that holds an interactive text (their run topped
    /// up with bulk texts, or a bulk batch they ride along), at most
    /// `max_batch_tokens`: a person's text waits for a replica, then runs in a batch
    /// this short rather than a full bulk one.
    pub interactive_max_batch_tokens: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 64,
            min_batch_size: 32,
            max_batch_tokens: 8192,
            max_wait_ms: 5,
            max_delay_ms: 2000,
            max_queued: 1024,
            max_settle_ms: 100,
            // Several scheduler slices: a backlog's jobs reach the batcher with pauses
            // of a few milliseconds while a replica computes (docs/benchmarks-history.md).
            settle_gap_ms: 25,
            interactive_burst: 4,
            // A quarter of max_batch_tokens: the engine curve's sorted batches of
            // 2,048 padded tokens ran 0.96 of its best (docs/benchmarks.md).
            interactive_max_batch_tokens: 2048,
        }
    }
}

impl BatchConfig {
    /// Checks this section on its own; errors name the key (`batch.<key>`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.max_batch_size >= 1,
            "batch.max_batch_size",
            "must be at least 1",
        )?;
        check(
            self.max_batch_tokens >= 1,
            "batch.max_batch_tokens",
            "must be at least 1",
        )?;
        check(
            (1..=self.max_batch_size).contains(&self.min_batch_size),
            "batch.min_batch_size",
            "must be between 1 and batch.max_batch_size",
        )?;
        check(
            self.interactive_burst >= 1,
            "batch.interactive_burst",
            "must be at least 1",
        )?;
        check(
            (1..=self.max_batch_tokens).contains(&self.interactive_max_batch_tokens),
            "batch.interactive_max_batch_tokens",
            "must be between 1 and batch.max_batch_tokens",
        )?;
        check(
            self.max_queued >= self.max_batch_size,
            "batch.max_queued",
            "must be at least batch.max_batch_size (the window a batch is chosen from)",
        )
    }
}
