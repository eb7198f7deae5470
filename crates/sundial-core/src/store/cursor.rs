//! Where a PostgreSQL claim starts reading the ready order.
//!
//! PostgreSQL keeps the index entry of a claimed run until vacuum removes it, and vacuum can
//! remove nothing newer than the oldest open snapshot. Claims read the ready order from its head,
//! where the entries of the runs claimed most recently sit; with a snapshot held open for minutes
//! every claim would walk all of them, so a claim's cost would grow with what was ever claimed,
//! not with what is due. A claim therefore starts at a cursor: the position in the ready order
//! (`-priority, turn, scheduled_for, id`) where the previous claim stopped.
//!
//! The cursor is a hint, never a filter that can lose a run: a run that becomes ready before it
//! (a higher priority, an earlier turn, an expired lease, a resumed job) is only delayed, and
//! every such write this node makes moves the cursor back at once: to the new run when its place
//! is known (a submission committed after a later one, [`ClaimCursors::note_ready`]), else to the
//! head ([`ClaimCursors::invalidate`]). What other nodes do is caught by a scan from the head every
//! [`RESCAN_US`], or, when such a scan is slow (a pinned snapshot leaves many entries to walk),
//! every [`RESCAN_COST`] times as long as it took, so that reads from the head never take more
//! than a twentieth of the claims' time. A run that was not yet due when the cursor moved puts the
//! cursor back when it falls due ([`ClaimCursor::lapses_at`]). SQLite updates its indexes in place
//! and needs none of this.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// At least this often (microseconds of the claims' clock) a claim reads from the head...
pub(crate) const RESCAN_US: i64 = 1_000_000;

/// ...unless the last read from the head took longer than this fraction of that interval: then
/// the next one waits this many times as long as it took.
pub(crate) const RESCAN_COST: i64 = 20;

/// A position in the ready order, compared as the claim query's `ORDER BY`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
pub(crate) struct ReadyKey {
    /// `-priority`: the order is by priority, highest first.
    pub neg_priority: i64,
    pub turn: i64,
    pub scheduled_for: i64,
    pub id: String,
}

/// The cursor of one claim scope (a set of handlers and namespaces).
#[derive(Debug, Default)]
struct ClaimCursor {
    at: Option<ReadyKey>,
    /// When a claim last read from the head.
    rescanned_at: i64,
    /// How long after `rescanned_at` the next read from the head is due (0: [`RESCAN_US`]).
    rescan_every: i64,
    /// The earliest due time of a ready run that was not due yet when the cursor moved.
    lapses_at: Option<i64>,
    /// Bumped by every write that may put a run before the cursor; a claim that started under
    /// an older generation does not move it.
    generation: u64,
}

impl ClaimCursor {
    /// Due for a read from the head: the rescan interval passed, or a run stored as not yet due
    /// fell due.
    fn stale(&self, now: i64) -> bool {
        now >= self.rescanned_at.saturating_add(self.rescan_every.max(RESCAN_US))
            || self.lapses_at.is_some_and(|l| now >= l)
    }
}

/// Where a claim that starts at `now` reads from (`None`: the head), and the generation to
/// hand back to [`ClaimCursors::after_claim`].
#[derive(Debug)]
pub(crate) struct ClaimStart {
    pub from: Option<ReadyKey>,
    generation: u64,
}

/// What a claim read: the last run it looked at, the first it left ready (held back by a
/// limit), and the earliest due time of a ready run not due at the claim's `now` that sorts
/// before where the cursor moves (a higher priority or an earlier turn).
#[derive(Debug, Default)]
pub(crate) struct ClaimRead {
    pub last_read: Option<ReadyKey>,
    pub first_left: Option<ReadyKey>,
    pub next_due: Option<i64>,
}

impl ClaimRead {
    /// From the runs a claim read (`read`, in any order) and the ids it claimed; `next_due` is
    /// for the store to fill in for the position the cursor [`moves_to`](Self::moves_to).
    pub(crate) fn of(read: Vec<ReadyKey>, claimed: &[String]) -> Self {
        let claimed: HashSet<&str> = claimed.iter().map(String::as_str).collect();
        let first_left = read.iter().filter(|k| !claimed.contains(k.id.as_str())).min().cloned();
        Self { last_read: read.into_iter().max(), first_left, next_due: None }
    }

    /// Where the cursor goes: the first run left ready, else the last run read.
    pub(crate) fn moves_to(&self) -> Option<&ReadyKey> {
        self.first_left.as_ref().or(self.last_read.as_ref())
    }
}

/// The cursors of one store, by claim scope.
#[derive(Debug, Default)]
pub(crate) struct ClaimCursors {
    by_scope: Mutex<HashMap<String, ClaimCursor>>,
}

impl ClaimCursors {
    /// Where a claim of `scope` at `now` starts.
    pub(crate) fn start(&self, scope: &str, now: i64) -> ClaimStart {
        let mut all = self.by_scope.lock().expect("cursor lock");
        let c = all.entry(scope.to_string()).or_default();
        if c.stale(now) {
            c.at = None;
        }
        ClaimStart { from: c.at.clone(), generation: c.generation }
    }

