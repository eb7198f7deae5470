//! Pure schedule arithmetic: when does a trigger fire next, and what does the scheduler do
//! with a trigger it reaches late (the misfire policy). No clock, no store: every function
//! takes the instants it needs, so it is tested with plain values.
//!
//! This module holds the API ([`Schedule`], [`first_fire`], [`plan`], [`next_fire_from`],
//! [`cron_next`]); `cron` reads cron expressions strictly in a zone (DST rules), `interval` is the
//! fixed-period grid, `misfire` turns the due times that passed into a [`FirePlan`], `fires` lists
//! due times ahead (previews) and in a range (backfill), [`calendar`] excludes due times.

pub mod calendar;
mod cron;
mod fires;
mod interval;
mod misfire;

pub use calendar::{Calendar, Exclusion};
pub use cron::CronSchedule;
pub use fires::{
    due_times, fires_after, preview, preview_unsaved, Fires, PreviewFire, BACKFILL_LIMIT, PREVIEW_LIMIT, SCAN_LIMIT,
};
pub use misfire::PLAN_LIMIT;

use crate::domain::job::JobRequest;
use crate::domain::{FieldError, JobSpec, Timestamp, TriggerKind, TriggerSpec};
use chrono::{DateTime, TimeDelta};
use chrono_tz::Tz;
use interval::Grid;
use std::time::Duration;

/// A compiled trigger schedule (cron parsed, zone resolved).
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Fires once.
    Once(Timestamp),
    /// Fires on a cron expression in a time zone (boxed: a parsed pattern is large).
    Cron(Box<CronSchedule>),
    /// Fires every `every` on the grid through `anchor`.
    Interval {
        /// Period.
        every: Duration,
        /// Any instant on the grid.
        anchor: Timestamp,
    },
}

impl Schedule {
    /// Compiles a trigger kind. Errors carry paths relative to the trigger (`expr`, `timezone`,
    /// `every`). `anchor` puts an interval's grid through it; for cron it is where the check
    /// that the expression fires at all starts.
    pub fn compile(kind: &TriggerKind, anchor: Timestamp) -> Result<Self, FieldError> {
        match kind {
            TriggerKind::Once { at } => Ok(Schedule::Once(*at)),
            TriggerKind::Cron { expr, timezone } => {
                Ok(Schedule::Cron(Box::new(CronSchedule::new(expr, timezone, anchor)?)))
            }
            TriggerKind::Interval { every } => {
                if every.is_zero() {
                    return Err(FieldError::new("every", "must be greater than zero"));
                }
                Ok(Schedule::Interval { every: *every, anchor })
            }
        }
    }

    /// The first due time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Once(at) => Some(*at).filter(|at| *at > t),
            Schedule::Cron(c) => c.next_after(t),
            Schedule::Interval { every, anchor } => Grid::new(*anchor, *every)?.after(t),
        }
    }

    /// The first due time at or after `t`.
    pub fn next_at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Once(at) => Some(*at).filter(|at| *at >= t),
            Schedule::Cron(c) => c.next_at_or_after(t),
            Schedule::Interval { every, anchor } => Grid::new(*anchor, *every)?.at_or_after(t),
        }
    }
}

/// Validates a job request completely, as every entry point (HTTP, Kafka) must: its shape
/// ([`JobSpec::from_request`]), then what only compiling each trigger's schedule can tell (a
/// cron expression, a zone), with paths `triggers[i].expr`. `now` is where the check that a
/// cron expression fires at all starts; validation reads no clock of its own.
pub fn validate_job(req: JobRequest, now: Timestamp) -> Result<JobSpec, FieldError> {
    let spec = JobSpec::from_request(req)?;
    for (i, t) in spec.triggers.iter().enumerate() {
        Schedule::compile(&t.kind, now).map_err(|e| e.within(&format!("triggers[{i}]")))?;
    }
    Ok(spec)
}

/// One due time the scheduler turns into a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFire {
    /// The due time (becomes the run's `scheduled_for`).
    pub scheduled_for: Timestamp,
    /// True when the run is recorded `skipped` (misfire `skip`).
    pub skipped: bool,
    /// Why, when the run summarises or replaces missed times.
    pub reason: Option<String>,
}

