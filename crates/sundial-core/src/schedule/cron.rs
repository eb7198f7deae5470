//! Cron schedules: the strict reading of an expression (which fields, which values, which error
//! message), croner's matching of wall-clock times, and the turn from wall times into instants in
//! the trigger's IANA zone under sundial's DST rules.
//!
//! croner 4 matches fields (including `L`, `#` and a `W` that never leaves the month) but is
//! lenient where sundial is strict: it reads names anywhere (`0 0 * MON *`), skips empty list
//! items (`1,,2`), takes `?` and a year field. [`check_fields`] refuses those first and names the
//! field and value in the message; only then does croner parse.
//!
//! croner is handed naive wall times (no zone, so no DST) and `resolve` maps its matches:
//! - a repeated wall time → its first occurrence; a search that starts in the second occurrence
//!   steps over those earlier instants, so each wall time fires once;
//! - a nonexistent wall time → the first instant after the gap; several such times in one gap
//!   resolve to the same instant, and since the next search starts after it, it fires once.
//!
//! A day of month and a day of week that are both restricted (`*/2` counts as restricted) match
//! when either matches, as crontab(5) says.

use crate::domain::{FieldError, Timestamp};
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Most wall-time matches stepped over per search. Only a search starting inside the second
/// occurrence of a repeated hour steps at all (at most one match per second of the fold).
const FOLD_STEP_LIMIT: usize = 100_000;

/// A parsed cron expression in a resolved zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

impl CronSchedule {
    /// Parses `expr` (5 fields, or 6 with leading seconds; ranges, steps, lists, names in their
    /// own field, `L`, `nW`, `#`, `@daily`…) in the IANA zone `timezone`. Errors carry the
    /// relative paths `expr` and `timezone`. An expression that matches no date at all (e.g.
    /// `0 0 31 2 *`) is rejected too, checked from `anchor`.
    pub fn new(expr: &str, timezone: &str, anchor: Timestamp) -> Result<Self, FieldError> {
        let cron = parse(expr, true).map_err(|m| FieldError::new("expr", m))?;
        let tz: Tz = timezone.parse().map_err(|_| {
            FieldError::new(
                "timezone",
                format!("unknown time zone {timezone:?}; expected an IANA name such as \"Europe/Berlin\" or \"UTC\""),
            )
        })?;
        // croner gives up after a few thousand years; for a pattern that cannot match that takes
        // a moment, but only invalid input pays it.
        let wall = anchor.with_timezone(&tz).naive_local();
        if cron.find_next_occurrence(&wall, true).is_err() {
            return Err(FieldError::new("expr", format!("cron expression {expr:?} never fires")));
        }
        Ok(Self { cron, tz })
    }

    /// The zone the expression is read in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let mut wall = t.with_timezone(&self.tz).naive_local().with_nanosecond(0)?;
        for _ in 0..FOLD_STEP_LIMIT {
            let next = self.cron.find_next_occurrence(&wall, false).ok()?;
            let at = resolve(&self.tz, next)?;
            // Only not after `t` when `t` is in the second occurrence of a repeated hour and
            // `next` is a wall time there: it already fired in the first occurrence.
            if at > t {
                return Some(at);
            }
            wall = next;
        }
        None
    }

    /// The first fire time at or after `t`.
    pub fn next_at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.next_after(t.checked_sub_signed(TimeDelta::nanoseconds(1))?)
    }
}

/// Whether a wall time matches a parsed expression (for calendars' `cron` entries).
pub(crate) fn matches_wall(cron: &Cron, wall: NaiveDateTime) -> bool {
    cron.is_time_matching(&wall).unwrap_or(false)
}

/// Parses `expr` strictly: [`check_fields`] first, then croner (seconds optional when
/// `allow_seconds`, never a year field). The error is the message for the `expr` field.
pub(crate) fn parse(expr: &str, allow_seconds: bool) -> Result<Cron, String> {
    check_fields(expr, allow_seconds)?;
    CronParser::builder()
        .seconds(if allow_seconds { Seconds::Optional } else { Seconds::Disallowed })
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))
}