    /// Moves the cursor of `scope` after a claim that started at `start` read `read`, taking
    /// `took_us` of wall time: to the first run it left ready, else to the last run it read
    /// (which it claimed).
    pub(crate) fn after_claim(&self, scope: &str, start: ClaimStart, read: ClaimRead, now: i64, took_us: i64) {
        let mut all = self.by_scope.lock().expect("cursor lock");
        let c = all.entry(scope.to_string()).or_default();
        if c.generation != start.generation {
            return;
        }
        if start.from.is_none() {
            c.rescanned_at = now;
            c.rescan_every = took_us.saturating_mul(RESCAN_COST);
        }
        // A claim that read nothing learnt nothing of what is due later.
        if read.last_read.is_some() {
            c.lapses_at = read.next_due;
        }
        c.at = read.first_left.or(read.last_read).or(start.from);
    }

    /// Runs became ready at these positions: a cursor past one that is due goes back to it (not
    /// to the head: what sorts between is known, runs claimed already); one not yet due makes
    /// every cursor lapse when it falls due.
    pub(crate) fn note_ready<'a>(&self, ready: impl IntoIterator<Item = &'a ReadyKey>, now: i64) {
        let ready: Vec<&ReadyKey> = ready.into_iter().collect();
        if ready.is_empty() {
            return;
        }
        let mut all = self.by_scope.lock().expect("cursor lock");
        for c in all.values_mut() {
            for k in &ready {
                if k.scheduled_for > now {
                    c.lapses_at = Some(c.lapses_at.map_or(k.scheduled_for, |l| l.min(k.scheduled_for)));
                } else if c.at.as_ref().is_some_and(|at| *k < at) {
                    c.at = Some((*k).clone());
                    c.generation += 1;
                }
            }
        }
    }

    /// Runs became ready, due at these times, wherever they sort: one due already sends every
    /// claim to the head; one not yet due makes every cursor lapse when it falls due.
    pub(crate) fn ready_at(&self, due: impl IntoIterator<Item = i64>, now: i64) {
        let mut later: Option<i64> = None;
        for d in due {
            if d <= now {
                return self.invalidate();
            }
            later = Some(later.map_or(d, |l| l.min(d)));
        }
        let Some(later) = later else { return };
        let mut all = self.by_scope.lock().expect("cursor lock");
        for c in all.values_mut() {
            c.lapses_at = Some(c.lapses_at.map_or(later, |l| l.min(later)));
        }
    }

    /// The earliest cursor at `now` of the scopes claimed from lately (`None` when one of them
    /// reads from the head, or none did): where the first ready run is looked for when new runs
    /// take their fair turn.
    pub(crate) fn lowest(&self, now: i64) -> Option<ReadyKey> {
        let all = self.by_scope.lock().expect("cursor lock");
        let mut low: Option<&ReadyKey> = None;
        for c in all.values().filter(|c| !c.stale(now)) {
            let at = c.at.as_ref()?;
            low = Some(low.map_or(at, |l| l.min(at)));
        }
        low.cloned()
    }

    /// Runs may have become ready anywhere in the order: every claim reads from the head next.
    pub(crate) fn invalidate(&self) {
        let mut all = self.by_scope.lock().expect("cursor lock");
        for c in all.values_mut() {
            c.at = None;
            c.generation += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i64, turn: i64, at: i64, id: &str) -> ReadyKey {
        ReadyKey { neg_priority: -p, turn, scheduled_for: at, id: id.into() }
    }

    fn claimed(last: &ReadyKey) -> ClaimRead {
        ClaimRead { last_read: Some(last.clone()), ..Default::default() }
    }

    #[test]
    fn a_claim_starts_where_the_last_one_stopped_and_from_the_head_every_rescan_interval() {
        let cs = ClaimCursors::default();
        let s = cs.start("echo", 0);
        assert_eq!(s.from, None, "the first claim reads from the head");
        cs.after_claim("echo", s, claimed(&key(0, 0, 5, "r5")), 0, 0);
        assert_eq!(cs.start("echo", RESCAN_US - 1).from, Some(key(0, 0, 5, "r5")));
        assert_eq!(cs.start("other", 1).from, None, "scopes have cursors of their own");
        assert_eq!(cs.start("echo", RESCAN_US).from, None, "a rescan is due");
    }

    #[test]
    fn a_slow_read_from_the_head_puts_the_next_one_off_in_proportion() {
        let cs = ClaimCursors::default();
        // The head read took 200 ms: the next is due 20 × 200 ms = 4 s later, not after 1 s.
        cs.after_claim("echo", cs.start("echo", 0), claimed(&key(0, 0, 5, "r5")), 0, 200_000);
        assert!(cs.start("echo", 3_999_999).from.is_some());
        let s = cs.start("echo", 4_000_000);
        assert_eq!(s.from, None);
        // A fast one brings the interval back to RESCAN_US.
        cs.after_claim("echo", s, claimed(&key(0, 0, 6, "r6")), 4_000_000, 1_000);
        assert!(cs.start("echo", 4_000_000 + RESCAN_US - 1).from.is_some());
        assert_eq!(cs.start("echo", 4_000_000 + RESCAN_US).from, None);
    }

    #[test]
    fn a_run_left_ready_by_a_limit_holds_the_cursor_back() {
        let cs = ClaimCursors::default();
        let s = cs.start("echo", 0);
        let read =
            ClaimRead { last_read: Some(key(0, 0, 9, "r9")), first_left: Some(key(0, 0, 2, "r2")), next_due: None };
        cs.after_claim("echo", s, read, 0, 0);
        assert_eq!(cs.start("echo", 1).from, Some(key(0, 0, 2, "r2")));
    }

    #[test]
    fn what_a_claim_read_is_summed_up_by_its_last_run_and_the_first_it_left() {
        let read = vec![key(0, 0, 3, "c"), key(0, 0, 1, "a"), key(0, 0, 2, "b")];
        let r = ClaimRead::of(read.clone(), &["a".into(), "c".into()]);
        assert_eq!((&r.last_read, &r.first_left), (&Some(key(0, 0, 3, "c")), &Some(key(0, 0, 2, "b"))));
        assert_eq!(r.moves_to(), Some(&key(0, 0, 2, "b")), "to the first run left ready");
        let r = ClaimRead::of(read, &["a".into(), "b".into(), "c".into()]);
        assert_eq!(r.first_left, None);
        assert_eq!(r.moves_to(), Some(&key(0, 0, 3, "c")), "past the last run read");
    }

    #[test]
    fn an_empty_read_keeps_the_cursor() {
        let cs = ClaimCursors::default();
        cs.after_claim("echo", cs.start("echo", 0), claimed(&key(0, 0, 5, "r5")), 0, 0);
        cs.after_claim("echo", cs.start("echo", 1), ClaimRead::default(), 1, 0);
        assert_eq!(cs.start("echo", 2).from, Some(key(0, 0, 5, "r5")));
    }

    #[test]
    fn a_due_run_made_ready_before_the_cursor_moves_it_back_to_that_run() {
        let cs = ClaimCursors::default();
        cs.after_claim("echo", cs.start("echo", 0), claimed(&key(0, 0, 5, "r5")), 0, 0);
        cs.note_ready([&key(0, 0, 7, "r7")], 10);
        assert_eq!(cs.start("echo", 11).from, Some(key(0, 0, 5, "r5")), "after the cursor: kept");
        cs.note_ready([&key(1, 0, 9, "hi"), &key(0, 0, 4, "r4")], 10);
        assert_eq!(cs.start("echo", 11).from, Some(key(1, 0, 9, "hi")), "back to the earliest: a higher priority");
    }

    #[test]
    fn a_run_not_yet_due_makes_the_cursor_lapse_when_it_falls_due() {
        let cs = ClaimCursors::default();
        let read = ClaimRead { last_read: Some(key(0, 0, 5, "r5")), first_left: None, next_due: Some(500) };
        cs.after_claim("echo", cs.start("echo", 0), read, 0, 0);
        assert!(cs.start("echo", 499).from.is_some());
        assert_eq!(cs.start("echo", 500).from, None, "the run stored as not due is due now");

        cs.after_claim("echo", cs.start("echo", 600), claimed(&key(0, 0, 5, "r5")), 600, 0);
        cs.ready_at([900], 700);
        assert!(cs.start("echo", 899).from.is_some());
        assert_eq!(cs.start("echo", 900).from, None, "a retry written later lapses it too");

        cs.after_claim("echo", cs.start("echo", 1000), claimed(&key(0, 0, 5, "r5")), 1000, 0);
        cs.ready_at([1000], 1000);
        assert_eq!(cs.start("echo", 1001).from, None, "a run made ready due now: from the head");
    }

    #[test]
    fn the_lowest_cursor_is_of_the_scopes_claimed_from_lately_and_none_while_one_reads_from_the_head() {
        let cs = ClaimCursors::default();
        assert_eq!(cs.lowest(0), None);
        cs.after_claim("a", cs.start("a", 0), claimed(&key(0, 0, 2, "r2")), 0, 0);
        cs.after_claim("b", cs.start("b", 10), claimed(&key(0, 0, 5, "r5")), 10, 0);
        assert_eq!(cs.lowest(10), Some(key(0, 0, 2, "r2")));
        assert_eq!(cs.lowest(RESCAN_US + 5), Some(key(0, 0, 5, "r5")), "a scope not claimed from lately is left out");
        let _ = cs.start("c", 10);
        assert_eq!(cs.lowest(10), None, "a scope reading from the head");
    }

    #[test]
    fn a_claim_that_raced_a_write_before_the_cursor_does_not_move_it() {
        let cs = ClaimCursors::default();
        cs.after_claim("echo", cs.start("echo", 0), claimed(&key(0, 0, 5, "r5")), 0, 0);
        let racing = cs.start("echo", 1);
        cs.invalidate();
        cs.after_claim("echo", racing, claimed(&key(0, 0, 9, "r9")), 1, 0);
        assert_eq!(cs.start("echo", 2).from, None);
    }
}
