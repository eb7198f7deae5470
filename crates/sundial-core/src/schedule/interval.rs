//! Interval schedules: the grid `anchor + k·every` (k any integer), in nanosecond arithmetic so a
//! trigger far behind (every 1 s, down for a week) is counted, not iterated.

use crate::domain::Timestamp;
use chrono::DateTime;
use std::time::Duration;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// The instants `anchor + k·every`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grid {
    anchor: Timestamp,
    /// The period in nanoseconds, always > 0.
    every: i128,
}

impl Grid {
    /// `None` for a zero period (validation rejects it; a zero grid has no "next").
    pub(super) fn new(anchor: Timestamp, every: Duration) -> Option<Self> {
        let every = i128::try_from(every.as_nanos()).ok()?;
        (every > 0).then_some(Self { anchor, every })
    }

    /// The grid point `k` periods from the anchor.
    pub(super) fn nth(&self, k: i128) -> Option<Timestamp> {
        from_nanos(to_nanos(self.anchor).checked_add(k.checked_mul(self.every)?)?)
    }

    /// The first grid point at or after `t`.
    pub(super) fn at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        let off = to_nanos(t) - to_nanos(self.anchor);
        self.nth(div_ceil(off, self.every))
    }

    /// The first grid point strictly after `t`.
    pub(super) fn after(&self, t: Timestamp) -> Option<Timestamp> {
        let off = to_nanos(t) - to_nanos(self.anchor);
        self.nth(off.div_euclid(self.every) + 1)
    }

    /// How many points `anchor + k·every` with k ≥ 0 are at or before `t`.
    pub(super) fn count_through(&self, t: Timestamp) -> u128 {
        let off = to_nanos(t) - to_nanos(self.anchor);
        if off < 0 {
            0
        } else {
            (off / self.every) as u128 + 1
        }
    }

    /// How many points `anchor + k·every` with k ≥ 0 are strictly before `t`.
    pub(super) fn count_before(&self, t: Timestamp) -> u128 {
        let off = to_nanos(t) - to_nanos(self.anchor);
        if off <= 0 {
            0
        } else {
            div_ceil(off, self.every) as u128
        }
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    -((-a).div_euclid(b))
}

fn to_nanos(t: Timestamp) -> i128 {
    i128::from(t.timestamp()) * NANOS_PER_SEC + i128::from(t.timestamp_subsec_nanos())
}

fn from_nanos(n: i128) -> Option<Timestamp> {
    let secs = i64::try_from(n.div_euclid(NANOS_PER_SEC)).ok()?;
    DateTime::from_timestamp(secs, n.rem_euclid(NANOS_PER_SEC) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn grid(anchor: &str, every: Duration) -> Grid {
        Grid::new(ts(anchor), every).unwrap()
    }

    #[test]
    fn zero_period_has_no_grid() {
        assert!(Grid::new(ts("2026-01-01T00:00:00Z"), Duration::ZERO).is_none());
    }

    #[test]
    fn grid_extends_both_ways_through_the_anchor() {
        let g = grid("2026-01-01T00:00:10Z", Duration::from_secs(15));
        assert_eq!(g.at_or_after(ts("2026-01-01T00:00:10Z")), Some(ts("2026-01-01T00:00:10Z")));
        assert_eq!(g.after(ts("2026-01-01T00:00:10Z")), Some(ts("2026-01-01T00:00:25Z")));
        assert_eq!(g.at_or_after(ts("2026-01-01T00:00:11Z")), Some(ts("2026-01-01T00:00:25Z")));
        assert_eq!(g.at_or_after(ts("2026-01-01T00:00:00Z")), Some(ts("2026-01-01T00:00:10Z")));
        assert_eq!(g.at_or_after(ts("2025-12-31T23:59:50Z")), Some(ts("2025-12-31T23:59:55Z")));
        assert_eq!(g.after(ts("2025-12-31T23:59:55Z")), Some(ts("2026-01-01T00:00:10Z")));
    }

    #[test]
    fn sub_second_periods_stay_exact() {
        let g = grid("2026-01-01T00:00:00Z", Duration::from_millis(250));
        assert_eq!(g.after(ts("2026-01-01T00:00:00.3Z")), Some(ts("2026-01-01T00:00:00.5Z")));
        assert_eq!(g.count_through(ts("2026-01-01T00:00:01Z")), 5);
        assert_eq!(g.count_before(ts("2026-01-01T00:00:01Z")), 4);
    }

    #[test]
    fn counts_a_week_of_seconds_without_iterating() {
        let g = grid("2026-01-01T00:00:00Z", Duration::from_secs(1));
        assert_eq!(g.count_through(ts("2026-01-08T00:00:00Z")), 7 * 86_400 + 1);
        assert_eq!(g.count_before(ts("2026-01-08T00:00:00Z")), 7 * 86_400);
        assert_eq!(g.count_through(ts("2025-12-31T23:59:59Z")), 0);
        assert_eq!(g.count_before(ts("2026-01-01T00:00:00Z")), 0);
        assert_eq!(g.nth(7 * 86_400), Some(ts("2026-01-08T00:00:00Z")));
    }
}