/// What the scheduler does with one trigger at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// Runs to create, oldest first.
    pub fires: Vec<PlannedFire>,
    /// How many due times passed (added to the trigger's `fires`, counts toward `max_fires`).
    pub fires_added: u64,
    /// How many of those were missed (more than the threshold late), whatever the policy made
    /// of them: what `sundial_trigger_misfires_total` counts.
    pub missed: u64,
    /// The trigger's next due time after `now`; `None` when it has no fire left. Only when
    /// the trigger was more than [`PLAN_LIMIT`] due times behind is it still `<= now`: the
    /// rest is planned on the scheduler's next pass.
    pub next_fire_at: Option<Timestamp>,
}

/// The first due time of a trigger created at `created_at`; `None` if it never fires.
///
/// once: `at` (inside the window). cron: the first occurrence at or after `start_at`, else the
/// first strictly after `created_at`. interval: `start_at`, else `created_at + every`. A time
/// after `end_at` is `None`.
pub fn first_fire(spec: &TriggerSpec, created_at: Timestamp) -> Option<Timestamp> {
    let first = match &spec.kind {
        TriggerKind::Once { at } => Some(*at).filter(|at| spec.start_at.is_none_or(|s| *at >= s)),
        TriggerKind::Cron { .. } => {
            let schedule = Schedule::compile(&spec.kind, created_at).ok()?;
            match spec.start_at {
                Some(start) => schedule.next_at_or_after(start),
                None => schedule.next_after(created_at),
            }
        }
        TriggerKind::Interval { every } => match spec.start_at {
            Some(start) => Some(start),
            None => created_at.checked_add_signed(TimeDelta::from_std(*every).ok()?),
        },
    }?;
    within_end(spec, first)
}

/// Plans the fires of a trigger whose `next_fire_at <= now`, applying its window, `max_fires`
/// (with `fires` already counted) and misfire policy (times more than `misfire_threshold`
/// before `now` are missed).
///
/// A plan enumerates at most [`PLAN_LIMIT`] cron due times and creates at most that many runs
/// from on-time interval times; a trigger further behind is planned in slices (see
/// [`FirePlan::next_fire_at`]). Missed interval times are counted, never enumerated.
///
/// A due time any of `calendars` (those the trigger names) excludes is not a fire: no run, not
/// counted in `fires_added` or `missed`; the plan's `next_fire_at` is not an excluded time.
pub fn plan(
    spec: &TriggerSpec,
    next_fire_at: Timestamp,
    fires: u64,
    now: Timestamp,
    misfire_threshold: Duration,
    calendars: &[Calendar],
) -> FirePlan {
    misfire::plan_with(spec, next_fire_at, fires, now, misfire_threshold, calendars)
}

/// [`first_fire`], passing over the due times `calendars` exclude: what a new trigger stores as
/// its `next_fire_at`.
pub fn first_fire_in(spec: &TriggerSpec, created_at: Timestamp, calendars: &[Calendar]) -> Option<Timestamp> {
    let first = first_fire(spec, created_at)?;
    let schedule = Schedule::compile(&spec.kind, first).ok()?;
    within_end(spec, misfire::skip_excluded(Some(first), |t| schedule.next_after(t), spec.end_at, calendars)?)
}

/// A trigger's `next_fire_at` after one of its calendars changed at `now`: the first due time
/// after `now` that `calendars` (as they are now) leave, continuing the trigger's schedule. A
/// stored time at or before `now` is kept (the scheduler has yet to plan it and reads the
/// calendars then), and so is `None` (no fire left).
pub fn next_fire_after_change(
    spec: &TriggerSpec,
    next_fire_at: Option<Timestamp>,
    now: Timestamp,
    calendars: &[Calendar],
) -> Option<Timestamp> {
    let next = next_fire_at?;
    if next <= now {
        return Some(next);
    }
    // Anchored at the stored time, so an interval stays on its grid.
    let schedule = Schedule::compile(&spec.kind, next).ok()?;
    let t = match spec.start_at {
        Some(start) if start > now => schedule.next_at_or_after(start),
        _ => schedule.next_after(now),
    };
    within_end(spec, misfire::skip_excluded(t, |t| schedule.next_after(t), spec.end_at, calendars)?)
}

