//! Flow control: limit keys, limits (a concurrency bound, a rate bound, or both) and which limit
//! governs a concrete key.
//!
//! A job names up to [`MAX_KEYS_PER_JOB`] concrete keys (`tenant:42`, `smtp`); its runs keep them.
//! A limit is stored under a concrete key or a pattern (`tenant:*`, or a bare `*`). A pattern
//! applies **separately** to each concrete key it matches that has no limit of its own; among
//! patterns the longest wins. See API.md, "Flow control: limits per key".

use super::{duration, FieldError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A job names at most this many keys.
pub const MAX_KEYS_PER_JOB: usize = 8;
/// A key (without a pattern's `*`) has at most this many characters.
pub const MAX_KEY_LEN: usize = 200;

fn key_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')
}

/// Checks a concrete key: 1–200 characters of `A-Z a-z 0-9 . _ : / -`. The error is a message
/// for the caller to put under its field path.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.chars().count() > MAX_KEY_LEN {
        return Err(format!("is longer than {MAX_KEY_LEN} characters"));
    }
    if let Some(c) = key.chars().find(|c| !key_char_ok(*c)) {
        return Err(format!("{c:?} is not allowed in a limit key; use A-Z a-z 0-9 . _ : / -"));
    }
    Ok(())
}

/// Validates a job's `limits`: at most 8 concrete keys, no duplicates. Paths are `limits[i]`.
pub fn check_job_keys(keys: &[String]) -> Result<(), FieldError> {
    if keys.len() > MAX_KEYS_PER_JOB {
        return Err(FieldError::new("limits", format!("at most {MAX_KEYS_PER_JOB} keys, got {}", keys.len())));
    }
    for (i, k) in keys.iter().enumerate() {
        let path = format!("limits[{i}]");
        if k.contains('*') {
            return Err(FieldError::new(path, "a job's key is concrete: '*' is only for limit patterns"));
        }
        check_key(k).map_err(|m| FieldError::new(&path, m))?;
        if keys[..i].contains(k) {
            return Err(FieldError::new(path, format!("duplicate key {k:?}")));
        }
    }
    Ok(())
}

/// What a limit is stored under: one concrete key, or a pattern matching every key that starts
/// with its prefix (`tenant:*` → prefix `tenant:`; `*` → every key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A concrete key.
    Exact(String),
    /// A pattern, held as the part before its trailing `*`.
    Pattern(String),
}

impl LimitKey {
    /// Parses a limit key as it appears in `/v1/limits/{key}`: a concrete key, or a key followed
    /// by one `*` at the end, or a bare `*`. A `*` anywhere else is an error.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let (body, pattern) = match s.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(FieldError::new("key", "'*' is allowed only once, at the end of a pattern"));
        }
        if pattern {
            if !body.is_empty() {
                check_key(body).map_err(|m| FieldError::new("key", m))?;
            }
            Ok(LimitKey::Pattern(body.to_string()))
        } else {
            check_key(body).map_err(|m| FieldError::new("key", m))?;
            Ok(LimitKey::Exact(body.to_string()))
        }
    }

    /// The key as written (`tenant:*` for a pattern).
    pub fn as_string(&self) -> String {
        match self {
            LimitKey::Exact(k) => k.clone(),
            LimitKey::Pattern(p) => format!("{p}*"),
        }
    }

    /// True for a pattern.
    pub fn is_pattern(&self) -> bool {
        matches!(self, LimitKey::Pattern(_))
    }

    /// Whether this limit key names `key` (exactly, or as a pattern's prefix).
    pub fn matches(&self, key: &str) -> bool {
        match self {
            LimitKey::Exact(k) => k == key,
            LimitKey::Pattern(p) => key.starts_with(p.as_str()),
        }
    }
}

/// A rate bound: fewer than `count` starts in any window `[t, t + per)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Starts allowed per window.
    pub count: u32,
    /// Window length (`"1m"`, `"10s"`).
    #[serde(with = "duration::required")]
    #[schema(value_type = String)]
    pub per: Duration,
}

/// A limit's bounds; at least one is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitBounds {
    /// At most this many runs naming the key are `running` at once.
    pub max_running: Option<u32>,
    /// At most `count` starts of runs naming the key per `per`.
    pub rate: Option<Rate>,
}

