//! Planning: which due times of a trigger passed by `now`, which of them were missed (more than
//! the misfire threshold late), and what the trigger's misfire policy makes of them.

use super::calendar::{excluded, Calendar};
use super::{interval::Grid, FirePlan, PlannedFire, Schedule};
use crate::domain::trigger::DEFAULT_CATCH_UP_LIMIT;
use crate::domain::{Misfire, Timestamp, TriggerSpec};
use chrono::TimeDelta;
use std::time::Duration;

/// Most cron due times one plan steps through, and most runs it creates from on-time interval
/// times or `catch_up` replays (so a `catch_up_limit` above it acts as this). Stepping 100 000
/// cron times takes well under a second; a trigger further behind (a per-second cron down for
/// more than a day) is planned in slices: the plan's `next_fire_at` is the first unplanned,
/// still past, due time, and the scheduler's next pass plans on from there. Each slice applies
/// the misfire policy to its own missed times (`fire_once` gives one run per slice). Missed
/// interval times are counted arithmetically and never need slicing.
pub const PLAN_LIMIT: u64 = 100_000;

/// What bounds the due times of one plan.
struct Bounds {
    /// Due times after this (`now`, or `end_at` when earlier) are not due yet, or never.
    until: Timestamp,
    end_at: Option<Timestamp>,
    /// Due times left before `max_fires`.
    remaining: u64,
    /// Due times strictly before this are missed; `None` when none can be.
    missed_before: Option<Timestamp>,
    /// How many missed times to keep for replay (`catch_up`).
    replay_max: u64,
}

/// The due times that passed, as the policies need them.
#[derive(Default)]
struct Passed {
    total: u64,
    missed: u64,
    latest_missed: Option<Timestamp>,
    /// The oldest missed times, at most `replay_max`.
    replay: Vec<Timestamp>,
    on_time: Vec<Timestamp>,
    next: Option<Timestamp>,
}

#[cfg(test)]
pub(super) fn plan(
    spec: &TriggerSpec,
    next_fire_at: Timestamp,
    fires: u64,
    now: Timestamp,
    misfire_threshold: Duration,
) -> FirePlan {
    plan_with(spec, next_fire_at, fires, now, misfire_threshold, &[])
}

/// [`super::plan`]: a due time any of `calendars` excludes is stepped over, not counted, not
/// missed; the plan's `next_fire_at` is a time no calendar excludes (or, after [`PLAN_LIMIT`]
/// excluded times in a row, the last one looked at, so the next pass goes on from there).
pub(super) fn plan_with(
    spec: &TriggerSpec,
    next_fire_at: Timestamp,
    fires: u64,
    now: Timestamp,
    misfire_threshold: Duration,
    calendars: &[Calendar],
) -> FirePlan {
    let empty = FirePlan { fires: Vec::new(), fires_added: 0, missed: 0, next_fire_at: None };
    // A stored spec was validated; one that no longer compiles has no fire left.
    let Ok(schedule) = Schedule::compile(&spec.kind, next_fire_at) else {
        return empty;
    };
    let first = match spec.start_at {
        Some(start) if next_fire_at < start => schedule.next_at_or_after(start),
        _ => Some(next_fire_at),
    };
    let bounds = Bounds {
        until: spec.end_at.map_or(now, |end| end.min(now)),
        end_at: spec.end_at,
        remaining: spec.max_fires.map_or(u64::MAX, |max| max.saturating_sub(fires)),
        // A threshold reaching before the calendar starts misses nothing.
        missed_before: TimeDelta::from_std(misfire_threshold).ok().and_then(|d| now.checked_sub_signed(d)),
        replay_max: match spec.misfire {
            Misfire::CatchUp => u64::from(spec.catch_up_limit.unwrap_or(DEFAULT_CATCH_UP_LIMIT)).min(PLAN_LIMIT),
            Misfire::FireOnce | Misfire::Skip => 0,
        },
    };
    let passed = match (&schedule, first) {
        // With calendars, interval times are stepped like cron ones: each must be looked at.
        (Schedule::Interval { every, .. }, Some(first)) if calendars.is_empty() => match Grid::new(first, *every) {
            Some(grid) => count_interval(grid, &bounds),
            None => return empty,
        },
        _ => step(first, |t| schedule.next_after(t), &bounds, calendars),
    };
    apply_policy(spec.misfire, passed)
}

