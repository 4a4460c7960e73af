//! `[limits]`: what a job may carry. The type is the wire contract's
//! ([`Limits`], shared with clients), so its checks live here as a function rather
//! than a method.

use super::{check, ConfigError, Limits};

/// Checks the `[limits]` section; errors name the key (`limits.<key>`).
pub(super) fn validate(limits: &Limits) -> Result<(), ConfigError> {
    check(
        limits.max_texts >= 1,
        "limits.max_texts",
        "must be at least 1",
    )?;
    check(
        limits.max_text_chars >= 1,
        "limits.max_text_chars",
        "must be at least 1",
    )?;
    check(
        limits.max_body_bytes >= 64,
        "limits.max_body_bytes",
        "must be at least 64",
    )
}
