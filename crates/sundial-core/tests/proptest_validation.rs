//! Property tests for hostile input: job validation and next-fire computation never panic,
//! always answer within a bound, and a next fire is strictly after the instant asked about.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use std::time::{Duration, Instant};
use sundial_core::domain::job::JobRequest;
use sundial_core::schedule::{first_fire, validate_job, Schedule};

/// Any single computation must answer well within this (a hang fails instead of stalling CI).
const BOUND: Duration = Duration::from_secs(2);

/// A cron field made of the characters cron fields use, valid or not.
fn hostile_cron_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (0u32..70).prop_map(|n| n.to_string()),
        "[0-9*/,LW#?-]{1,6}",
        "(JAN|FEB|DEC|MON|SUN|SAT|jan|xyz)",
        (0u32..60, 1u32..30).prop_map(|(a, b)| format!("{a}/{b}")),
        (0u32..31, 0u32..31).prop_map(|(a, b)| format!("{a}-{b}")),
        (1u32..32).prop_map(|d| format!("{d}W")),
    ]
}

/// A field that is valid for a position whose values run `lo..=hi` (random input alone almost
/// never makes a valid expression, which would leave the next-fire properties untested).
fn valid_cron_field(lo: u32, hi: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (lo..=hi).prop_map(|n| n.to_string()),
        (lo..=hi, 1u32..=hi.max(2)).prop_map(|(a, b)| format!("{a}/{b}")),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{a},{b}")),
        (1u32..=hi.max(2)).prop_map(|s| format!("*/{s}")),
    ]
}

/// Five valid fields (minute hour day-of-month month day-of-week), optionally led by seconds;
/// day 29..31 with a short month makes rare schedules, which is the point.
fn valid_cron_expr() -> impl Strategy<Value = String> {
    (
        prop::option::of(valid_cron_field(0, 59)),
        valid_cron_field(0, 59),
        valid_cron_field(0, 23),
        valid_cron_field(1, 31),
        valid_cron_field(1, 12),
        prop_oneof![valid_cron_field(0, 6), Just("MON-FRI".to_string()), Just("5L".to_string())],
    )
        .prop_map(|(sec, min, hour, dom, mon, dow)| {
            let five = format!("{min} {hour} {dom} {mon} {dow}");
            sec.map_or(five.clone(), |s| format!("{s} {five}"))
        })
}

fn cron_expr() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => valid_cron_expr(),
        1 => prop::collection::vec(hostile_cron_field(), 4..=7).prop_map(|f| f.join(" ")),
    ]
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // Years 1970..=2400, any second.
    (0i64..13_569_465_600).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,12}(ns|us|ms|s|m|h|d|days|y)",
        "[0-9a-z ]{0,12}",
        Just("1ns".to_string()),
        Just("18446744073709551615s".to_string()),
    ]
}

fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        instant().prop_map(|t| t.to_rfc3339()),
        Just("9999-12-31T23:59:59-23:59".to_string()),
        Just("0001-01-01T00:00:00+23:59".to_string()),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
    ]
}

/// A well-formed trigger of each kind, with an optional window and fire cap.
fn valid_trigger_json() -> impl Strategy<Value = serde_json::Value> {
    let kind = prop_oneof![
        instant().prop_map(|at| serde_json::json!({"kind": "once", "at": at.to_rfc3339()})),
        (valid_cron_expr(), prop_oneof![Just("UTC"), Just("Europe/Berlin"), Just("America/St_Johns")])
            .prop_map(|(expr, tz)| serde_json::json!({"kind": "cron", "expr": expr, "timezone": tz})),
        (1u64..10_000_000).prop_map(|s| serde_json::json!({"kind": "interval", "every": format!("{s}s")})),
    ];
    (kind, prop::option::of(instant()), prop::option::of(1u64..5)).prop_map(|(mut t, start_at, max_fires)| {
        if let Some(s) = start_at {
            t["start_at"] = s.to_rfc3339().into();
        }
        if let Some(m) = max_fires {
            t["max_fires"] = m.into();
        }
        t
    })
}

