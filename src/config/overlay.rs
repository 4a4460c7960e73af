//! How the sources are layered: the TOML file over the defaults, then
//! `TW_<SECTION>__<KEY>` variables over both, each value parsed as the type its key
//! already has. Errors name the key or the variable, never a value from the file.

use super::{ConfigError, ENV_PREFIX};

/// The parser's message with the line and column of the error. toml's own `Display`
/// quotes the offending line, which may be `url = "amqp://user:password@..."`.
pub(super) fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

/// Merges `overlay` into `base`; keys unknown to `base` are errors naming the key.
pub(super) fn merge(
    base: &mut toml::Table,
    overlay: toml::Table,
    prefix: &str,
) -> Result<(), ConfigError> {
    for (key, value) in overlay {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o, &dotted)?,
            (Some(slot), value) => *slot = value,
            (None, _) => {
                return Err(ConfigError::Shape(format!("unknown key `{dotted}`")));
            }
        }
    }
    Ok(())
}

/// Applies `TW_SECTION__KEY=value`, parsing the value as the type the key already has.
pub(super) fn apply_env(
    table: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    let rest = &var[ENV_PREFIX.len()..];
    let Some((section, key)) = rest.split_once("__") else {
        return Err(err("expected TW_<SECTION>__<KEY>".into()));
    };
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let slot = table
        .get_mut(&section)
        .and_then(|s| s.as_table_mut())
        .and_then(|s| s.get_mut(&key))
        .ok_or_else(|| err(format!("no configuration key `{section}.{key}`")))?;
    let parsed = match slot {
        toml::Value::String(_) => toml::Value::String(value.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(
            value
                .trim()
                .parse()
                .map_err(|_| err(format!("expected an integer, got {value:?}")))?,
        ),
        toml::Value::Float(_) => toml::Value::Float(
            value
                .trim()
                .parse()
                .map_err(|_| err(format!("expected a number, got {value:?}")))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(
            value
                .trim()
                .parse()
                .map_err(|_| err(format!("expected true or false, got {value:?}")))?,
        ),
        // Lists of strings (e.g. `model.pairs`) as comma-separated values.
        toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_owned()))
                .collect(),
        ),
        other => {
            return Err(err(format!(
                "cannot be set from the environment (a {})",
                other.type_str()
            )))
        }
    };
    *slot = parsed;
    Ok(())
}