/// Interval due times `first + k·every`, counted rather than enumerated.
fn count_interval(grid: Grid, b: &Bounds) -> Passed {
    let cap = |n: u128| u64::try_from(n.min(u128::from(b.remaining))).unwrap_or(u64::MAX);
    let due = cap(grid.count_through(b.until));
    let missed = b.missed_before.map_or(0, |m| cap(grid.count_before(m))).min(due);
    let total = missed + (due - missed).min(PLAN_LIMIT);
    let nth = |k: u64| grid.nth(i128::from(k));
    Passed {
        total,
        missed,
        latest_missed: missed.checked_sub(1).and_then(nth),
        replay: (0..missed.min(b.replay_max)).filter_map(nth).collect(),
        on_time: (missed..total).filter_map(nth).collect(),
        next: next_left(total, nth(total), b),
    }
}

/// Due times stepped one by one from `first` (cron, once, or any kind with calendars), at most
/// [`PLAN_LIMIT`] schedule times looked at; times a calendar excludes are passed over.
fn step(
    first: Option<Timestamp>,
    mut next_after: impl FnMut(Timestamp) -> Option<Timestamp>,
    b: &Bounds,
    calendars: &[Calendar],
) -> Passed {
    let mut p = Passed::default();
    let mut cur = first;
    let mut scanned = 0u64;
    while let Some(t) = cur {
        if t > b.until || p.total >= b.remaining || scanned >= PLAN_LIMIT {
            break;
        }
        scanned += 1;
        if excluded(calendars, t) {
            cur = next_after(t);
            continue;
        }
        p.total += 1;
        if b.missed_before.is_some_and(|m| t < m) {
            p.missed += 1;
            p.latest_missed = Some(t);
            if (p.replay.len() as u64) < b.replay_max {
                p.replay.push(t);
            }
        } else {
            p.on_time.push(t);
        }
        cur = next_after(t);
    }
    if p.total < b.remaining {
        cur = skip_excluded(cur, &mut next_after, b.end_at, calendars);
    }
    p.next = next_left(p.total, cur, b);
    p
}

/// The first of `t` and the due times after it that no calendar excludes, looking at most at
/// [`PLAN_LIMIT`] times (then the last one looked at: the scheduler wakes there and goes on).
/// Stops at `end_at`. Costs one exclusion test per due time stepped over.
pub(super) fn skip_excluded(
    mut t: Option<Timestamp>,
    mut next_after: impl FnMut(Timestamp) -> Option<Timestamp>,
    end_at: Option<Timestamp>,
    calendars: &[Calendar],
) -> Option<Timestamp> {
    if calendars.is_empty() {
        return t;
    }
    for _ in 0..PLAN_LIMIT {
        match t {
            Some(at) if end_at.is_none_or(|end| at <= end) && excluded(calendars, at) => t = next_after(at),
            _ => break,
        }
    }
    t
}

/// The due time after the planned ones, unless `max_fires` or `end_at` ends the trigger.
fn next_left(planned: u64, next: Option<Timestamp>, b: &Bounds) -> Option<Timestamp> {
    if planned >= b.remaining {
        return None;
    }
    next.filter(|t| b.end_at.is_none_or(|end| *t <= end))
}

