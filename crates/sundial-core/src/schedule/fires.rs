//! Sequences of due times: the fires a trigger has left ([`fires_after`], what previews show),
//! a job's previews merged across triggers ([`preview`]), and every due time in a range
//! ([`due_times`], what a backfill creates runs for). All of them step with the same
//! [`Schedule::next_after`] the scheduler plans real fires with, and apply `start_at`, `end_at` and
//! calendars the same way.

use super::calendar::{excluded, Calendar};
use super::{first_fire, Schedule};
use crate::domain::{FieldError, Timestamp, Trigger, TriggerKind, TriggerSpec};
use chrono::{DateTime, FixedOffset};

/// Schedule times [`Fires`] steps over (excluded by calendars, or before `after` while counting
/// toward `max_fires`) before it gives up and ends: bounds one `next()` on a schedule whose
/// calendars exclude (nearly) everything.
pub const SCAN_LIMIT: usize = 1_000_000;

/// Most items a preview answers with.
pub const PREVIEW_LIMIT: usize = 1000;

/// Most due times one [`due_times`] call returns (a backfill's cap).
pub const BACKFILL_LIMIT: usize = 10_000;

/// The remaining fires of a trigger, in time order. Made by [`fires_after`].
#[derive(Debug, Clone)]
pub struct Fires<'a> {
    schedule: Option<Schedule>,
    /// The next schedule time to look at (already a due time of the schedule).
    cursor: Option<Timestamp>,
    start_at: Option<Timestamp>,
    end_at: Option<Timestamp>,
    /// Fires left (`max_fires − fires`); `None` without a cap.
    left: Option<u64>,
    after: Timestamp,
    calendars: &'a [Calendar],
}

/// The fires of a trigger strictly after `after`, continuing from its stored state: the next
/// due time `next_fire_at` (`None`: no fire left) and `fires` already counted.
///
/// Honours `start_at`, `end_at`, the fires left (`max_fires − fires`, counting every due time from
/// `next_fire_at` on, including those up to `after`) and `calendars` (an excluded time is not a
/// fire and is not counted). An interval stays on the grid through `next_fire_at`.
pub fn fires_after<'a>(
    spec: &TriggerSpec,
    next_fire_at: Option<Timestamp>,
    fires: u64,
    after: Timestamp,
    calendars: &'a [Calendar],
) -> Fires<'a> {
    let schedule = next_fire_at.and_then(|anchor| Schedule::compile(&spec.kind, anchor).ok());
    let left = spec.max_fires.map(|m| m.saturating_sub(fires));
    let mut cursor = next_fire_at.filter(|_| schedule.is_some());
    // Without a cap nothing before `after` needs counting: jump there.
    if let (None, Some(s), Some(c)) = (left, &schedule, cursor) {
        if c <= after {
            cursor = s.next_after(after);
        }
    }
    Fires { schedule, cursor, start_at: spec.start_at, end_at: spec.end_at, left, after, calendars }
}

impl Iterator for Fires<'_> {
    type Item = Timestamp;

    fn next(&mut self) -> Option<Timestamp> {
        let schedule = self.schedule.as_ref()?;
        for _ in 0..SCAN_LIMIT {
            let t = self.cursor?;
            if self.end_at.is_some_and(|end| t > end) || self.left == Some(0) {
                self.cursor = None;
                return None;
            }
            if let Some(start) = self.start_at.filter(|s| t < *s) {
                self.cursor = schedule.next_at_or_after(start);
                continue;
            }
            self.cursor = schedule.next_after(t);
            if excluded(self.calendars, t) {
                continue;
            }
            if let Some(left) = &mut self.left {
                *left -= 1;
            }
            if t > self.after {
                return Some(t);
            }
        }
        self.cursor = None;
        None
    }
}

/// One previewed fire (API.md "Preview" item).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PreviewFire {
    /// The trigger it belongs to; null for a trigger that is not saved.
    pub trigger_id: Option<String>,
    /// The due time, UTC.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The same instant in the trigger's zone with its offset (`+00:00` for once and interval).
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "with_offset")]
    pub local: DateTime<FixedOffset>,
}

/// RFC 3339 with the numeric offset even when it is zero (chrono's serde writes `Z`).
fn with_offset<S: serde::Serializer>(t: &DateTime<FixedOffset>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
}