/// One cron field: its name in messages and its value range.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
}

const SECOND: Field = Field { name: "second", min: 0, max: 59 };
const MINUTE: Field = Field { name: "minute", min: 0, max: 59 };
const HOUR: Field = Field { name: "hour", min: 0, max: 23 };
const DAY_OF_MONTH: Field = Field { name: "day-of-month", min: 1, max: 31 };
const MONTH: Field = Field { name: "month", min: 1, max: 12 };
const DAY_OF_WEEK: Field = Field { name: "day-of-week", min: 0, max: 7 };

const MONTH_NAMES: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const NICKNAMES: [&str; 6] = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"];

/// The strict grammar croner does not enforce. Each item of a comma list is `*`, a value, a
/// range `a-b`, either with `/step`, or (day of month) `L`, `LW`, `nW`, or (day of week) `nL`,
/// `n#k`. Values are numbers in the field's range, or names in their own field (any case).
/// Errors read `minute field: 61 is out of range 0-59`.
fn check_fields(expr: &str, allow_seconds: bool) -> Result<(), String> {
    let trimmed = expr.trim();
    if trimmed.starts_with('@') {
        return if NICKNAMES.iter().any(|n| n.eq_ignore_ascii_case(trimmed)) {
            Ok(())
        } else {
            Err(format!("unknown nickname {trimmed:?}; expected one of {}", NICKNAMES.join(", ")))
        };
    }
    let parts: Vec<&str> = trimmed.split_whitespace().collect();
    let fields: &[Field] = match (parts.len(), allow_seconds) {
        (5, _) => &[MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK],
        (6, true) => &[SECOND, MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK],
        (n, true) => return Err(format!("expected 5 fields (or 6 with leading seconds), got {n}")),
        (n, false) => return Err(format!("expected 5 fields, got {n}")),
    };
    for (field, part) in fields.iter().zip(&parts) {
        check_field(field, part).map_err(|m| format!("{} field: {m}", field.name))?;
    }
    Ok(())
}

fn check_field(field: &Field, part: &str) -> Result<(), String> {
    for item in part.split(',') {
        if item.is_empty() {
            return Err(format!("empty list item in {part:?}"));
        }
        if item.contains('?') {
            return Err(format!("{item:?}: '?' is not supported; use '*'"));
        }
        check_item(field, &item.to_ascii_uppercase())?;
    }
    Ok(())
}

fn check_item(field: &Field, item: &str) -> Result<(), String> {
    if field.name == DAY_OF_MONTH.name {
        if item == "L" || item == "LW" {
            return Ok(());
        }
        if let Some(day) = item.strip_suffix('W') {
            return value(field, day).map(drop);
        }
    }
    if field.name == DAY_OF_WEEK.name {
        if let Some(day) = item.strip_suffix('L') {
            return value(field, day).map(drop);
        }
        if let Some((day, nth)) = item.split_once('#') {
            value(field, day)?;
            return match nth.parse::<u32>() {
                Ok(1..=5) => Ok(()),
                _ => Err(format!("{nth:?} after '#' is not an occurrence 1-5")),
            };
        }
    }
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(step)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(n) if n >= 1 && n <= field.max => {}
            _ => return Err(format!("step {step:?} in {item:?} is not a number from 1 to {}", field.max)),
        }
    }
    if base == "*" {
        return Ok(());
    }
    match base.split_once('-') {
        Some((from, to)) => {
            let (a, mut b) = (value(field, from)?, value(field, to)?);
            // `FRI-SUN`: Sunday ends a range as 7.
            if field.name == DAY_OF_WEEK.name && to == "SUN" {
                b = 7;
            }
            if a > b {
                return Err(format!("range {from}-{to} runs backwards"));
            }
            Ok(())
        }
        None => value(field, base).map(drop),
    }
}

