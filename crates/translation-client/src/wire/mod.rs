//! Wire contract v1, defined once: the job a client publishes, the reply a worker
//! publishes back, their error codes and the language-pair routing key. Every type
//! here both serialises and parses; jobs are parsed strictly (unknown keys refused,
//! limits enforced), replies leniently (unknown keys ignored).

mod error;
mod job;
mod options;
mod pair;
mod reply;

pub use error::{ErrorBody, ErrorCode, JobError, UnknownErrorCode};
pub use job::{parse_job, Format, Job, Limits, Split};
pub use options::{
    DecodeOptions, JobOptions, ALTERNATIVES, BEAM_SIZE, MAX_DECODING_LENGTH, NO_REPEAT_NGRAM_SIZE,
};
pub use pair::{pair_key, parse_pair};
pub use reply::{Reply, SegmentStats};

/// Now, in the clock `deadline_ms` is given in: Unix milliseconds.
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
