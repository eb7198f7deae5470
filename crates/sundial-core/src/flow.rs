//! Flow control rules, shared by both stores: which claim candidates a limit admits, the fair
//! order among first keys ("turns"), and the transient `waiting for limit KEY` reason part.
//!
//! The stores do the I/O (lock the governed keys, count, write); these functions decide.

use crate::domain::limit::LimitBounds;
use crate::domain::Timestamp;
use std::collections::HashMap;

/// What the claim transaction saw for one governed concrete key, after taking that key's lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUse {
    /// Runs naming the key that are `running`.
    pub running: u64,
    /// Starts of runs naming the key inside the rate window ending now.
    pub recent_starts: u64,
}

/// The decision for one claim candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Lease it.
    Claim,
    /// Held back by the limit on this key; it stays `pending`.
    Held(String),
    /// Not looked at: the claim already has as many runs as it asked for.
    NotReached,
}

/// Decides, in candidate order, which candidates this claim may lease: at most `max`, and each
/// only while every governed key it names has `running < max_running` and `recent_starts <
/// count`. Each admitted run counts at once toward its keys' use, so one claim never admits past
/// a bound either. `bounds` holds the governing bounds per concrete key (keys absent from it are
/// not limited); `usage` must have an entry per governed key and is updated in place.
pub fn admit(
    candidates: &[&[String]],
    bounds: &HashMap<String, LimitBounds>,
    usage: &mut HashMap<String, KeyUse>,
    max: usize,
) -> Vec<Verdict> {
    let mut claimed = 0;
    let mut out = Vec::with_capacity(candidates.len());
    for keys in candidates {
        if claimed >= max {
            out.push(Verdict::NotReached);
            continue;
        }
        let full = keys.iter().find(|k| {
            let Some(b) = bounds.get(k.as_str()) else { return false };
            let u = usage.get(k.as_str()).copied().unwrap_or_default();
            b.max_running.is_some_and(|m| u.running >= u64::from(m))
                || b.rate.is_some_and(|r| u.recent_starts >= u64::from(r.count))
        });
        match full {
            Some(k) => out.push(Verdict::Held(k.clone())),
            None => {
                for k in keys.iter().filter(|k| bounds.contains_key(k.as_str())) {
                    let u = usage.entry(k.clone()).or_default();
                    u.running += 1;
                    u.recent_starts += 1;
                }
                claimed += 1;
                out.push(Verdict::Claim);
            }
        }
    }
    out
}

/// Starts strictly after this instant count toward a rate of window `per` at `now`: a start at
/// `t` holds its slot for `[t, t + per)`.
pub fn window_floor(now: Timestamp, per: std::time::Duration) -> Timestamp {
    now - chrono::Duration::from_std(per).unwrap_or(chrono::Duration::MAX)
}

/// The key fairness takes turns across: a run's first key, `""` for runs naming none.
pub fn fair_key(limits: &[String]) -> &str {
    limits.first().map(String::as_str).unwrap_or("")
}

/// Turns for new pending runs, in order. Claims go by `(priority DESC, turn, scheduled_for)`,
/// so giving each key's runs consecutive turns that start no lower than `floor` (the lowest turn
/// still waiting) makes keys with a backlog alternate: a key's new run goes after that key's
/// last waiting run (`last[key]`), but a key with nothing waiting starts at the floor, beside
/// everyone's oldest waiting run, not behind another key's thousands. Runs naming no key (`""`)
/// all take the floor: among themselves they stay oldest `scheduled_for` first, as without
/// limits. `last` is updated in place.
pub fn assign_turns<'a>(
    floor: i64,
    last: &mut HashMap<String, i64>,
    keys: impl IntoIterator<Item = &'a str>,
) -> Vec<i64> {
    keys.into_iter()
        .map(|k| {
            if k.is_empty() {
                return floor;
            }
            let turn = last.get(k).map_or(floor, |l| (l + 1).max(floor));
            last.insert(k.to_string(), turn);
            turn
        })
        .collect()
}