fn apply_policy(policy: Misfire, p: Passed) -> FirePlan {
    let mut fires = Vec::with_capacity(p.replay.len().max(1) + p.on_time.len());
    if let Some(latest) = p.latest_missed {
        let n = p.missed;
        match policy {
            Misfire::FireOnce => fires.push(PlannedFire {
                scheduled_for: latest,
                skipped: false,
                reason: Some(format!(
                    "misfired: fired once for {n} missed fire {} ({} earlier skipped)",
                    noun(n),
                    n - 1
                )),
            }),
            Misfire::Skip => fires.push(PlannedFire {
                scheduled_for: latest,
                skipped: true,
                reason: Some(format!("misfired: skipped {n} missed fire {}", noun(n))),
            }),
            Misfire::CatchUp => {
                let replayed = p.replay.len() as u64;
                fires.extend(p.replay.iter().zip(1u64..).map(|(&t, i)| {
                    let mut reason = format!("misfired: caught up missed fire time {i} of {n}");
                    if i == replayed && n > replayed {
                        let rest = n - replayed;
                        reason.push_str(&format!("; {rest} more missed fire {} not replayed", noun(rest)));
                    }
                    PlannedFire { scheduled_for: t, skipped: false, reason: Some(reason) }
                }));
            }
        }
    }
    fires.extend(p.on_time.into_iter().map(|t| PlannedFire { scheduled_for: t, skipped: false, reason: None }));
    FirePlan { fires, fires_added: p.total, missed: p.missed, next_fire_at: p.next }
}

