//! Validation errors name the offending field by its full path (`triggers[1].expr: …`).

use std::fmt;

/// A value that parsed as JSON but is not acceptable; maps to HTTP 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Full path of the field, e.g. `triggers[1].timezone`; empty for the whole body.
    pub path: String,
    /// What is wrong with it, as a sentence fragment.
    pub message: String,
}

impl FieldError {
    /// An error about the field at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }

    /// Prefixes the path, so nested validators can report relative paths.
    pub fn within(mut self, prefix: &str) -> Self {
        self.path = if self.path.is_empty() {
            prefix.to_string()
        } else if self.path.starts_with('[') {
            format!("{prefix}{}", self.path)
        } else {
            format!("{prefix}.{}", self.path)
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// Checks that `t` lies in years 0001–9999 in UTC: RFC 3339 cannot write other years, so a
/// time outside them could be stored but never echoed back as valid RFC 3339.
pub fn check_time_range(path: &str, t: &chrono::DateTime<chrono::Utc>) -> Result<(), FieldError> {
    use chrono::Datelike;
    if (1..=9999).contains(&t.year()) {
        Ok(())
    } else {
        Err(FieldError::new(path, "is outside years 0001-9999 in UTC"))
    }
}
