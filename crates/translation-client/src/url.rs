//! URLs in logs and errors: lists of URLs, and their passwords hidden.

/// Splits a comma-separated list of URLs. A comma separates only where the next entry
/// starts with `scheme://` (or nothing follows), so a comma inside one URL (e.g. in a
/// password) does not split it.
pub fn split_url_list(list: &str) -> Vec<&str> {
    fn starts_with_scheme(t: &str) -> bool {
        t.find("://").is_some_and(|p| {
            p > 0
                && t[..p].starts_with(|c: char| c.is_ascii_alphabetic())
                && t[..p]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in list.match_indices(',') {
        let rest = list[i + 1..].trim_start();
        if rest.is_empty() || starts_with_scheme(rest) {
            out.push(list[start..i].trim());
            start = i + 1;
        }
    }
    out.push(list[start..].trim());
    out.retain(|u| !u.is_empty());
    out
}

/// The URLs of a comma-separated list (see [`split_url_list`]) in random order: a
/// client of a multi-node broker tries them in this order, so that clients spread over
/// the nodes and none keeps retrying one dead node first.
pub fn shuffled_urls(list: &str) -> Vec<&str> {
    let mut urls = split_url_list(list);
    fastrand::shuffle(&mut urls);
    urls
}

/// Hides the password of a URL (`scheme://user:***@host/...`) for logs and errors. A
/// comma-separated list (Redis Cluster seeds) has each of its URLs redacted.
pub fn redact_url(url: &str) -> String {
    let urls = split_url_list(url);
    if urls.len() > 1 {
        return urls
            .iter()
            .map(|u| redact_one_url(u))
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one_url(url)
}

fn redact_one_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after = scheme_end + 3;
    let authority_end = url[after..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after + i);
    let authority = &url[after..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // A lone userinfo (`redis://token@host`) is the secret itself.
                "***".to_string()
            };
            format!(
                "{}{}@{}{}",
                &url[..after],
                masked,
                &authority[at + 1..],
                &url[authority_end..]
            )
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://:p%40ss@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(redact_url("redis://tok@h"), "redis://***@h");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert!(!redact_url("amqps://u:pw@h/v?x=@").contains("pw"));
    }

    #[test]
    fn url_lists_are_split_at_schemes_and_redacted_each() {
        assert_eq!(
            split_url_list("redis://a:1,redis://b:2 , rediss://c:3,"),
            vec!["redis://a:1", "redis://b:2", "rediss://c:3"]
        );
        // A comma inside a password does not split the URL.
        assert_eq!(split_url_list("redis://:p,w@h:1"), vec!["redis://:p,w@h:1"]);
        assert_eq!(split_url_list(" , "), Vec::<&str>::new());
        assert_eq!(
            redact_url("redis://:s1@h1:7000,redis://u:s2@h2:7001,redis://h3:7002"),
            "redis://:***@h1:7000,redis://u:***@h2:7001,redis://h3:7002"
        );
        assert_eq!(redact_url("redis://:p,w@h:1"), "redis://:***@h:1");
    }

    #[test]
    fn shuffled_urls_keep_every_url_once() {
        let list = "amqp://a:1,amqp://b:2,amqp://c:3";
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut urls = shuffled_urls(list);
            seen.insert(urls.clone());
            urls.sort_unstable();
            assert_eq!(urls, ["amqp://a:1", "amqp://b:2", "amqp://c:3"]);
        }
        assert!(seen.len() > 1, "the order varies");
        assert_eq!(shuffled_urls("amqp://only"), ["amqp://only"]);
    }
}