/// `PUT /v1/limits/{key}` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// Concurrency bound; null = none.
    #[serde(default)]
    pub max_running: Option<u32>,
    /// Rate bound; null = none.
    #[serde(default)]
    pub rate: Option<Rate>,
}

impl LimitBounds {
    /// Validates a request: at least one bound, each at least 1 (a zero bound would hold every
    /// run for good; pause the job instead), `per` longer than zero.
    pub fn from_request(r: &LimitRequest) -> Result<Self, FieldError> {
        if r.max_running.is_none() && r.rate.is_none() {
            return Err(FieldError::new("", "a limit needs max_running, rate, or both (they cannot both be null)"));
        }
        if r.max_running == Some(0) {
            return Err(FieldError::new("max_running", "must be at least 1"));
        }
        if let Some(rate) = r.rate {
            if rate.count == 0 {
                return Err(FieldError::new("rate.count", "must be at least 1"));
            }
            if rate.per.is_zero() {
                return Err(FieldError::new("rate.per", "must be longer than zero"));
            }
        }
        Ok(LimitBounds { max_running: r.max_running, rate: r.rate })
    }
}

/// A stored limit definition.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitDef {
    /// Its key or pattern.
    pub key: LimitKey,
    /// Its bounds.
    pub bounds: LimitBounds,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The limit that governs the concrete `key`: its own limit if it has one, else the longest
/// matching pattern, else none.
pub fn governing<'a>(limits: &'a [LimitDef], key: &str) -> Option<&'a LimitDef> {
    let mut best: Option<&LimitDef> = None;
    for l in limits {
        match &l.key {
            LimitKey::Exact(k) if k == key => return Some(l),
            LimitKey::Pattern(p) if key.starts_with(p.as_str()) => {
                let longer = match best.map(|b| &b.key) {
                    Some(LimitKey::Pattern(bp)) => p.len() > bp.len(),
                    _ => true,
                };
                if longer {
                    best = Some(l);
                }
            }
            _ => {}
        }
    }
    best
}

/// A limit as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Limit {
    /// The key asked for: the limit's own key or pattern, or a concrete key a pattern governs.
    pub key: String,
    /// The governing pattern when `key` is a concrete key without a limit of its own; else null.
    pub pattern: Option<String>,
    /// Concurrency bound; null = none.
    pub max_running: Option<u32>,
    /// Rate bound; null = none.
    pub rate: Option<Rate>,
    /// Runs naming `key` that are `running` now; null on a pattern itself.
    pub running: Option<u64>,
    /// Creation time of the governing limit.
    pub created_at: DateTime<Utc>,
    /// Last change of the governing limit.
    pub updated_at: DateTime<Utc>,
}