/// The transient part of a held run's reason: `waiting for limit KEY`. It follows the run's
/// lasting note after `; ` and goes once the run is claimed.
pub fn waiting_part(key: &str) -> String {
    format!("waiting for limit {key}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limit::Rate;
    use std::time::Duration;

    fn keys(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }
    fn max_running(n: u32) -> LimitBounds {
        LimitBounds { max_running: Some(n), rate: None }
    }

    #[test]
    fn admits_while_running_is_below_max_and_counts_its_own_admissions() {
        let a = keys(&["a"]);
        let none = keys(&[]);
        let cands: Vec<&[String]> = vec![&a, &a, &none, &a];
        let bounds = HashMap::from([("a".to_string(), max_running(3))]);
        let mut usage = HashMap::from([("a".to_string(), KeyUse { running: 1, recent_starts: 0 })]);
        let v = admit(&cands, &bounds, &mut usage, 10);
        assert_eq!(v, vec![Verdict::Claim, Verdict::Claim, Verdict::Claim, Verdict::Held("a".into())]);
        assert_eq!(usage["a"].running, 3);
    }

    #[test]
    fn the_rate_bound_counts_recent_starts() {
        let a = keys(&["a"]);
        let cands: Vec<&[String]> = vec![&a, &a];
        let rate = Rate { count: 5, per: Duration::from_secs(60) };
        let bounds = HashMap::from([("a".to_string(), LimitBounds { max_running: None, rate: Some(rate) })]);
        let mut usage = HashMap::from([("a".to_string(), KeyUse { running: 100, recent_starts: 4 })]);
        assert_eq!(admit(&cands, &bounds, &mut usage, 10), vec![Verdict::Claim, Verdict::Held("a".into())]);
    }

    #[test]
    fn every_governed_key_must_have_room_and_the_first_full_one_is_named() {
        let ab = keys(&["free", "a", "b"]);
        let bounds = HashMap::from([("a".to_string(), max_running(1)), ("b".to_string(), max_running(1))]);
        let mut usage = HashMap::from([
            ("a".to_string(), KeyUse::default()),
            ("b".to_string(), KeyUse { running: 1, recent_starts: 0 }),
        ]);
        assert_eq!(admit(&[&ab], &bounds, &mut usage, 1), vec![Verdict::Held("b".into())]);
        // Nothing was counted for the held run.
        assert_eq!(usage["a"].running, 0);
    }

    #[test]
    fn stops_looking_at_max() {
        let none = keys(&[]);
        let a = keys(&["a"]);
        let cands: Vec<&[String]> = vec![&none, &none, &a];
        let bounds = HashMap::from([("a".to_string(), max_running(1))]);
        let mut usage = HashMap::from([("a".to_string(), KeyUse { running: 1, recent_starts: 0 })]);
        assert_eq!(admit(&cands, &bounds, &mut usage, 2), vec![Verdict::Claim, Verdict::Claim, Verdict::NotReached]);
    }

    #[test]
    fn the_window_excludes_its_start_edge() {
        let now = chrono::DateTime::from_timestamp(1_000, 0).unwrap();
        assert_eq!(window_floor(now, Duration::from_secs(60)), chrono::DateTime::from_timestamp(940, 0).unwrap());
    }

    #[test]
    fn turns_interleave_a_new_key_with_a_backlog() {
        let mut last = HashMap::new();
        let a = assign_turns(0, &mut last, std::iter::repeat_n("A", 1000));
        assert_eq!((a[0], a[999]), (0, 999));
        // 100 of A's runs were claimed: the lowest waiting turn is 100.
        let b = assign_turns(100, &mut last, std::iter::repeat_n("B", 20));
        assert_eq!(b, (100..120).collect::<Vec<_>>());
        // A's next run goes after A's own backlog, not before B's.
        assert_eq!(assign_turns(100, &mut last, ["A"]), vec![1000]);
        // A key whose runs were all claimed long ago starts again at the floor.
        last.insert("C".into(), 3);
        assert_eq!(assign_turns(500, &mut last, ["C", "C"]), vec![500, 501]);
    }

    #[test]
    fn runs_without_keys_take_the_floor() {
        let mut last = HashMap::new();
        assert_eq!(assign_turns(7, &mut last, ["", "", "A", ""]), vec![7, 7, 7, 7]);
        assert_eq!(assign_turns(7, &mut last, ["A"]), vec![8]);
    }

    #[test]
    fn the_fair_key_is_the_first_key() {
        assert_eq!(fair_key(&keys(&["t:1", "smtp"])), "t:1");
        assert_eq!(fair_key(&[]), "");
    }

    #[test]
    fn the_waiting_part_names_the_key() {
        assert_eq!(waiting_part("tenant:42"), "waiting for limit tenant:42");
    }
}
