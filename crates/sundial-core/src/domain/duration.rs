//! Durations on the wire are humantime strings (`"250ms"`, `"30s"`, `"1h 30m"`).

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Formats a duration the way API.md writes them (`"30s"`, `"1h 30m"`).
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Parses a humantime duration string; the error is a sentence fit for an API message.
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. \"250ms\", \"30s\", \"1h 30m\""))
}

/// `#[serde(with = "duration::required")]` for `Duration` fields.
pub mod required {
    use super::*;
    /// Serializes as a humantime string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }
    /// Deserializes from a humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "duration::optional")]` for `Option<Duration>` fields.
pub mod optional {
    use super::*;
    /// Serializes as a humantime string or `null`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_none(),
        }
    }
    /// Deserializes from a humantime string or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| parse(&s).map_err(serde::de::Error::custom)).transpose()
    }
}