fn noun(n: u64) -> &'static str {
    if n == 1 {
        "time"
    } else {
        "times"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TriggerKind;

    const MINUTE: Duration = Duration::from_secs(60);

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(kind: TriggerKind, misfire: Misfire) -> TriggerSpec {
        TriggerSpec {
            kind,
            start_at: None,
            end_at: None,
            max_fires: None,
            misfire,
            catch_up_limit: (misfire == Misfire::CatchUp).then_some(DEFAULT_CATCH_UP_LIMIT),
            calendars: vec![],
        }
    }

    fn every(secs: u64) -> TriggerKind {
        TriggerKind::Interval { every: Duration::from_secs(secs) }
    }

    fn cron(expr: &str, tz: &str) -> TriggerKind {
        TriggerKind::Cron { expr: expr.into(), timezone: tz.into() }
    }

    fn on_time(t: &str) -> PlannedFire {
        PlannedFire { scheduled_for: ts(t), skipped: false, reason: None }
    }

    fn times(plan: &FirePlan) -> Vec<Timestamp> {
        plan.fires.iter().map(|f| f.scheduled_for).collect()
    }

    /// Every minute from 10:00 to 11:00 is due at 11:00:30 (61 times); with a 60 s threshold
    /// 10:00–10:59 (60) are missed and 11:00 is on time.
    fn an_hour_behind(misfire: Misfire) -> FirePlan {
        plan(&spec(every(60), misfire), ts("2026-05-01T10:00:00Z"), 0, ts("2026-05-01T11:00:30Z"), MINUTE)
    }

    #[test]
    fn on_time_due_times_each_fire_normally() {
        let p = plan(
            &spec(every(10), Misfire::FireOnce),
            ts("2026-05-01T10:00:00Z"),
            0,
            ts("2026-05-01T10:00:25Z"),
            MINUTE,
        );
        assert_eq!(
            p.fires,
            [on_time("2026-05-01T10:00:00Z"), on_time("2026-05-01T10:00:10Z"), on_time("2026-05-01T10:00:20Z")]
        );
        assert_eq!((p.fires_added, p.missed), (3, 0), "nothing missed");
        assert_eq!(p.next_fire_at, Some(ts("2026-05-01T10:00:30Z")));
    }

    #[test]
    fn every_policy_counts_every_missed_time() {
        for policy in [Misfire::FireOnce, Misfire::Skip, Misfire::CatchUp] {
            assert_eq!(an_hour_behind(policy).missed, 60, "{policy:?}");
        }
        let cron_behind = plan(
            &spec(cron("*/10 * * * * *", "UTC"), Misfire::Skip),
            ts("2026-05-01T10:00:00Z"),
            0,
            ts("2026-05-01T10:02:05Z"),
            MINUTE,
        );
        // 10:00:00 … 10:01:00 (7 times) are more than 60 s late; 10:01:10 … 10:02:00 are not.
        assert_eq!((cron_behind.missed, cron_behind.fires_added), (7, 13));
    }

    #[test]
    fn a_time_exactly_threshold_late_is_on_time_and_one_more_nanosecond_is_missed() {
        let s = spec(every(3600), Misfire::Skip);
        let p = plan(&s, ts("2026-05-01T10:00:00Z"), 0, ts("2026-05-01T10:01:00Z"), MINUTE);
        assert_eq!(p.fires, [on_time("2026-05-01T10:00:00Z")]);
        let p = plan(&s, ts("2026-05-01T10:00:00Z"), 0, ts("2026-05-01T10:01:00.000000001Z"), MINUTE);
        assert!(p.fires[0].skipped);
    }

    #[test]
    fn fire_once_runs_the_latest_missed_time_and_counts_the_others() {
        let p = an_hour_behind(Misfire::FireOnce);
        assert_eq!(
            p.fires,
            [
                PlannedFire {
                    scheduled_for: ts("2026-05-01T10:59:00Z"),
                    skipped: false,
                    reason: Some("misfired: fired once for 60 missed fire times (59 earlier skipped)".into()),
                },
                on_time("2026-05-01T11:00:00Z"),
            ]
        );
        assert_eq!(p.fires_added, 61);
        assert_eq!(p.next_fire_at, Some(ts("2026-05-01T11:01:00Z")));
    }

    #[test]
    fn fire_once_for_a_single_missed_time_says_so() {
        let p = plan(
            &spec(every(3600), Misfire::FireOnce),
            ts("2026-05-01T10:00:00Z"),
            0,
            ts("2026-05-01T10:30:00Z"),
            MINUTE,
        );
        assert_eq!(p.fires.len(), 1);
        assert_eq!(
            p.fires[0].reason.as_deref(),
            Some("misfired: fired once for 1 missed fire time (0 earlier skipped)")
        );
        assert_eq!(p.fires_added, 1);
    }

    #[test]
    fn skip_records_one_skipped_run_at_the_latest_missed_time_counting_them() {
        let p = an_hour_behind(Misfire::Skip);
        assert_eq!(
            p.fires,
            [
                PlannedFire {
                    scheduled_for: ts("2026-05-01T10:59:00Z"),
                    skipped: true,
                    reason: Some("misfired: skipped 60 missed fire times".into()),
                },
                on_time("2026-05-01T11:00:00Z"),
            ]
        );
        assert_eq!(p.fires_added, 61);
        assert_eq!(p.next_fire_at, Some(ts("2026-05-01T11:01:00Z")));
    }

    #[test]
    fn catch_up_replays_the_oldest_up_to_the_default_limit_and_counts_the_rest() {
        let p = an_hour_behind(Misfire::CatchUp);
        assert_eq!(p.fires.len(), 11);
        let replayed: Vec<Timestamp> = p.fires[..10].iter().map(|f| f.scheduled_for).collect();
        let expected: Vec<Timestamp> = (0..10).map(|m| ts("2026-05-01T10:00:00Z") + TimeDelta::minutes(m)).collect();
        assert_eq!(replayed, expected);
        assert!(p.fires.iter().all(|f| !f.skipped));
        assert_eq!(p.fires[0].reason.as_deref(), Some("misfired: caught up missed fire time 1 of 60"));
        assert_eq!(
            p.fires[9].reason.as_deref(),
            Some("misfired: caught up missed fire time 10 of 60; 50 more missed fire times not replayed")
        );
        assert_eq!(p.fires[10], on_time("2026-05-01T11:00:00Z"));
        assert_eq!(p.fires_added, 61);
        assert_eq!(p.next_fire_at, Some(ts("2026-05-01T11:01:00Z")));
    }

    #[test]
    fn catch_up_with_a_custom_limit_counts_a_single_remainder() {
        let mut s = spec(every(60), Misfire::CatchUp);
        s.catch_up_limit = Some(2);
        let p = plan(&s, ts("2026-05-01T10:00:00Z"), 0, ts("2026-05-01T10:03:30Z"), MINUTE);
        // 10:00, 10:01, 10:02 missed; 10:03 on time.
        assert_eq!(times(&p), [ts("2026-05-01T10:00:00Z"), ts("2026-05-01T10:01:00Z"), ts("2026-05-01T10:03:00Z")]);
        assert_eq!(
            p.fires[1].reason.as_deref(),
            Some("misfired: caught up missed fire time 2 of 3; 1 more missed fire time not replayed")
        );
        assert_eq!(p.fires_added, 4);
    }

    #[test]
    fn catch_up_within_the_limit_replays_every_missed_time() {
        let p =
            plan(&spec(every(60), Misfire::CatchUp), ts("2026-05-01T10:00:00Z"), 0, ts("2026-05-01T10:03:30Z"), MINUTE);
        assert_eq!(p.fires.len(), 4);
        assert_eq!(p.fires[2].reason.as_deref(), Some("misfired: caught up missed fire time 3 of 3"));
        assert_eq!(p.fires[3].reason, None);
    }

    #[test]
    fn max_fires_stops_the_trigger_counting_fires_already_made() {
        let mut s = spec(every(60), Misfire::FireOnce);
        s.max_fires = Some(5);
        // 61 times due, 2 already counted: only 3 more, all missed (10:00–10:02).
        let p = plan(&s, ts("2026-05-01T10:00:00Z"), 2, ts("2026-05-01T11:00:30Z"), MINUTE);
        assert_eq!(p.fires_added, 3);
        assert_eq!(p.next_fire_at, None);
        assert_eq!(p.fires.len(), 1);
        assert_eq!(p.fires[0].scheduled_for, ts("2026-05-01T10:02:00Z"));
        assert_eq!(
            p.fires[0].reason.as_deref(),
            Some("misfired: fired once for 3 missed fire times (2 earlier skipped)")
        );
    }

    #[test]
    fn max_fires_reached_on_time_ends_the_trigger() {
        let mut s = spec(cron("* * * * *", "UTC"), Misfire::FireOnce);
        s.max_fires = Some(3);
        let p = plan(&s, ts("2026-05-01T10:00:00Z"), 1, ts("2026-05-01T10:01:00Z"), MINUTE);
        assert_eq!(p.fires, [on_time("2026-05-01T10:00:00Z"), on_time("2026-05-01T10:01:00Z")]);
        assert_eq!(p.fires_added, 2);
        assert_eq!(p.next_fire_at, None);
        // Already at the cap: nothing more.
        let p = plan(&s, ts("2026-05-01T10:02:00Z"), 3, ts("2026-05-01T10:02:00Z"), MINUTE);
        assert_eq!((p.fires.len(), p.fires_added, p.next_fire_at), (0, 0, None));
    }

    #[test]
    fn end_at_stops_the_trigger() {
        let mut s = spec(every(60), Misfire::CatchUp);
        s.end_at = Some(ts("2026-05-01T10:02:30Z"));
        let p = plan(&s, ts("2026-05-01T10:00:00Z"), 0, ts("2026-05-01T11:00:00Z"), MINUTE);
        assert_eq!(times(&p), [ts("2026-05-01T10:00:00Z"), ts("2026-05-01T10:01:00Z"), ts("2026-05-01T10:02:00Z")]);
        assert_eq!(p.fires_added, 3);
        assert_eq!(p.next_fire_at, None);

        let mut s = spec(cron("0 * * * *", "UTC"), Misfire::FireOnce);
        s.end_at = Some(ts("2026-05-01T12:00:00Z"));
        let p = plan(&s, ts("2026-05-01T11:00:00Z"), 0, ts("2026-05-01T11:00:05Z"), MINUTE);
        assert_eq!(p.next_fire_at, Some(ts("2026-05-01T12:00:00Z")));
        let p = plan(&s, ts("2026-05-01T12:00:00Z"), 1, ts("2026-05-01T12:00:05Z"), MINUTE);
        assert_eq!(p.fires, [on_time("2026-05-01T12:00:00Z")]);
        assert_eq!(p.next_fire_at, None);
    }

    #[test]
    fn a_trigger_not_due_yet_keeps_its_time() {
        let p = plan(
            &spec(cron("0 * * * *", "UTC"), Misfire::FireOnce),
            ts("2026-05-01T12:00:00Z"),
            0,
            ts("2026-05-01T11:00:00Z"),
            MINUTE,
        );
        assert_eq!((p.fires.len(), p.fires_added, p.next_fire_at), (0, 0, Some(ts("2026-05-01T12:00:00Z"))));
    }

    #[test]
    fn once_fires_and_is_consumed() {
        let at = ts("2026-05-01T10:00:00Z");
        let p = plan(&spec(TriggerKind::Once { at }, Misfire::FireOnce), at, 0, ts("2026-05-01T10:00:01Z"), MINUTE);
        assert_eq!(p.fires, [on_time("2026-05-01T10:00:00Z")]);
        assert_eq!((p.fires_added, p.next_fire_at), (1, None));
    }

    #[test]
    fn once_missed_follows_the_policy() {
        let at = ts("2026-05-01T10:00:00Z");
        let later = ts("2026-05-02T10:00:00Z");
        let p = plan(&spec(TriggerKind::Once { at }, Misfire::Skip), at, 0, later, MINUTE);
        assert_eq!(
            p.fires,
            [PlannedFire {
                scheduled_for: at,
                skipped: true,
                reason: Some("misfired: skipped 1 missed fire time".into())
            }]
        );
        assert_eq!((p.fires_added, p.next_fire_at), (1, None));
        let p = plan(&spec(TriggerKind::Once { at }, Misfire::CatchUp), at, 0, later, MINUTE);
        assert_eq!(p.fires[0].reason.as_deref(), Some("misfired: caught up missed fire time 1 of 1"));
    }

    #[test]
    fn interval_plan_across_downtime_stays_on_the_grid() {
        // Every 15 s from 10:00:05; down until 10:10:00 with a 60 s threshold.
        let p = plan(
            &spec(every(15), Misfire::FireOnce),
            ts("2026-05-01T10:00:05Z"),
            7,
            ts("2026-05-01T10:10:00Z"),
            MINUTE,
        );
        // Due 10:00:05 … 10:09:50 = 40 times; missed are before 10:09:00 (36), on time 4.
        assert_eq!(p.fires_added, 40);
        assert_eq!(
            times(&p),
            [
                ts("2026-05-01T10:08:50Z"),
                ts("2026-05-01T10:09:05Z"),
                ts("2026-05-01T10:09:20Z"),
                ts("2026-05-01T10:09:35Z"),
                ts("2026-05-01T10:09:50Z"),
            ]
        );
        assert_eq!(
            p.fires[0].reason.as_deref(),
            Some("misfired: fired once for 36 missed fire times (35 earlier skipped)")
        );
        assert_eq!(p.next_fire_at, Some(ts("2026-05-01T10:10:05Z")));
    }

    #[test]
    fn cron_plan_across_downtime_fires_once_for_the_missed_hours() {
        let p = plan(
            &spec(cron("0 * * * *", "Europe/Berlin"), Misfire::FireOnce),
            ts("2026-05-01T08:00:00Z"),
            0,
            ts("2026-05-01T12:00:30Z"),
            MINUTE,
        );
        assert_eq!(p.fires_added, 5);
        assert_eq!(times(&p), [ts("2026-05-01T11:00:00Z"), ts("2026-05-01T12:00:00Z")]);
        assert_eq!(
            p.fires[0].reason.as_deref(),
            Some("misfired: fired once for 4 missed fire times (3 earlier skipped)")
        );
        assert_eq!(p.next_fire_at, Some(ts("2026-05-01T13:00:00Z")));
    }

    #[test]
    fn cron_plan_across_fall_back_counts_the_repeated_hour_once() {
        let day = Duration::from_secs(86_400);
        let p = plan(
            &spec(cron("0 * * * *", "America/New_York"), Misfire::CatchUp),
            ts("2026-11-01T00:00:00-04:00"),
            0,
            ts("2026-11-01T03:00:30-05:00"),
            day,
        );
        assert_eq!(
            times(&p),
            [
                ts("2026-11-01T00:00:00-04:00"),
                ts("2026-11-01T01:00:00-04:00"),
                ts("2026-11-01T02:00:00-05:00"),
                ts("2026-11-01T03:00:00-05:00"),
            ]
        );
        assert_eq!(p.fires_added, 4);
    }

    #[test]
    fn cron_plan_across_a_gap_counts_the_gap_once() {
        let p = plan(
            &spec(cron("*/15 2 * * *", "Europe/Berlin"), Misfire::Skip),
            ts("2026-03-28T02:00:00+01:00"),
            0,
            ts("2026-03-29T23:00:00Z"),
            Duration::from_secs(7 * 86_400),
        );
        assert_eq!(
            times(&p),
            [
                ts("2026-03-28T02:00:00+01:00"),
                ts("2026-03-28T02:15:00+01:00"),
                ts("2026-03-28T02:30:00+01:00"),
                ts("2026-03-28T02:45:00+01:00"),
                ts("2026-03-29T03:00:00+02:00"),
            ]
        );
        assert_eq!(p.fires_added, 5);
        assert_eq!(p.next_fire_at, Some(ts("2026-03-30T02:00:00+02:00")));
    }

    #[test]
    fn start_at_after_the_stored_time_moves_the_first_due_time() {
        let mut s = spec(cron("0 * * * *", "UTC"), Misfire::FireOnce);
        s.start_at = Some(ts("2026-05-01T11:30:00Z"));
        let p = plan(&s, ts("2026-05-01T10:00:00Z"), 0, ts("2026-05-01T12:00:10Z"), MINUTE);
        assert_eq!(p.fires, [on_time("2026-05-01T12:00:00Z")]);
        assert_eq!(p.fires_added, 1);
    }

    #[test]
    fn fires_added_counts_every_due_time_whatever_became_of_it() {
        for misfire in [Misfire::FireOnce, Misfire::Skip, Misfire::CatchUp] {
            assert_eq!(an_hour_behind(misfire).fires_added, 61, "{misfire:?}");
        }
    }

    #[test]
    fn interval_a_week_behind_every_second_is_counted_not_enumerated() {
        let start = std::time::Instant::now();
        let p = plan(&spec(every(1), Misfire::Skip), ts("2026-01-01T00:00:00Z"), 0, ts("2026-01-08T00:00:00Z"), MINUTE);
        assert_eq!(p.fires_added, 7 * 86_400 + 1);
        // One skipped summary for the 604 740 missed, then the last minute on time.
        assert_eq!(p.fires.len(), 1 + 61);
        assert_eq!(p.fires[0].reason.as_deref(), Some("misfired: skipped 604740 missed fire times"));
        assert_eq!(p.fires[0].scheduled_for, ts("2026-01-07T23:58:59Z"));
        assert_eq!(p.next_fire_at, Some(ts("2026-01-08T00:00:01Z")));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn cron_far_behind_is_planned_in_slices_of_plan_limit_counting_every_time() {
        let s = spec(cron("* * * * * *", "UTC"), Misfire::FireOnce);
        let now = ts("2026-01-03T00:00:00Z");
        let mut next = ts("2026-01-01T00:00:00Z");
        let first = plan(&s, next, 0, now, MINUTE);
        assert_eq!(first.fires_added, PLAN_LIMIT);
        assert_eq!(first.fires.len(), 1);
        assert_eq!(first.next_fire_at, Some(next + TimeDelta::seconds(PLAN_LIMIT as i64)));

        let (mut total, mut slices) = (0, 0);
        while next <= now {
            let p = plan(&s, next, total, now, MINUTE);
            total += p.fires_added;
            slices += 1;
            next = p.next_fire_at.unwrap();
        }
        assert_eq!(total, 2 * 86_400 + 1);
        assert_eq!(slices, 2);
        assert_eq!(next, ts("2026-01-03T00:00:01Z"));
    }
}
