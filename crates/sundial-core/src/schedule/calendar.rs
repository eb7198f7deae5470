//! Calendars: named, global sets of excluded local times that triggers name (API.md "Calendars").
//! A due time a calendar excludes is not a fire. This module owns the domain type, its validation
//! (with field paths) and the pure test [`Calendar::excludes`]; storing calendars and naming them
//! from triggers belongs to the store and the API.
//!
//! Every entry is read in the calendar's zone, on wall-clock time: `date` excludes the local day,
//! `from`/`until` the local interval `[from, until)`, `cron` every minute whose wall time matches.
//! So across a fall-back both occurrences of a repeated local time are excluded, and a local time
//! that does not exist (spring-forward gap) excludes no instant.

use super::cron;
use crate::domain::{FieldError, Timestamp};
use chrono::{NaiveDate, NaiveDateTime, Timelike};
use chrono_tz::Tz;
use croner::Cron;

/// Longest calendar name.
pub const MAX_NAME_LEN: usize = 128;

/// One exclusion entry of a calendar, in the calendar's zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// `{"date": "2026-12-25"}`: the whole local day.
    Date(NaiveDate),
    /// `{"from": "2026-12-24T12:00:00", "until": "2026-12-27T00:00:00"}`: local, `until` exclusive.
    Range {
        /// First excluded local time.
        from: NaiveDateTime,
        /// First local time no longer excluded.
        until: NaiveDateTime,
    },
    /// `{"cron": "* * * * SAT,SUN"}`: every minute whose local wall time matches (5 fields).
    Cron(String),
}

/// A validated calendar.
#[derive(Debug, Clone)]
pub struct Calendar {
    /// Unique name, what triggers refer to.
    pub name: String,
    /// IANA zone the entries are read in (`UTC` when not given).
    pub timezone: String,
    /// The entries, in the order sent.
    pub exclude: Vec<Exclusion>,
    tz: Tz,
    /// The parsed `cron` entries.
    crons: Vec<Cron>,
}

impl Calendar {
    /// Validates a calendar from its wire parts: the name from the URL, `timezone` and the
    /// `exclude` array as sent. Errors carry the paths `name`, `timezone`, `exclude[i]`,
    /// `exclude[i].date`, `exclude[i].from`, `exclude[i].until` and `exclude[i].cron`.
    pub fn new(name: &str, timezone: Option<&str>, exclude: &[serde_json::Value]) -> Result<Self, FieldError> {
        check_name(name).map_err(|m| FieldError::new("name", m))?;
        let timezone = timezone.unwrap_or("UTC");
        let tz: Tz = timezone.parse().map_err(|_| {
            FieldError::new(
                "timezone",
                format!("unknown time zone {timezone:?}; expected an IANA name such as \"Europe/Berlin\" or \"UTC\""),
            )
        })?;
        let mut entries = Vec::with_capacity(exclude.len());
        let mut crons = Vec::new();
        for (i, raw) in exclude.iter().enumerate() {
            let entry = exclusion(raw).map_err(|e| e.within(&format!("exclude[{i}]")))?;
            if let Exclusion::Cron(expr) = &entry {
                let parsed = cron::parse(expr, false)
                    .map_err(|m| FieldError::new("cron", m).within(&format!("exclude[{i}]")))?;
                crons.push(parsed);
            }
            entries.push(entry);
        }
        Ok(Self { name: name.to_string(), timezone: timezone.to_string(), exclude: entries, tz, crons })
    }

    /// Whether the calendar excludes the instant `t` (its wall time in the calendar's zone).
    pub fn excludes(&self, t: Timestamp) -> bool {
        let local = t.with_timezone(&self.tz).naive_local();
        let minute = local.with_second(0).and_then(|m| m.with_nanosecond(0)).unwrap_or(local);
        self.exclude.iter().any(|e| match e {
            Exclusion::Date(d) => local.date() == *d,
            Exclusion::Range { from, until } => *from <= local && local < *until,
            Exclusion::Cron(_) => false,
        }) || self.crons.iter().any(|c| cron::matches_wall(c, minute))
    }
}