impl Limit {
    /// The answer for `key` governed by `def` (`key` is `def`'s own key unless a pattern
    /// governs a concrete key), with `running` counted for a concrete key.
    pub fn view(key: &str, def: &LimitDef, running: Option<u64>) -> Self {
        let own = def.key.as_string();
        Limit {
            pattern: (own != key).then_some(own),
            key: key.to_string(),
            max_running: def.bounds.max_running,
            rate: def.bounds.rate,
            running: if def.key.is_pattern() && def.key.as_string() == key { None } else { running },
            created_at: def.created_at,
            updated_at: def.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(key: &str, max: u32) -> LimitDef {
        LimitDef {
            key: LimitKey::parse(key).unwrap(),
            bounds: LimitBounds { max_running: Some(max), rate: None },
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn keys_take_the_allowed_characters_up_to_200() {
        assert!(check_key("tenant:42/eu-west_1.a").is_ok());
        assert!(check_key(&"a".repeat(200)).is_ok());
        assert!(check_key(&"a".repeat(201)).unwrap_err().contains("200"));
        assert!(check_key("").is_err());
        assert!(check_key("a b").unwrap_err().contains("' '"));
        assert!(check_key("é").is_err());
    }

    #[test]
    fn job_keys_are_concrete_unique_and_at_most_eight() {
        let keys = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_job_keys(&keys(&["a", "b"])).is_ok());
        assert_eq!(check_job_keys(&keys(&["a", "t:*"])).unwrap_err().path, "limits[1]");
        assert_eq!(check_job_keys(&keys(&["a", "a"])).unwrap_err().path, "limits[1]");
        assert_eq!(check_job_keys(&keys(&["ok", "bad key"])).unwrap_err().path, "limits[1]");
        let nine: Vec<String> = (0..9).map(|i| format!("k{i}")).collect();
        assert_eq!(check_job_keys(&nine).unwrap_err().path, "limits");
        assert!(check_job_keys(&nine[..8]).is_ok());
    }

    #[test]
    fn patterns_have_one_trailing_star() {
        assert_eq!(LimitKey::parse("tenant:*").unwrap(), LimitKey::Pattern("tenant:".into()));
        assert_eq!(LimitKey::parse("*").unwrap(), LimitKey::Pattern(String::new()));
        assert_eq!(LimitKey::parse("smtp").unwrap(), LimitKey::Exact("smtp".into()));
        for bad in ["ten*ant", "**", "*a", "a**", "", "a b*"] {
            let e = LimitKey::parse(bad).unwrap_err();
            assert_eq!(e.path, "key", "{bad}");
        }
        assert_eq!(LimitKey::parse("tenant:*").unwrap().as_string(), "tenant:*");
    }

    #[test]
    fn bounds_need_at_least_one_kind() {
        let r: LimitRequest = serde_json::from_str("{}").unwrap();
        assert!(LimitBounds::from_request(&r).is_err());
        let r: LimitRequest = serde_json::from_str(r#"{"max_running": null, "rate": null}"#).unwrap();
        assert!(LimitBounds::from_request(&r).is_err());
        let r: LimitRequest = serde_json::from_str(r#"{"rate": {"count": 100, "per": "1m"}}"#).unwrap();
        let b = LimitBounds::from_request(&r).unwrap();
        assert_eq!(b.rate, Some(Rate { count: 100, per: Duration::from_secs(60) }));
        assert_eq!(b.max_running, None);
        let r: LimitRequest = serde_json::from_str(r#"{"max_running": 0}"#).unwrap();
        assert_eq!(LimitBounds::from_request(&r).unwrap_err().path, "max_running");
        let r: LimitRequest = serde_json::from_str(r#"{"rate": {"count": 0, "per": "1s"}}"#).unwrap();
        assert_eq!(LimitBounds::from_request(&r).unwrap_err().path, "rate.count");
        assert!(serde_json::from_str::<LimitRequest>(r#"{"rate": {"count": 1}}"#).is_err());
    }

    #[test]
    fn exact_limit_wins_then_the_longest_pattern() {
        let limits = vec![def("*", 1), def("tenant:*", 2), def("tenant:4*", 3), def("tenant:42", 4)];
        let max = |k: &str| governing(&limits, k).and_then(|d| d.bounds.max_running);
        assert_eq!(max("tenant:42"), Some(4));
        assert_eq!(max("tenant:43"), Some(3));
        assert_eq!(max("tenant:7"), Some(2));
        assert_eq!(max("smtp"), Some(1));
        let no_star = vec![def("tenant:*", 2)];
        assert!(governing(&no_star, "smtp").is_none());
        // Order of definition does not matter.
        let reversed: Vec<_> = limits.iter().rev().cloned().collect();
        assert_eq!(governing(&reversed, "tenant:43").unwrap().key, LimitKey::Pattern("tenant:4".into()));
    }

    #[test]
    fn a_concrete_key_under_a_pattern_names_the_pattern() {
        let p = def("tenant:*", 2);
        let v = Limit::view("tenant:42", &p, Some(1));
        assert_eq!((v.key.as_str(), v.pattern.as_deref(), v.running), ("tenant:42", Some("tenant:*"), Some(1)));
        let v = Limit::view("tenant:*", &p, Some(1));
        assert_eq!((v.pattern, v.running), (None, None));
        let e = def("smtp", 2);
        let v = Limit::view("smtp", &e, Some(0));
        assert_eq!((v.pattern, v.running), (None, Some(0)));
    }
}
