//! Cron schedules: croner parses the expression and finds matching wall-clock times; this module
//! turns wall times into instants in the trigger's IANA zone under sundial's DST rules.
//!
//! croner 2.2 resolves zones itself, and mostly as API.md wants (a gap time becomes the first
//! instant after the gap, a repeated time its first occurrence), but the tests below pin two
//! faults: searching from an instant inside the second occurrence of a repeated hour returns
//! times *before* the start (their first occurrences again), and a gap longer than an hour (e.g.
//! Pacific/Apia skipping 2011-12-30) is an error that ends the schedule. So croner only matches
//! naive wall times (handed over as UTC, where no DST exists) and `resolve` maps them:
//! - a repeated wall time → its first occurrence; a search that starts in the second occurrence
//!   steps over those earlier instants, so each wall time fires once;
//! - a nonexistent wall time → the first instant after the gap; several such times in one gap
//!   resolve to the same instant, and since the next search starts after it, it fires once.

use crate::domain::{FieldError, Timestamp};
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
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
    /// Parses `expr` (5 fields, or 6 with leading seconds; whatever croner supports: ranges,
    /// steps, names, `L`, `W`, `#`, `@daily`…) in the IANA zone `timezone`. Errors carry the
    /// relative paths `expr` and `timezone`. An expression that matches no date at all (e.g.
    /// `0 0 31 2 *`) is rejected too, checked from `anchor`.
    pub fn new(expr: &str, timezone: &str, anchor: Timestamp) -> Result<Self, FieldError> {
        let cron = Cron::new(expr)
            .with_seconds_optional()
            .parse()
            .map_err(|e| FieldError::new("expr", format!("invalid cron expression {expr:?}: {e}")))?;
        let tz: Tz = timezone.parse().map_err(|_| {
            FieldError::new(
                "timezone",
                format!("unknown time zone {timezone:?}; expected an IANA name such as \"Europe/Berlin\" or \"UTC\""),
            )
        })?;
        // croner gives up after year 5000; for a pattern that cannot match that takes a moment,
        // but only invalid input pays it.
        let wall = anchor.with_timezone(&tz).naive_local();
        if cron.find_next_occurrence(&wall.and_utc(), true).is_err() {
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
            let next = self.cron.find_next_occurrence(&wall.and_utc(), false).ok()?.naive_utc();
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

    // --- What croner 2.2 does on its own (why this module resolves zones itself) ---

    #[test]
    fn croner_alone_resolves_a_gap_time_to_the_end_of_the_gap() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let cron = Cron::new("30 2 * * *").parse().unwrap();
        let from = tz.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap();
        let next = cron.find_next_occurrence(&from, false).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-03-29T03:00:00+02:00");
    }

    #[test]
    fn croner_alone_returns_times_before_a_start_in_the_second_occurrence() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let cron = Cron::new("*/15 * * * *").parse().unwrap();
        // 01:10 EST, the second 01:10 of 2026-11-01.
        let from = ts("2026-11-01T06:10:00Z").with_timezone(&tz);
        let next = cron.find_next_occurrence(&from, false).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-11-01T01:15:00-04:00");
        assert!(next < from);
    }

    #[test]
    fn croner_alone_fails_on_a_gap_longer_than_an_hour() {
        let tz: Tz = "Pacific/Apia".parse().unwrap();
        let cron = Cron::new("0 12 * * *").parse().unwrap();
        let from = tz.with_ymd_and_hms(2011, 12, 29, 13, 0, 0).unwrap();
        assert!(cron.find_next_occurrence(&from, false).is_err());
    }

    // --- Parsing ---

    #[test]
    fn bad_expression_is_an_expr_error_with_croners_reason() {
        for expr in ["61 * * * *", "* * *", "a b c d e", "", "0 0 * * MON#6", "1 2 3 4 5 6 7"] {
            let err = CronSchedule::new(expr, "UTC", ts("2026-01-01T00:00:00Z")).unwrap_err();
            assert_eq!(err.path, "expr", "{expr:?}");
            assert!(err.message.starts_with("invalid cron expression"), "{}", err.message);
        }
        let err = CronSchedule::new("61 * * * *", "UTC", ts("2026-01-01T00:00:00Z")).unwrap_err();
        assert!(err.message.contains("out of bounds"), "{}", err.message);
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
