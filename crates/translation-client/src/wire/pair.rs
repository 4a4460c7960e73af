//! Language pairs as the contract spells them: `"<source>-<target>"`, the routing key
//! of a job on the jobs exchange.

/// `("ko", "en")` → `"ko-en"`: the routing key of a pair.
pub fn pair_key(source: &str, target: &str) -> String {
    format!("{source}-{target}")
}

/// `"ko-en"` → `("ko", "en")`: two non-empty codes of at most 16 letters, digits and
/// `_`.
pub fn parse_pair(pair: &str) -> Option<(&str, &str)> {
    let (s, t) = pair.split_once('-')?;
    let code = |c: &str| {
        !c.is_empty()
            && c.len() <= 16
            && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    };
    (code(s) && code(t)).then_some((s, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_bad_ones_are_refused() {
        assert_eq!(parse_pair(&pair_key("ko", "en")), Some(("ko", "en")));
        assert_eq!(
            parse_pair("zho_Hant-eng_Latn"),
            Some(("zho_Hant", "eng_Latn"))
        );
        for bad in ["ko", "-en", "ko-", "ko-en-fr", "k o-en", "ko-en!", ""] {
            assert_eq!(parse_pair(bad), None, "{bad}");
        }
        assert_eq!(parse_pair(&format!("{}-en", "a".repeat(17))), None);
    }
}