/// The instant `at` in the zone of a trigger of kind `kind`.
fn local(kind: &TriggerKind, at: Timestamp) -> DateTime<FixedOffset> {
    match kind {
        TriggerKind::Cron { timezone, .. } => match timezone.parse::<chrono_tz::Tz>() {
            Ok(tz) => at.with_timezone(&tz).fixed_offset(),
            Err(_) => at.fixed_offset(),
        },
        _ => at.fixed_offset(),
    }
}

/// A job's next `limit` fires strictly after `after`, all its triggers merged in time order (a
/// tie keeps the triggers' order). Each trigger comes with the calendars it names.
pub fn preview(triggers: &[(&Trigger, &[Calendar])], after: Timestamp, limit: usize) -> Vec<PreviewFire> {
    let mut streams: Vec<_> = triggers
        .iter()
        .map(|(t, cals)| fires_after(&t.spec, t.next_fire_at, t.fires, after, cals).peekable())
        .collect();
    let mut out = Vec::with_capacity(limit.min(PREVIEW_LIMIT));
    while out.len() < limit {
        let next = streams.iter_mut().enumerate().filter_map(|(i, s)| s.peek().map(|t| (*t, i))).min();
        let Some((at, i)) = next else { break };
        streams[i].next();
        let trigger = triggers[i].0;
        out.push(PreviewFire { trigger_id: Some(trigger.id.clone()), at, local: local(&trigger.spec.kind, at) });
    }
    out
}

/// The next `limit` fires strictly after `after` of a trigger that is not saved, as if it were
/// created at `after` (`trigger_id` null).
pub fn preview_unsaved(spec: &TriggerSpec, calendars: &[Calendar], after: Timestamp, limit: usize) -> Vec<PreviewFire> {
    let next = first_fire(spec, after);
    fires_after(spec, next, 0, after, calendars)
        .take(limit)
        .map(|at| PreviewFire { trigger_id: None, at, local: local(&spec.kind, at) })
        .collect()
}