/// Checks a calendar name (1 to [`MAX_NAME_LEN`] of `A-Z a-z 0-9 _ . -`); the error is the message.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(format!("{name:?}: expected 1 to {MAX_NAME_LEN} letters, digits, '_', '.' or '-'"));
    }
    Ok(())
}

/// Whether any of `calendars` excludes `t`.
pub fn excluded(calendars: &[Calendar], t: Timestamp) -> bool {
    calendars.iter().any(|c| c.excludes(t))
}

/// One entry: an object with exactly `date`, `from` and `until`, or `cron`.
fn exclusion(raw: &serde_json::Value) -> Result<Exclusion, FieldError> {
    let shape = || FieldError::new("", "expected {\"date\"}, {\"from\", \"until\"} or {\"cron\"}");
    let obj = raw.as_object().ok_or_else(shape)?;
    let text = |k: &str| -> Result<&str, FieldError> {
        obj.get(k).and_then(|v| v.as_str()).ok_or_else(|| FieldError::new(k, "expected a string"))
    };
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    match keys.as_slice() {
        ["date"] => {
            let v = text("date")?;
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map(Exclusion::Date)
                .map_err(|_| FieldError::new("date", format!("{v:?}: expected a date such as \"2026-12-25\"")))
        }
        ["from", "until"] => {
            let from = local_time("from", text("from")?)?;
            let until = local_time("until", text("until")?)?;
            if until <= from {
                return Err(FieldError::new("until", "must be after from"));
            }
            Ok(Exclusion::Range { from, until })
        }
        ["cron"] => Ok(Exclusion::Cron(text("cron")?.to_string())),
        _ => Err(shape()),
    }
}