fn hostile_trigger_json() -> impl Strategy<Value = serde_json::Value> {
    (
        prop_oneof![Just("once"), Just("cron"), Just("interval"), Just("bogus")],
        prop::option::of(time_text()),
        prop::option::of(cron_expr()),
        prop::option::of(prop_oneof![Just("UTC"), Just("Europe/Berlin"), Just("America/St_Johns"), Just("Mars/Base")]),
        prop::option::of(duration_text()),
        (prop::option::of(time_text()), prop::option::of(time_text())),
        (prop::option::of(0u64..5), prop::option::of(prop_oneof![Just("fire_once"), Just("skip"), Just("catch_up")])),
        prop::option::of(0u32..2000),
    )
        .prop_map(|(kind, at, expr, tz, every, (start_at, end_at), (max_fires, misfire), catch_up_limit)| {
            let mut t = serde_json::json!({ "kind": kind });
            let mut put = |k: &str, v: Option<serde_json::Value>| {
                if let Some(v) = v {
                    t[k] = v;
                }
            };
            put("at", at.map(Into::into));
            put("expr", expr.map(Into::into));
            put("timezone", tz.map(Into::into));
            put("every", every.map(Into::into));
            put("start_at", start_at.map(Into::into));
            put("end_at", end_at.map(Into::into));
            put("max_fires", max_fires.map(Into::into));
            put("misfire", misfire.map(Into::into));
            put("catch_up_limit", catch_up_limit.map(Into::into));
            t
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the shape, validation answers (Ok or a field error) without panicking, and a
    /// valid trigger's first fire and the next one after it are strictly ordered.
    #[test]
    fn validation_and_next_fire_never_panic_or_go_backwards(
        handler in prop_oneof![3 => Just("echo".to_string()), 1 => "[a-z ]{0,8}".prop_map(String::from)],
        triggers in prop::collection::vec(prop_oneof![3 => valid_trigger_json(), 1 => hostile_trigger_json()], 0..4),
        created in instant(),
    ) {
        let body = serde_json::json!({"handler": handler, "triggers": triggers});
        let Ok(req) = serde_json::from_value::<JobRequest>(body) else { return Ok(()) };
        let started = Instant::now();
        let Ok(spec) = validate_job(req, created) else { return Ok(()) };
        prop_assert!(started.elapsed() < BOUND, "validation took {:?}", started.elapsed());
        for t in &spec.triggers {
            let started = Instant::now();
            let Some(first) = first_fire(t, created) else { continue };
            if let Ok(schedule) = Schedule::compile(&t.kind, created) {
                if let Some(next) = schedule.next_after(first) {
                    prop_assert!(next > first, "next {next} not after {first} for {t:?}");
                }
            }
            prop_assert!(started.elapsed() < BOUND, "next fire took {:?} for {t:?}", started.elapsed());
        }
    }

    /// For any valid cron expression and zone, the next fire after any instant is strictly after it.
    #[test]
    fn cron_next_is_strictly_after(expr in cron_expr(), after in instant(),
        tz in prop_oneof![Just("UTC"), Just("Europe/Berlin"), Just("Australia/Lord_Howe"), Just("America/Sao_Paulo")]) {
        let kind = sundial_core::domain::TriggerKind::Cron { expr, timezone: tz.to_string() };
        let started = Instant::now();
        if let Ok(schedule) = Schedule::compile(&kind, after) {
            let mut t = after;
            for _ in 0..5 {
                match schedule.next_after(t) {
                    Some(next) => { prop_assert!(next > t, "{next} not after {t} for {kind:?}"); t = next; }
                    None => break,
                }
            }
        }
        prop_assert!(started.elapsed() < BOUND, "took {:?} for {kind:?}", started.elapsed());
    }

    /// Interval grids: the next time after any instant is strictly after it and on the grid.
    #[test]
    fn interval_next_is_strictly_after_and_on_the_grid(every_s in 1u64..10_000_000, anchor in instant(), after in instant()) {
        let kind = sundial_core::domain::TriggerKind::Interval { every: Duration::from_secs(every_s) };
        let schedule = Schedule::compile(&kind, anchor).unwrap();
        if let Some(next) = schedule.next_after(after) {
            prop_assert!(next > after);
            prop_assert_eq!((next - anchor).num_seconds().rem_euclid(every_s as i64), 0);
        }
    }
}