/// The first due time at or after `t`, continuing from a trigger's stored `next_fire_at`
/// (used to show a paused job's next future fire time). Honours `end_at`, not `max_fires`.
/// A once trigger whose time is before `t` has none.
pub fn next_fire_from(spec: &TriggerSpec, next_fire_at: Timestamp, t: Timestamp) -> Option<Timestamp> {
    let next = if next_fire_at >= t {
        next_fire_at
    } else {
        // Anchored at `next_fire_at` so an interval stays on its grid.
        Schedule::compile(&spec.kind, next_fire_at).ok()?.next_at_or_after(t)?
    };
    within_end(spec, next)
}

/// The next `n` fire times of a cron expression strictly after `after`, in its zone (for
/// `sundial cron next`, which prints them with the zone's offset). Errors carry the paths
/// `expr` and `timezone`. Fewer than `n` only past croner's search horizon.
pub fn cron_next(expr: &str, timezone: &str, after: Timestamp, n: usize) -> Result<Vec<DateTime<Tz>>, FieldError> {
    let schedule = CronSchedule::new(expr, timezone, after)?;
    let tz = schedule.timezone();
    let mut out = Vec::with_capacity(n.min(1024));
    let mut t = after;
    while out.len() < n {
        let Some(next) = schedule.next_after(t) else {
            break;
        };
        out.push(next.with_timezone(&tz));
        t = next;
    }
    Ok(out)
}