/// Every due time `t` of a trigger with `from ≤ t < until`, oldest first, for a backfill.
///
/// Follows the schedule, `start_at`, `end_at` and `calendars`, ignores `max_fires`, and reaches
/// before the trigger's creation. `anchor` is any instant on the trigger's schedule (its
/// `next_fire_at` or first fire): an interval's grid runs through it; cron and once ignore it.
/// Errors on `until` when the range holds more than `cap` due times, or when more than
/// [`SCAN_LIMIT`] schedule times would have to be looked at (calendars excluding most of them).
pub fn due_times(
    spec: &TriggerSpec,
    anchor: Timestamp,
    from: Timestamp,
    until: Timestamp,
    calendars: &[Calendar],
    cap: usize,
) -> Result<Vec<Timestamp>, FieldError> {
    let schedule = Schedule::compile(&spec.kind, anchor)?;
    let lower = spec.start_at.map_or(from, |s| s.max(from));
    let mut out = Vec::new();
    let mut t = schedule.next_at_or_after(lower);
    let mut scanned = 0usize;
    while let Some(at) = t.filter(|at| *at < until && spec.end_at.is_none_or(|end| *at <= end)) {
        scanned += 1;
        if scanned > SCAN_LIMIT {
            return Err(FieldError::new(
                "until",
                format!("the range is too long to scan: more than {SCAN_LIMIT} schedule times"),
            ));
        }
        if !excluded(calendars, at) {
            if out.len() == cap {
                return Err(FieldError::new("until", format!("the range holds more than {cap} due times")));
            }
            out.push(at);
        }
        t = schedule.next_after(at);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cron, every, spec, ts};
    use super::*;
    use serde_json::json;

    fn trigger(id: &str, spec: TriggerSpec, next_fire_at: Option<&str>, fires: u64) -> Trigger {
        Trigger { id: id.into(), spec, next_fire_at: next_fire_at.map(ts), fires }
    }

    fn calendar(tz: &str, exclude: serde_json::Value) -> Calendar {
        Calendar::new("c", Some(tz), exclude.as_array().unwrap()).unwrap()
    }

    fn shown(times: impl IntoIterator<Item = Timestamp>) -> Vec<String> {
        times.into_iter().map(|t| t.to_rfc3339()).collect()
    }

    #[test]
    fn fires_after_is_strictly_after_and_continues_from_next_fire_at() {
        let s = spec(cron("0 * * * *", "UTC"));
        let f = fires_after(&s, Some(ts("2026-05-01T10:00:00Z")), 0, ts("2026-05-01T12:00:00Z"), &[]);
        assert_eq!(shown(f.take(2)), ["2026-05-01T13:00:00+00:00", "2026-05-01T14:00:00+00:00"]);
        // `after` before the stored next due time: the times before it already fired.
        let f = fires_after(&s, Some(ts("2026-05-01T10:00:00Z")), 0, ts("2026-05-01T08:30:00Z"), &[]);
        assert_eq!(shown(f.take(1)), ["2026-05-01T10:00:00+00:00"]);
        assert_eq!(fires_after(&s, None, 0, ts("2026-05-01T08:30:00Z"), &[]).count(), 0);
    }

    #[test]
    fn fires_left_count_every_due_time_from_next_fire_at() {
        let mut s = spec(cron("0 * * * *", "UTC"));
        s.max_fires = Some(5);
        // 2 fired; 3 left: 10:00, 11:00, 12:00. After 10:30 only 11:00 and 12:00 remain.
        let f = fires_after(&s, Some(ts("2026-05-01T10:00:00Z")), 2, ts("2026-05-01T10:30:00Z"), &[]);
        assert_eq!(shown(f), ["2026-05-01T11:00:00+00:00", "2026-05-01T12:00:00+00:00"]);
        assert_eq!(fires_after(&s, Some(ts("2026-05-01T10:00:00Z")), 5, ts("2026-05-01T00:00:00Z"), &[]).count(), 0);
    }

    #[test]
    fn fires_honour_start_at_and_end_at() {
        let mut s = spec(every(3600));
        s.start_at = Some(ts("2026-05-01T10:00:00Z"));
        s.end_at = Some(ts("2026-05-01T12:00:00Z"));
        let f = fires_after(&s, Some(ts("2026-05-01T10:00:00Z")), 0, ts("2026-05-01T09:00:00Z"), &[]);
        assert_eq!(shown(f), ["2026-05-01T10:00:00+00:00", "2026-05-01T11:00:00+00:00", "2026-05-01T12:00:00+00:00"]);
        let mut c = spec(cron("0 * * * *", "UTC"));
        c.start_at = Some(ts("2026-05-01T10:30:00Z"));
        let f = fires_after(&c, Some(ts("2026-05-01T09:00:00Z")), 0, ts("2026-05-01T08:00:00Z"), &[]);
        assert_eq!(shown(f.take(1)), ["2026-05-01T11:00:00+00:00"]);
    }

    #[test]
    fn excluded_times_are_not_fires_and_not_counted() {
        let weekend = [calendar("UTC", json!([{"cron": "* * * * SAT,SUN"}]))];
        let mut s = spec(cron("0 9 * * *", "UTC"));
        s.max_fires = Some(3);
        // From Friday 2026-05-01 09:00: Friday, (Sat, Sun excluded), Monday, Tuesday.
        let f = fires_after(&s, Some(ts("2026-05-01T09:00:00Z")), 0, ts("2026-05-01T00:00:00Z"), &weekend);
        assert_eq!(shown(f), ["2026-05-01T09:00:00+00:00", "2026-05-04T09:00:00+00:00", "2026-05-05T09:00:00+00:00"]);
    }

    #[test]
    fn a_calendar_excluding_everything_ends_the_sequence() {
        let all = [calendar("UTC", json!([{"cron": "* * * * *"}]))];
        let s = spec(every(60));
        assert_eq!(fires_after(&s, Some(ts("2026-05-01T00:00:00Z")), 0, ts("2026-05-01T00:00:00Z"), &all).next(), None);
    }

    #[test]
    fn preview_merges_triggers_in_time_order_with_local_times() {
        let a = trigger("a", spec(cron("30 2 * * *", "Europe/Berlin")), Some("2026-03-28T01:30:00Z"), 0);
        let b = trigger("b", spec(every(12 * 3600)), Some("2026-03-28T12:00:00Z"), 0);
        let once =
            trigger("c", spec(TriggerKind::Once { at: ts("2026-03-29T00:30:00Z") }), Some("2026-03-29T00:30:00Z"), 0);
        let items = preview(&[(&a, &[]), (&b, &[]), (&once, &[])], ts("2026-03-28T00:00:00Z"), 5);
        let got: Vec<(String, String, String)> =
            items.iter().map(|p| (p.trigger_id.clone().unwrap(), p.at.to_rfc3339(), p.local.to_rfc3339())).collect();
        let row = |id: &str, at: &str, local: &str| (id.to_string(), at.to_string(), local.to_string());
        assert_eq!(
            got,
            [
                row("a", "2026-03-28T01:30:00+00:00", "2026-03-28T02:30:00+01:00"),
                row("b", "2026-03-28T12:00:00+00:00", "2026-03-28T12:00:00+00:00"),
                row("b", "2026-03-29T00:00:00+00:00", "2026-03-29T00:00:00+00:00"),
                row("c", "2026-03-29T00:30:00+00:00", "2026-03-29T00:30:00+00:00"),
                // 02:30 does not exist that night: the end of the gap.
                row("a", "2026-03-29T01:00:00+00:00", "2026-03-29T03:00:00+02:00"),
            ]
        );
        assert_eq!(preview(&[(&a, &[]), (&b, &[])], ts("2026-03-28T00:00:00Z"), 0).len(), 0);
    }

    #[test]
    fn unsaved_preview_is_as_if_created_at_after() {
        let items = preview_unsaved(&spec(every(600)), &[], ts("2026-05-01T10:00:00Z"), 2);
        assert_eq!(shown(items.iter().map(|p| p.at)), ["2026-05-01T10:10:00+00:00", "2026-05-01T10:20:00+00:00"]);
        assert!(items.iter().all(|p| p.trigger_id.is_none()));
        let once = spec(TriggerKind::Once { at: ts("2026-05-01T10:00:00Z") });
        assert!(preview_unsaved(&once, &[], ts("2026-05-01T10:00:00Z"), 2).is_empty());
        assert_eq!(preview_unsaved(&once, &[], ts("2026-05-01T09:00:00Z"), 2).len(), 1);
    }

    #[test]
    fn due_times_cover_the_half_open_range_and_ignore_max_fires() {
        let mut s = spec(cron("0 * * * *", "UTC"));
        s.max_fires = Some(1);
        let got =
            due_times(&s, ts("2026-05-01T00:00:00Z"), ts("2026-05-01T10:00:00Z"), ts("2026-05-01T13:00:00Z"), &[], 100);
        assert_eq!(
            shown(got.unwrap()),
            ["2026-05-01T10:00:00+00:00", "2026-05-01T11:00:00+00:00", "2026-05-01T12:00:00+00:00"]
        );
    }

    #[test]
    fn due_times_follow_the_interval_grid_window_and_calendars() {
        let mut s = spec(every(3600));
        s.start_at = Some(ts("2026-05-01T09:30:00Z"));
        s.end_at = Some(ts("2026-05-01T12:30:00Z"));
        let lunch =
            [calendar("Europe/Berlin", json!([{"from": "2026-05-01T13:00:00", "until": "2026-05-01T14:00:00"}]))];
        // Grid through 09:30; the window cuts 08:30 and 13:30; 11:30Z is 13:30 in Berlin.
        let got = due_times(
            &s,
            ts("2026-05-01T09:30:00Z"),
            ts("2026-05-01T08:00:00Z"),
            ts("2026-05-01T15:00:00Z"),
            &lunch,
            100,
        );
        assert_eq!(
            shown(got.unwrap()),
            ["2026-05-01T09:30:00+00:00", "2026-05-01T10:30:00+00:00", "2026-05-01T12:30:00+00:00"]
        );
    }

    #[test]
    fn due_times_reach_before_creation_and_include_a_once_in_range() {
        let s = spec(TriggerKind::Once { at: ts("2026-05-01T10:00:00Z") });
        let anchor = ts("2026-05-01T10:00:00Z");
        assert_eq!(
            due_times(&s, anchor, ts("2026-05-01T10:00:00Z"), ts("2026-05-01T10:00:01Z"), &[], 10).unwrap().len(),
            1
        );
        assert!(due_times(&s, anchor, ts("2026-05-01T09:00:00Z"), ts("2026-05-01T10:00:00Z"), &[], 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn due_times_over_the_cap_is_an_until_error() {
        let s = spec(cron("* * * * * *", "UTC"));
        let from = ts("2026-05-01T00:00:00Z");
        let ok = due_times(&s, from, from, ts("2026-05-01T00:00:10Z"), &[], 10).unwrap();
        assert_eq!(ok.len(), 10);
        let err = due_times(&s, from, from, ts("2026-05-01T00:00:11Z"), &[], 10).unwrap_err();
        assert_eq!(err.path, "until");
        assert_eq!(err.message, "the range holds more than 10 due times");
        let err = due_times(&s, from, from, ts("2026-05-02T00:00:00Z"), &[], BACKFILL_LIMIT).unwrap_err();
        assert_eq!(err.message, "the range holds more than 10000 due times");
    }
}