/// A local date and time without offset (`2026-12-24T12:00:00`, seconds optional).
fn local_time(path: &str, v: &str) -> Result<NaiveDateTime, FieldError> {
    NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M"))
        .map_err(|_| {
            FieldError::new(
                path,
                format!("{v:?}: expected a local time without offset, such as \"2026-12-24T12:00:00\""),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cal(tz: &str, exclude: serde_json::Value) -> Calendar {
        Calendar::new("holidays", Some(tz), exclude.as_array().unwrap()).unwrap()
    }

    fn error(name: &str, tz: Option<&str>, exclude: serde_json::Value) -> FieldError {
        Calendar::new(name, tz, exclude.as_array().unwrap()).unwrap_err()
    }

    #[test]
    fn timezone_defaults_to_utc() {
        let c = Calendar::new("c", None, &[json!({"date": "2026-12-25"})]).unwrap();
        assert_eq!(c.timezone, "UTC");
        assert!(c.excludes(ts("2026-12-25T00:00:00Z")));
        assert!(c.excludes(ts("2026-12-25T23:59:59Z")));
        assert!(!c.excludes(ts("2026-12-26T00:00:00Z")));
    }

    #[test]
    fn date_is_the_local_day_in_the_calendars_zone() {
        let c = cal("Europe/Berlin", json!([{"date": "2026-12-25"}]));
        assert!(c.excludes(ts("2026-12-24T23:00:00Z"))); // 00:00 CET on the 25th
        assert!(!c.excludes(ts("2026-12-24T22:59:59Z")));
        assert!(c.excludes(ts("2026-12-25T22:59:59Z")));
        assert!(!c.excludes(ts("2026-12-25T23:00:00Z"))); // the 26th
    }

    #[test]
    fn range_is_local_and_until_is_exclusive() {
        let c = cal("Europe/Berlin", json!([{"from": "2026-12-24T12:00:00", "until": "2026-12-27T00:00:00"}]));
        assert!(!c.excludes(ts("2026-12-24T10:59:59Z")));
        assert!(c.excludes(ts("2026-12-24T11:00:00Z")));
        assert!(c.excludes(ts("2026-12-26T22:59:59Z")));
        assert!(!c.excludes(ts("2026-12-26T23:00:00Z")));
    }

    #[test]
    fn range_over_a_repeated_hour_excludes_both_occurrences() {
        // 2026-10-25 in Berlin: 02:00-02:59 happen at 00:xxZ (CEST) and again at 01:xxZ (CET).
        let c = cal("Europe/Berlin", json!([{"from": "2026-10-25T02:00:00", "until": "2026-10-25T02:30:00"}]));
        assert!(c.excludes(ts("2026-10-25T00:15:00Z")));
        assert!(c.excludes(ts("2026-10-25T01:15:00Z")));
        assert!(!c.excludes(ts("2026-10-25T00:45:00Z")));
        assert!(!c.excludes(ts("2026-10-25T01:45:00Z")));
    }

    #[test]
    fn range_inside_a_gap_excludes_nothing_around_it() {
        // 2026-03-29 in Berlin: 02:00-02:59 do not exist; 01:00Z is 03:00 CEST.
        let c = cal("Europe/Berlin", json!([{"from": "2026-03-29T02:00:00", "until": "2026-03-29T03:00:00"}]));
        assert!(!c.excludes(ts("2026-03-29T00:59:59Z"))); // 01:59:59 CET
        assert!(!c.excludes(ts("2026-03-29T01:00:00Z"))); // 03:00 CEST
    }

    #[test]
    fn cron_excludes_every_matching_minute_in_the_zone() {
        let c = cal("Europe/Berlin", json!([{"cron": "* * * * SAT,SUN"}]));
        // Friday 22:30Z is Saturday 00:30 in Berlin (CEST).
        assert!(c.excludes(ts("2026-05-01T22:30:00Z")));
        assert!(!c.excludes(ts("2026-05-01T21:59:59Z")));
        assert!(c.excludes(ts("2026-05-03T21:59:59.5Z"))); // Sunday 23:59:59.5
        assert!(!c.excludes(ts("2026-05-03T22:00:00Z"))); // Monday 00:00
        let lunch = cal("UTC", json!([{"cron": "0-29 12 * * *"}]));
        assert!(lunch.excludes(ts("2026-05-04T12:29:59Z")));
        assert!(!lunch.excludes(ts("2026-05-04T12:30:00Z")));
    }

    #[test]
    fn several_entries_exclude_their_union() {
        let c = cal("UTC", json!([{"date": "2026-12-25"}, {"cron": "* * 1 1 *"}]));
        assert!(c.excludes(ts("2026-12-25T10:00:00Z")));
        assert!(c.excludes(ts("2027-01-01T10:00:00Z")));
        assert!(!c.excludes(ts("2026-12-26T10:00:00Z")));
        assert!(excluded(&[cal("UTC", json!([])), c], ts("2026-12-25T10:00:00Z")));
        assert!(!excluded(&[], ts("2026-12-25T10:00:00Z")));
    }

    #[test]
    fn invalid_calendars_name_the_field_path() {
        let path = |e: FieldError| e.path;
        assert_eq!(path(error("", None, json!([]))), "name");
        assert_eq!(path(error("a/b", None, json!([]))), "name");
        assert_eq!(path(error("c", Some("Mars/Olympus"), json!([]))), "timezone");
        assert_eq!(path(error("c", None, json!([{"date": "2026-12-25"}, 5]))), "exclude[1]");
        assert_eq!(path(error("c", None, json!([{"date": "25.12.2026"}]))), "exclude[0].date");
        assert_eq!(path(error("c", None, json!([{"date": "2026-12-25", "cron": "* * * * *"}]))), "exclude[0]");
        assert_eq!(path(error("c", None, json!([{"from": "2026-12-24T12:00:00"}]))), "exclude[0]");
        assert_eq!(
            path(error("c", None, json!([{"from": "2026-12-24T12:00:00Z", "until": "2026-12-25T00:00:00"}]))),
            "exclude[0].from"
        );
        assert_eq!(
            path(error("c", None, json!([{"from": "2026-12-24T12:00:00", "until": "2026-12-24T12:00:00"}]))),
            "exclude[0].until"
        );
        let e = error("c", None, json!([{"date": "2026-12-25"}, {"cron": "* * * MON *"}]));
        assert_eq!(
            e.to_string(),
            "exclude[1].cron: month field: \"MON\" is a day-of-week name, allowed only in the day-of-week field"
        );
        // Seconds have no meaning for a minute-wise exclusion.
        assert_eq!(path(error("c", None, json!([{"cron": "0 * * * * *"}]))), "exclude[0].cron");
    }
}