fn within_end(spec: &TriggerSpec, t: Timestamp) -> Option<Timestamp> {
    spec.end_at.is_none_or(|end| t <= end).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Misfire;

    pub(super) fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub(super) fn spec(kind: TriggerKind) -> TriggerSpec {
        TriggerSpec {
            kind,
            start_at: None,
            end_at: None,
            max_fires: None,
            misfire: Misfire::FireOnce,
            catch_up_limit: None,
            calendars: vec![],
        }
    }

    pub(super) fn cron(expr: &str, tz: &str) -> TriggerKind {
        TriggerKind::Cron { expr: expr.into(), timezone: tz.into() }
    }

    pub(super) fn every(secs: u64) -> TriggerKind {
        TriggerKind::Interval { every: Duration::from_secs(secs) }
    }

    #[test]
    fn compile_reports_relative_paths() {
        let now = ts("2026-01-01T00:00:00Z");
        assert_eq!(Schedule::compile(&cron("nope", "UTC"), now).unwrap_err().path, "expr");
        assert_eq!(Schedule::compile(&cron("0 * * * *", "Nowhere/City"), now).unwrap_err().path, "timezone");
        let zero = TriggerKind::Interval { every: Duration::ZERO };
        assert_eq!(Schedule::compile(&zero, now).unwrap_err().path, "every");
        assert!(Schedule::compile(&cron("0 */5 * * * *", "Europe/Berlin"), now).is_ok());
    }

    #[test]
    fn once_first_fire_is_its_instant_inside_the_window() {
        let at = ts("2026-11-24T08:00:00Z");
        let mut s = spec(TriggerKind::Once { at });
        assert_eq!(first_fire(&s, ts("2026-01-01T00:00:00Z")), Some(at));
        // In the past still fires (the scheduler treats it as due, maybe missed).
        assert_eq!(first_fire(&s, ts("2027-01-01T00:00:00Z")), Some(at));
        s.end_at = Some(ts("2026-11-24T07:59:59Z"));
        assert_eq!(first_fire(&s, ts("2026-01-01T00:00:00Z")), None);
        s.end_at = None;
        s.start_at = Some(ts("2026-11-24T08:00:01Z"));
        assert_eq!(first_fire(&s, ts("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn cron_first_fire_is_strictly_after_creation() {
        let s = spec(cron("0 * * * *", "UTC"));
        assert_eq!(first_fire(&s, ts("2026-05-01T10:00:00Z")), Some(ts("2026-05-01T11:00:00Z")));
        assert_eq!(first_fire(&s, ts("2026-05-01T10:00:00.5Z")), Some(ts("2026-05-01T11:00:00Z")));
        assert_eq!(first_fire(&s, ts("2026-05-01T09:59:59Z")), Some(ts("2026-05-01T10:00:00Z")));
    }

    #[test]
    fn cron_first_fire_is_at_or_after_start_at() {
        let mut s = spec(cron("0 * * * *", "UTC"));
        s.start_at = Some(ts("2026-06-01T12:00:00Z"));
        assert_eq!(first_fire(&s, ts("2026-05-01T10:30:00Z")), Some(ts("2026-06-01T12:00:00Z")));
        s.start_at = Some(ts("2026-06-01T12:00:01Z"));
        assert_eq!(first_fire(&s, ts("2026-05-01T10:30:00Z")), Some(ts("2026-06-01T13:00:00Z")));
    }

    #[test]
    fn cron_first_fire_after_end_at_is_none() {
        let mut s = spec(cron("0 0 1 1 *", "UTC"));
        s.end_at = Some(ts("2026-12-31T00:00:00Z"));
        assert_eq!(first_fire(&s, ts("2026-05-01T00:00:00Z")), None);
        s.end_at = Some(ts("2027-01-01T00:00:00Z"));
        assert_eq!(first_fire(&s, ts("2026-05-01T00:00:00Z")), Some(ts("2027-01-01T00:00:00Z")));
    }

    #[test]
    fn cron_first_fire_follows_the_zone() {
        let s = spec(cron("0 9 * * *", "Europe/Berlin"));
        assert_eq!(first_fire(&s, ts("2026-07-01T00:00:00Z")), Some(ts("2026-07-01T07:00:00Z")));
        assert_eq!(first_fire(&s, ts("2026-01-01T00:00:00Z")), Some(ts("2026-01-01T08:00:00Z")));
    }

    #[test]
    fn interval_first_fire_is_creation_plus_every() {
        let s = spec(every(15));
        assert_eq!(first_fire(&s, ts("2026-05-01T10:00:00Z")), Some(ts("2026-05-01T10:00:15Z")));
    }

    #[test]
    fn interval_first_fire_is_start_at_when_set() {
        let mut s = spec(every(15));
        s.start_at = Some(ts("2026-05-02T00:00:00Z"));
        assert_eq!(first_fire(&s, ts("2026-05-01T10:00:00Z")), Some(ts("2026-05-02T00:00:00Z")));
        s.end_at = Some(ts("2026-05-01T23:00:00Z"));
        assert_eq!(first_fire(&s, ts("2026-05-01T10:00:00Z")), None);
    }

    #[test]
    fn next_fire_from_continues_the_interval_grid() {
        let s = spec(every(60));
        let stored = ts("2026-05-01T10:00:30Z");
        assert_eq!(next_fire_from(&s, stored, ts("2026-05-01T09:00:00Z")), Some(stored));
        assert_eq!(next_fire_from(&s, stored, ts("2026-05-01T12:00:00Z")), Some(ts("2026-05-01T12:00:30Z")));
        assert_eq!(next_fire_from(&s, stored, ts("2026-05-01T12:00:30Z")), Some(ts("2026-05-01T12:00:30Z")));
    }

    #[test]
    fn next_fire_from_continues_cron_and_honours_end_at() {
        let mut s = spec(cron("0 0 * * *", "UTC"));
        let stored = ts("2026-05-01T00:00:00Z");
        assert_eq!(next_fire_from(&s, stored, ts("2026-05-10T08:00:00Z")), Some(ts("2026-05-11T00:00:00Z")));
        s.end_at = Some(ts("2026-05-10T12:00:00Z"));
        assert_eq!(next_fire_from(&s, stored, ts("2026-05-10T08:00:00Z")), None);
        // Not max_fires: a paused trigger shows its time even at the cap.
        s.end_at = None;
        s.max_fires = Some(1);
        assert_eq!(next_fire_from(&s, stored, ts("2026-04-30T00:00:00Z")), Some(stored));
    }

    #[test]
    fn next_fire_from_has_none_for_a_past_once() {
        let at = ts("2026-05-01T00:00:00Z");
        let s = spec(TriggerKind::Once { at });
        assert_eq!(next_fire_from(&s, at, ts("2026-05-02T00:00:00Z")), None);
        assert_eq!(next_fire_from(&s, at, ts("2026-04-01T00:00:00Z")), Some(at));
    }

    #[test]
    fn cron_next_prints_times_with_the_zone_offset() {
        let times = cron_next("30 2 * * *", "Europe/Berlin", ts("2026-03-27T12:00:00Z"), 3).unwrap();
        let shown: Vec<String> = times.iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(shown, ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]);
    }

    #[test]
    fn cron_next_reports_bad_input_by_path() {
        assert_eq!(cron_next("0 0 32 * *", "UTC", ts("2026-01-01T00:00:00Z"), 1).unwrap_err().path, "expr");
        assert_eq!(cron_next("0 0 * * *", "Mars/Base", ts("2026-01-01T00:00:00Z"), 1).unwrap_err().path, "timezone");
        assert!(cron_next("0 0 * * *", "UTC", ts("2026-01-01T00:00:00Z"), 0).unwrap().is_empty());
    }

    fn calendar(exclude: serde_json::Value) -> Calendar {
        Calendar::new("c", None, exclude.as_array().unwrap()).unwrap()
    }

    #[test]
    fn plan_passes_over_excluded_times_without_counting_or_missing_them() {
        // Every minute from 10:00; 10:01-10:02 excluded; planned at 10:10 (all but 10:09-10:10 missed).
        let cals = [calendar(serde_json::json!([{"from": "2026-05-01T10:01:00", "until": "2026-05-01T10:03:00"}]))];
        let mut s = spec(every(60));
        s.misfire = Misfire::CatchUp;
        s.catch_up_limit = Some(100);
        let p = plan(&s, ts("2026-05-01T10:00:00Z"), 0, ts("2026-05-01T10:10:00Z"), Duration::from_secs(60), &cals);
        let times: Vec<Timestamp> = p.fires.iter().map(|f| f.scheduled_for).collect();
        let want: Vec<Timestamp> =
            [0, 3, 4, 5, 6, 7, 8, 9, 10].iter().map(|m| ts(&format!("2026-05-01T10:{m:02}:00Z"))).collect();
        assert_eq!(times, want);
        assert_eq!((p.fires_added, p.missed), (9, 7));
        // The next due time never rests on an excluded one.
        let p = plan(
            &spec(every(60)),
            ts("2026-05-01T10:00:00Z"),
            0,
            ts("2026-05-01T10:00:30Z"),
            Duration::from_secs(60),
            &cals,
        );
        assert_eq!(p.next_fire_at, Some(ts("2026-05-01T10:03:00Z")));
    }

    #[test]
    fn first_fire_in_passes_over_excluded_times() {
        let cals = [calendar(serde_json::json!([{"date": "2026-05-02"}]))];
        let s = spec(cron("0 9 * * *", "UTC"));
        assert_eq!(first_fire_in(&s, ts("2026-05-01T10:00:00Z"), &cals), Some(ts("2026-05-03T09:00:00Z")));
        assert_eq!(first_fire_in(&s, ts("2026-05-01T10:00:00Z"), &[]), Some(ts("2026-05-02T09:00:00Z")));
        let mut ends = s.clone();
        ends.end_at = Some(ts("2026-05-02T23:00:00Z"));
        assert_eq!(first_fire_in(&ends, ts("2026-05-01T10:00:00Z"), &cals), None);
    }

    #[test]
    fn next_fire_after_change_recomputes_only_future_times() {
        let s = spec(every(60));
        let now = ts("2026-05-01T10:00:30Z");
        let cals = [calendar(serde_json::json!([{"from": "2026-05-01T10:01:00", "until": "2026-05-01T10:02:00"}]))];
        // A stored time after now: recomputed from now, on the same grid.
        assert_eq!(
            next_fire_after_change(&s, Some(ts("2026-05-01T10:05:00Z")), now, &cals),
            Some(ts("2026-05-01T10:02:00Z"))
        );
        assert_eq!(
            next_fire_after_change(&s, Some(ts("2026-05-01T10:05:00Z")), now, &[]),
            Some(ts("2026-05-01T10:01:00Z"))
        );
        // Due already, or ended: kept.
        let due = Some(ts("2026-05-01T10:00:00Z"));
        assert_eq!(next_fire_after_change(&s, due, now, &cals), due);
        assert_eq!(next_fire_after_change(&s, None, now, &cals), None);
    }
}