/// A number in the field's range, or a name that belongs to the field.
fn value(field: &Field, v: &str) -> Result<u32, String> {
    if let Some(i) = MONTH_NAMES.iter().position(|n| *n == v) {
        return if field.name == MONTH.name {
            Ok(i as u32 + 1)
        } else {
            Err(format!("{v:?} is a month name, allowed only in the month field"))
        };
    }
    if let Some(i) = DAY_NAMES.iter().position(|n| *n == v) {
        return if field.name == DAY_OF_WEEK.name {
            Ok(i as u32)
        } else {
            Err(format!("{v:?} is a day-of-week name, allowed only in the day-of-week field"))
        };
    }
    // Digits only: Rust would read `+5`, and croner reads a leading `+` as "AND the day fields".
    match v.bytes().all(|b| b.is_ascii_digit()).then(|| v.parse::<u32>()) {
        Some(Ok(n)) if (field.min..=field.max).contains(&n) => Ok(n),
        Some(Ok(n)) => Err(format!("{n} is out of range {}-{}", field.min, field.max)),
        _ => Err(format!("{v:?} is not a number")),
    }
}

/// The instant a wall time in `tz` fires at: itself, its first occurrence when repeated, or the
/// first instant after the gap when it does not exist.
fn resolve(tz: &Tz, wall: NaiveDateTime) -> Option<Timestamp> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => gap_end(tz, wall),
    }
}

/// The first instant whose wall time is past `wall` (a wall time inside a gap): the end of the
/// gap, found by bisection over whole seconds, so a gap of any length works.
fn gap_end(tz: &Tz, wall: NaiveDateTime) -> Option<Timestamp> {
    // UTC offsets stay within ±18 h, so the wall clock is before `wall` at `lo` and past it at
    // `hi`; zone transitions fall on whole seconds.
    const SPAN: i64 = 18 * 3600;
    let (mut lo, mut hi) = (wall.and_utc().timestamp() - SPAN, wall.and_utc().timestamp() + SPAN);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if tz.timestamp_opt(mid, 0).single()?.naive_local() > wall {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sched(expr: &str, tz: &str) -> CronSchedule {
        CronSchedule::new(expr, tz, ts("2026-01-01T00:00:00Z")).unwrap()
    }

    /// The fire times strictly after `from` (RFC 3339), rendered in the zone with its offset.
    fn fires(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = sched(expr, tz);
        let mut t = ts(from);
        let mut out = Vec::new();
        while out.len() < n {
            t = s.next_after(t).unwrap();
            out.push(t.with_timezone(&s.timezone()).to_rfc3339());
        }
        out
    }

    /// The fire times in `[from, to)`.
    fn fires_between(expr: &str, tz: &str, from: &str, to: &str) -> Vec<String> {
        let s = sched(expr, tz);
        let mut out = Vec::new();
        let mut t = s.next_at_or_after(ts(from)).unwrap();
        while t < ts(to) {
            out.push(t.with_timezone(&s.timezone()).to_rfc3339());
            t = s.next_after(t).unwrap();
        }
        out
    }

    // --- Parsing: strict syntax, messages naming field and value ---

    fn expr_error(expr: &str) -> String {
        let err = CronSchedule::new(expr, "UTC", ts("2026-01-01T00:00:00Z")).unwrap_err();
        assert_eq!(err.path, "expr", "{expr:?}");
        err.message
    }

    #[test]
    fn out_of_range_value_names_the_field_and_value() {
        assert_eq!(expr_error("61 * * * *"), "minute field: 61 is out of range 0-59");
        assert_eq!(expr_error("0 24 * * *"), "hour field: 24 is out of range 0-23");
        assert_eq!(expr_error("0 0 0 * *"), "day-of-month field: 0 is out of range 1-31");
        assert_eq!(expr_error("0 0 32W * *"), "day-of-month field: 32 is out of range 1-31");
        assert_eq!(expr_error("0 0 1 13 *"), "month field: 13 is out of range 1-12");
        assert_eq!(expr_error("0 0 * * 8"), "day-of-week field: 8 is out of range 0-7");
        assert_eq!(expr_error("60 0 0 * * *"), "second field: 60 is out of range 0-59");
        assert_eq!(expr_error("0 0 * * MON#6"), "day-of-week field: \"6\" after '#' is not an occurrence 1-5");
    }

    #[test]
    fn names_outside_their_field_are_refused() {
        assert_eq!(
            expr_error("0 0 * MON *"),
            "month field: \"MON\" is a day-of-week name, allowed only in the day-of-week field"
        );
        assert_eq!(
            expr_error("0 0 * * JAN"),
            "day-of-week field: \"JAN\" is a month name, allowed only in the month field"
        );
        assert_eq!(
            expr_error("0 0 JAN * *"),
            "day-of-month field: \"JAN\" is a month name, allowed only in the month field"
        );
        assert_eq!(
            expr_error("0 fri * * *"),
            "hour field: \"FRI\" is a day-of-week name, allowed only in the day-of-week field"
        );
    }

    #[test]
    fn names_in_their_own_field_are_fine_in_any_case() {
        assert_eq!(fires("0 0 * jan,Jul mon", "UTC", "2026-06-30T00:00:00Z", 1), ["2026-07-06T00:00:00+00:00"]);
        assert_eq!(fires("0 0 * * Fri-sun", "UTC", "2026-05-01T00:00:00Z", 3).len(), 3);
        assert_eq!(
            fires("0 0 * * FRI-SUN", "UTC", "2026-05-01T00:00:00Z", 4),
            [
                "2026-05-02T00:00:00+00:00", // Saturday
                "2026-05-03T00:00:00+00:00", // Sunday
                "2026-05-08T00:00:00+00:00", // Friday
                "2026-05-09T00:00:00+00:00",
            ]
        );
    }

    #[test]
    fn empty_list_items_and_question_marks_are_refused() {
        assert_eq!(expr_error("1,,2 * * * *"), "minute field: empty list item in \"1,,2\"");
        assert_eq!(expr_error("1, * * * *"), "minute field: empty list item in \"1,\"");
        assert_eq!(expr_error(",1 * * * *"), "minute field: empty list item in \",1\"");
        assert_eq!(expr_error("? * * * *"), "minute field: \"?\": '?' is not supported; use '*'");
        assert_eq!(expr_error("0 0 ? * MON"), "day-of-month field: \"?\": '?' is not supported; use '*'");
        assert_eq!(expr_error("0 0 1 * ?"), "day-of-week field: \"?\": '?' is not supported; use '*'");
    }

    #[test]
    fn other_malformed_expressions_are_expr_errors() {
        assert_eq!(expr_error("* * *"), "expected 5 fields (or 6 with leading seconds), got 3");
        assert_eq!(expr_error(""), "expected 5 fields (or 6 with leading seconds), got 0");
        assert_eq!(expr_error("1 2 3 4 5 6 7"), "expected 5 fields (or 6 with leading seconds), got 7");
        assert_eq!(expr_error("a b c d e"), "minute field: \"A\" is not a number");
        assert_eq!(expr_error("*/0 * * * *"), "minute field: step \"0\" in \"*/0\" is not a number from 1 to 59");
        assert_eq!(expr_error("0 5-2 * * *"), "hour field: range 5-2 runs backwards");
        assert_eq!(expr_error("0 0 * * +MON"), "day-of-week field: \"+MON\" is not a number");
        assert_eq!(expr_error("0 0 1 * +5"), "day-of-week field: \"+5\" is not a number");
        assert!(expr_error("@reboot").starts_with("unknown nickname \"@reboot\""));
        assert_eq!(fires("@daily", "UTC", "2026-05-01T10:00:00Z", 1), ["2026-05-02T00:00:00+00:00"]);
    }

    // --- `nW`: the nearest weekday, never outside the month ---

    #[test]
    fn first_w_on_a_saturday_first_fires_monday_the_third() {
        // 2026-08-01 is a Saturday; the Friday before is in July.
        assert_eq!(fires("0 0 1W * *", "UTC", "2026-07-15T00:00:00Z", 1), ["2026-08-03T00:00:00+00:00"]);
        // 2026-03-01 is a Sunday: Monday the 2nd.
        assert_eq!(fires("0 0 1W * *", "UTC", "2026-02-15T00:00:00Z", 1), ["2026-03-02T00:00:00+00:00"]);
    }

    #[test]
    fn first_w_fires_once_in_every_month_and_inside_it() {
        let all = fires("0 0 1W * *", "UTC", "2025-12-31T00:00:00Z", 24);
        let months: Vec<&str> = all.iter().map(|t| &t[..7]).collect();
        let expected: Vec<String> = (0..24).map(|i| format!("{}-{:02}", 2026 + i / 12, i % 12 + 1)).collect();
        assert_eq!(months, expected);
        for t in &all {
            let day: u32 = t[8..10].parse().unwrap();
            assert!((1..=3).contains(&day), "{t}");
        }
    }

    #[test]
    fn last_day_w_on_a_sunday_fires_friday_and_short_months_have_none() {
        // 2026-05-31 is a Sunday: Friday the 29th (Monday would be June).
        assert_eq!(fires("0 0 31W * *", "UTC", "2026-05-01T00:00:00Z", 1), ["2026-05-29T00:00:00+00:00"]);
        // April, June and September have no 31st: no fire in them, nor a move to the 30th.
        assert_eq!(
            fires("0 0 31W * *", "UTC", "2026-04-01T00:00:00Z", 4),
            [
                "2026-05-29T00:00:00+00:00",
                "2026-07-31T00:00:00+00:00", // Friday
                "2026-08-31T00:00:00+00:00", // Monday
                "2026-10-30T00:00:00+00:00", // the 31st is a Saturday
            ]
        );
    }

    #[test]
    fn last_day_w_in_long_months_does_not_skip_january_2027() {
        // 2027-01-31 is a Sunday: Friday the 29th.
        assert_eq!(
            fires("0 0 31W 1,3,5,7,8,10,12 *", "UTC", "2026-11-01T00:00:00Z", 3),
            ["2026-12-31T00:00:00+00:00", "2027-01-29T00:00:00+00:00", "2027-03-31T00:00:00+00:00"]
        );
    }

    // --- Day of month OR day of week (crontab(5)) ---

    #[test]
    fn restricted_day_of_month_and_day_of_week_fire_when_either_matches() {
        // The 13th or any Friday (2026-05-01 is a Friday).
        assert_eq!(
            fires("0 0 13 * FRI", "UTC", "2026-05-01T00:00:00Z", 4),
            [
                "2026-05-08T00:00:00+00:00",
                "2026-05-13T00:00:00+00:00",
                "2026-05-15T00:00:00+00:00",
                "2026-05-22T00:00:00+00:00",
            ]
        );
        // `*/2` is a restriction too (Vixie cron would AND here): odd days or Mondays.
        assert_eq!(
            fires("0 0 */2 * MON", "UTC", "2026-05-01T00:00:00Z", 5),
            [
                "2026-05-03T00:00:00+00:00",
                "2026-05-04T00:00:00+00:00", // Monday, even
                "2026-05-05T00:00:00+00:00",
                "2026-05-07T00:00:00+00:00",
                "2026-05-09T00:00:00+00:00",
            ]
        );
        // With `*` in either, only the other one restricts.
        assert_eq!(fires("0 0 * * MON", "UTC", "2026-05-01T00:00:00Z", 1), ["2026-05-04T00:00:00+00:00"]);
        assert_eq!(fires("0 0 13 * *", "UTC", "2026-05-01T00:00:00Z", 1), ["2026-05-13T00:00:00+00:00"]);
    }

    #[test]
    fn expression_that_never_matches_is_an_expr_error() {
        let err = CronSchedule::new("0 0 31 2 *", "UTC", ts("2026-01-01T00:00:00Z")).unwrap_err();
        assert_eq!(err.path, "expr");
        assert!(err.message.contains("never fires"), "{}", err.message);
    }

    #[test]
    fn unknown_zone_is_a_timezone_error_naming_the_zone() {
        for zone in ["Mars/Olympus", "europe/berlin", "", "CEST"] {
            let err = CronSchedule::new("0 * * * *", zone, ts("2026-01-01T00:00:00Z")).unwrap_err();
            assert_eq!(err.path, "timezone");
            assert!(err.message.contains(&format!("{zone:?}")), "{}", err.message);
        }
    }

    // --- Expressions ---

    #[test]
    fn five_fields_fire_on_the_minute() {
        assert_eq!(
            fires("*/20 * * * *", "UTC", "2026-05-01T10:05:30Z", 3),
            ["2026-05-01T10:20:00+00:00", "2026-05-01T10:40:00+00:00", "2026-05-01T11:00:00+00:00"]
        );
    }

    #[test]
    fn six_fields_have_leading_seconds() {
        assert_eq!(
            fires("*/20 * * * * *", "UTC", "2026-05-01T10:05:30Z", 3),
            ["2026-05-01T10:05:40+00:00", "2026-05-01T10:06:00+00:00", "2026-05-01T10:06:20+00:00"]
        );
        assert_eq!(
            fires("0 */5 * * * *", "Europe/Berlin", "2026-05-01T10:05:30Z", 2),
            ["2026-05-01T12:10:00+02:00", "2026-05-01T12:15:00+02:00"]
        );
    }

    #[test]
    fn ranges_steps_lists_and_names() {
        assert_eq!(
            fires("0 9-17/4 * * MON-FRI", "UTC", "2026-05-01T10:00:00Z", 4),
            [
                "2026-05-01T13:00:00+00:00", // Friday
                "2026-05-01T17:00:00+00:00",
                "2026-05-04T09:00:00+00:00", // Monday
                "2026-05-04T13:00:00+00:00",
            ]
        );
        assert_eq!(
            fires("15,45 6 1 JAN,JUL *", "UTC", "2026-05-01T00:00:00Z", 3),
            ["2026-07-01T06:15:00+00:00", "2026-07-01T06:45:00+00:00", "2027-01-01T06:15:00+00:00"]
        );
    }

    #[test]
    fn leap_day_next_from_2026_is_2028_02_29() {
        assert_eq!(
            fires("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 2),
            ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]
        );
    }

    #[test]
    fn l_is_the_last_day_of_the_month() {
        assert_eq!(
            fires("0 12 L * *", "UTC", "2026-01-01T00:00:00Z", 4),
            [
                "2026-01-31T12:00:00+00:00",
                "2026-02-28T12:00:00+00:00",
                "2026-03-31T12:00:00+00:00",
                "2026-04-30T12:00:00+00:00",
            ]
        );
    }

    #[test]
    fn nth_weekday_and_last_weekday_and_nearest_weekday() {
        // Second Friday; last Friday; weekday nearest the 15th (2026-08-15 is a Saturday).
        assert_eq!(fires("0 0 * * FRI#2", "UTC", "2026-05-01T00:00:00Z", 1), ["2026-05-08T00:00:00+00:00"]);
        assert_eq!(fires("0 0 * * 5L", "UTC", "2026-05-01T00:00:00Z", 1), ["2026-05-29T00:00:00+00:00"]);
        assert_eq!(fires("0 0 15W * *", "UTC", "2026-08-01T00:00:00Z", 1), ["2026-08-14T00:00:00+00:00"]);
    }

    #[test]
    fn next_at_or_after_includes_an_exact_match_and_skips_a_fraction_past_it() {
        let s = sched("0 * * * *", "UTC");
        assert_eq!(s.next_at_or_after(ts("2026-05-01T10:00:00Z")), Some(ts("2026-05-01T10:00:00Z")));
        assert_eq!(s.next_at_or_after(ts("2026-05-01T10:00:00.001Z")), Some(ts("2026-05-01T11:00:00Z")));
        assert_eq!(s.next_after(ts("2026-05-01T10:00:00Z")), Some(ts("2026-05-01T11:00:00Z")));
        assert_eq!(s.next_after(ts("2026-05-01T09:59:59.999Z")), Some(ts("2026-05-01T10:00:00Z")));
    }

    // --- DST: spring forward (gap) ---

    #[test]
    fn berlin_gap_time_fires_at_the_end_of_the_gap() {
        // 2026-03-29 02:00 CET → 03:00 CEST: 02:30 does not exist.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 3),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
        );
    }

    #[test]
    fn berlin_several_gap_times_fire_once_at_the_end_of_the_gap() {
        assert_eq!(
            fires_between("*/15 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-30T00:00:00Z"),
            ["2026-03-29T03:00:00+02:00"]
        );
        // Seconds resolution: 3600 nonexistent times, one fire.
        assert_eq!(
            fires_between("* * 2 * * *", "Europe/Berlin", "2026-03-28T23:00:00Z", "2026-03-29T01:00:05Z"),
            ["2026-03-29T03:00:00+02:00"]
        );
    }

    #[test]
    fn berlin_hourly_across_the_gap_fires_three_oclock_once() {
        assert_eq!(
            fires_between("0 * * * *", "Europe/Berlin", "2026-03-29T00:00:00+01:00", "2026-03-29T05:00:00+02:00"),
            [
                "2026-03-29T00:00:00+01:00",
                "2026-03-29T01:00:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T04:00:00+02:00",
            ]
        );
    }

    #[test]
    fn new_york_gap_time_fires_at_the_end_of_the_gap() {
        // 2026-03-08 02:00 EST → 03:00 EDT.
        assert_eq!(
            fires("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        );
        assert_eq!(
            fires_between("*/15 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", "2026-03-09T00:00:00Z"),
            ["2026-03-08T03:00:00-04:00"]
        );
    }

    #[test]
    fn gap_longer_than_an_hour_fires_at_its_end() {
        // Samoa skipped 2011-12-30 entirely (-10:00 → +14:00 at midnight).
        assert_eq!(
            fires("0 12 * * *", "Pacific/Apia", "2011-12-29T13:00:00-10:00", 2),
            ["2011-12-31T00:00:00+14:00", "2011-12-31T12:00:00+14:00"]
        );
    }

    // --- DST: fall back (repeated hour) ---

    #[test]
    fn new_york_repeated_time_fires_once_in_the_first_occurrence() {
        // 2026-11-01 02:00 EDT → 01:00 EST: 01:30 happens twice.
        assert_eq!(
            fires("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
    }

    #[test]
    fn new_york_hourly_across_fall_back_fires_one_oclock_once() {
        assert_eq!(
            fires_between("0 * * * *", "America/New_York", "2026-11-01T00:00:00-04:00", "2026-11-01T04:00:00-05:00"),
            [
                "2026-11-01T00:00:00-04:00",
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T02:00:00-05:00",
                "2026-11-01T03:00:00-05:00",
            ]
        );
    }

    #[test]
    fn berlin_repeated_hour_fires_only_in_the_first_occurrence() {
        // 2026-10-25 03:00 CEST → 02:00 CET: 02:00–02:59 happen twice.
        assert_eq!(
            fires_between("*/20 2 * * *", "Europe/Berlin", "2026-10-25T00:00:00Z", "2026-10-25T03:00:00Z"),
            ["2026-10-25T02:00:00+02:00", "2026-10-25T02:20:00+02:00", "2026-10-25T02:40:00+02:00"]
        );
        assert_eq!(
            fires_between("0 * * * *", "Europe/Berlin", "2026-10-25T01:00:00+02:00", "2026-10-25T04:00:00+01:00"),
            ["2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00",]
        );
    }

    #[test]
    fn search_starting_in_the_second_occurrence_does_not_go_back() {
        // 01:10 EST is the second 01:10; 01:15–01:45 already fired (EDT), so next is 02:00 EST.
        assert_eq!(
            fires("*/15 * * * *", "America/New_York", "2026-11-01T01:10:00-05:00", 2),
            ["2026-11-01T02:00:00-05:00", "2026-11-01T02:15:00-05:00"]
        );
        let s = sched("*/15 * * * *", "America/New_York");
        assert_eq!(s.next_at_or_after(ts("2026-11-01T01:15:00-05:00")), Some(ts("2026-11-01T02:00:00-05:00")));
    }
}
