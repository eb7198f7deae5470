//! The claim's flow-control plan, shared by both backends: from the candidate runs (in claim
//! order) and the limit definitions that may govern their keys, which keys to lock and count,
//! and then — given the counts — which runs to lease, which to mark held, which starts to log.
//!
//! # Where the counters live, and why a claim's check is exact
//! * `running` per key is the table `run_limits(key, run_id, ended_at)`: one row per key of each
//!   `running` run, kept by a database trigger on `runs` (in on the claim, `ended_at` set by
//!   whatever ends the running state: completion, reaping, a dead worker's recovery; on
//!   PostgreSQL one call per statement over its transition table, always by the index: see
//!   migration 0010 for why both matter to speed). No code path can forget it, and a reaped run stops counting in the very transaction that reaps it,
//!   not before. A claim at `now` counts the rows still open or ended after `now`, so even with
//!   `now` taken before the transaction, stored `[started_at, finished_at)` intervals of a key
//!   never overlap more than its `max_running`.
//! * rate starts per key are the log `limit_starts(key, started_at)`, written by the claim for
//!   each key a rate governs and pruned by the claim once outside the window.
//! * The claim counts both **in the transaction that leases the runs**, after taking a lock per
//!   governed key (PostgreSQL: a transaction-scoped advisory lock per key; SQLite: the single
//!   writer's `BEGIN IMMEDIATE`). On PostgreSQL the lock is *tried*, never waited for: a key
//!   another claimer holds is skipped for this claim, like a row `SKIP LOCKED` skips, so claims
//!   never wait on each other and cannot deadlock. The holder counts in a statement after taking
//!   the lock — a new snapshot under READ COMMITTED — so it sees every earlier holder's
//!   committed claims, and its own claims are committed before the lock is released. Ending a
//!   run only lowers a count, so it needs no lock: a claim can under-see free room (and take
//!   that run on its next look), never over-admit.
//!
//! # Cost
//! Candidates come off the `runs_ready` index in `(priority DESC, turn, …)` order, in small pages
//! until the claim is full or a bounded number of rows was looked at. Turns interleave keys
//! (see [`crate::flow::assign_turns`]), so a full key puts at most one run per turn in the
//! way, whatever its backlog; counting is an index range per governed key in the page.

use super::plan::run_reason;
use super::rows::{dur_us, ts, us, us_dur};
use super::StoreError;
use crate::domain::limit::{governing, LimitBounds, LimitDef, LimitKey, Rate};
use crate::domain::Timestamp;
use crate::flow::{self, KeyUse, Verdict};
use std::collections::{BTreeSet, HashMap};

/// A pending run the claim looked at.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Candidate {
    pub id: String,
    /// JSON array of keys.
    pub limits: String,
    /// Its lasting note (kept by claims), and its reason as shown now.
    pub note: Option<String>,
    pub reason: Option<String>,
}

/// Columns of [`Candidate`].
pub(crate) const CANDIDATE_COLUMNS: &str = "id, limits, note, reason";

impl Candidate {
    pub(crate) fn keys(&self) -> Vec<String> {
        parse_keys(&self.limits)
    }
}

/// Keys stored as a JSON array (`[]` when none).
pub(crate) fn parse_keys(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Keys as stored.
pub(crate) fn keys_json(keys: &[String]) -> String {
    serde_json::to_string(keys).expect("keys serialize")
}

/// The fair key (first key, `""` for none) of keys stored as JSON.
pub(crate) fn fair_key_of(json: &str) -> String {
    flow::fair_key(&parse_keys(json)).to_string()
}

/// The claim reads candidates a page at a time: its `max` first, then more only while limits
/// held some back, up to this many rows in all (so a wall of held runs costs a bounded scan).
pub(crate) fn scan_budget(max: u32) -> usize {
    (max as usize) * 4 + 64
}

/// The size of the claim's next page once `claimed` of `max` are chosen and `seen` rows were
/// read: twice the room left and some slack, within the budget. Sized by the room left, not by
/// `max`: a held run or two at the head of a big claim (a full key's next turn) costs a short
/// second read, not one of `2 × max` rows, each locked until the claim commits.
pub(crate) fn next_page_size(max: u32, claimed: usize, seen: usize) -> usize {
    let room = (max as usize).saturating_sub(claimed);
    (room * 2 + 16).min(scan_budget(max).saturating_sub(seen))
}

/// Turns for new runs (see [`flow::assign_turns`]): `floor` is the lowest turn waiting, `last`
/// each fair key's highest waiting turn. Returns one turn per key given, in order.
pub(crate) fn turns<'a>(
    floor: i64,
    last: HashMap<String, i64>,
    fair_keys: impl IntoIterator<Item = &'a str>,
) -> Vec<i64> {
    let mut last = last;
    flow::assign_turns(floor, &mut last, fair_keys)
}

/// A claim in progress over pages of candidates: the keys it resolved, locked and counted, and
/// what it decided so far.
#[derive(Debug, Default)]
pub(crate) struct ClaimState {
    /// Governing bounds per locked, counted key.
    bounds: HashMap<String, LimitBounds>,
    /// Keys looked up that no limit governs.
    free: BTreeSet<String>,
    /// Governed keys another claimer holds right now: their runs are left for it.
    busy: BTreeSet<String>,
    usage: HashMap<String, KeyUse>,
    /// Candidates looked at, in order.
    pub seen: Vec<String>,
    pub plan: ClaimPlan,
}

impl ClaimState {
    /// Keys of `page` not looked up yet (empty when no candidate names one: then the claim
    /// needs no limit reads at all).
    pub(crate) fn unknown_keys(&self, page: &[Candidate]) -> Vec<String> {
        let mut out = BTreeSet::new();
        for c in page {
            for k in c.keys() {
                if !self.bounds.contains_key(&k) && !self.free.contains(&k) && !self.busy.contains(&k) {
                    out.insert(k);
                }
            }
        }
        out.into_iter().collect()
    }

    /// Resolves `keys` against `defs` (the exact limits of those keys and every pattern);
    /// returns the governed ones, sorted, to lock and count.
    pub(crate) fn resolve(&mut self, keys: Vec<String>, defs: &[LimitDef]) -> Vec<(String, LimitBounds)> {
        let mut governed = Vec::new();
        for k in keys {
            match governing(defs, &k) {
                Some(d) => governed.push((k, d.bounds)),
                None => {
                    self.free.insert(k);
                }
            }
        }
        governed
    }

    /// Records the governed keys this transaction now holds, with their counts, and those it
    /// could not lock.
    pub(crate) fn counted(&mut self, held: Vec<(String, LimitBounds, KeyUse)>, busy: Vec<String>) {
        for (k, b, u) in held {
            self.bounds.insert(k.clone(), b);
            self.usage.insert(k, u);
        }
        self.busy.extend(busy);
    }

    /// Records the governed keys this transaction locked (`mine`) with their counts as the
    /// backend read them (`(key, running, recent starts)` rows), and those another claimer holds
    /// (`busy`).
    pub(crate) fn counted_rows(
        &mut self,
        mine: Vec<(String, LimitBounds)>,
        rows: Vec<(String, i64, i64)>,
        busy: Vec<String>,
    ) {
        let counts: HashMap<String, KeyUse> = rows
            .into_iter()
            .map(|(k, r, s)| (k, KeyUse { running: r.max(0) as u64, recent_starts: s.max(0) as u64 }))
            .collect();
        let held = mine
            .into_iter()
            .map(|(k, b)| {
                let u = counts.get(&k).copied().unwrap_or_default();
                (k, b, u)
            })
            .collect();
        self.counted(held, busy);
    }

    /// Decides a page: claims while there is room, holds what a limit bars, leaves runs of busy
    /// keys alone. Returns how many were claimed so far.
    pub(crate) fn admit_page(&mut self, page: &[Candidate], max: u32) -> u32 {
        let keys: Vec<Vec<String>> = page.iter().map(Candidate::keys).collect();
        let open: Vec<usize> = (0..page.len()).filter(|i| !keys[*i].iter().any(|k| self.busy.contains(k))).collect();
        let refs: Vec<&[String]> = open.iter().map(|i| keys[*i].as_slice()).collect();
        let room = (max as usize).saturating_sub(self.plan.claim.len());
        let verdicts = flow::admit(&refs, &self.bounds, &mut self.usage, room);
        for (i, v) in open.into_iter().zip(verdicts) {
            let c = &page[i];
            match v {
                Verdict::Claim => {
                    self.plan.claim.push(c.id.clone());
                    for k in &keys[i] {
                        if self.bounds.get(k).is_some_and(|b| b.rate.is_some()) {
                            self.plan.starts.push(k.clone());
                        }
                    }
                }
                Verdict::Held(k) => {
                    self.plan.held += 1;
                    let r = run_reason(c.note.as_deref(), Some(&flow::waiting_part(&k)));
                    if c.reason != r {
                        self.plan.held_reasons.push((c.id.clone(), r.unwrap_or_default()));
                    }
                }
                Verdict::NotReached => {}
            }
        }
        self.seen.extend(page.iter().map(|c| c.id.clone()));
        self.plan.claim.len() as u32
    }

    /// The governed keys this claim locked and counted, sorted.
    pub(crate) fn locked_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.bounds.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Keys whose rate windows the claim may prune, with the instant at or before which their
    /// logged starts no longer count.
    pub(crate) fn expired_starts(&self, now: Timestamp) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .bounds
            .iter()
            .filter_map(|(k, b)| b.rate.map(|r| (k.clone(), us(flow::window_floor(now, r.per)))))
            .collect();
        out.sort();
        out
    }
}

/// Per governed key, the instant after which logged starts count (µs; `i64::MAX` when no rate
/// governs it: nothing to count).
pub(crate) fn window_floor_us(bounds: &LimitBounds, now: Timestamp) -> i64 {
    match bounds.rate {
        Some(r) => us(flow::window_floor(now, r.per)),
        None => i64::MAX,
    }
}

/// A stored limit (both backends).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LimitRow {
    pub key: String,
    pub max_running: Option<i64>,
    pub rate_count: Option<i64>,
    pub rate_per_us: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Columns of [`LimitRow`].
pub(crate) const LIMIT_COLUMNS: &str = "key, max_running, rate_count, rate_per_us, created_at, updated_at";

impl LimitRow {
    pub(crate) fn into_def(self) -> Result<LimitDef, StoreError> {
        let key = LimitKey::parse(&self.key)
            .map_err(|_| StoreError::Internal(format!("corrupt limit key {:?}", self.key)))?;
        let rate = match (self.rate_count, self.rate_per_us) {
            (Some(count), Some(per)) => Some(Rate { count: count.clamp(0, u32::MAX as i64) as u32, per: us_dur(per) }),
            _ => None,
        };
        Ok(LimitDef {
            key,
            bounds: LimitBounds { max_running: self.max_running.map(|m| m.clamp(0, u32::MAX as i64) as u32), rate },
            created_at: ts(self.created_at),
            updated_at: ts(self.updated_at),
        })
    }
}

/// The columns a limit is written with: `(max_running, rate_count, rate_per_us)`.
pub(crate) fn bound_columns(b: &LimitBounds) -> (Option<i64>, Option<i64>, Option<i64>) {
    (b.max_running.map(i64::from), b.rate.map(|r| i64::from(r.count)), b.rate.map(|r| dur_us(r.per)))
}

/// The definitions that may govern `keys`, from a read of the exact limits of those keys plus
/// every pattern: patterns are few, exact limits may be many.
pub(crate) fn defs_of(rows: Vec<LimitRow>) -> Result<Vec<LimitDef>, StoreError> {
    rows.into_iter().map(LimitRow::into_def).collect()
}

/// How long a run's row in `run_limits` outlives its attempt's end (µs): a claim counts runs
/// that ended after its own `now`, and `now`s taken on other nodes a moment earlier must see
/// them too. Older rows are pruned by claims of their key.
pub(crate) const ENDED_KEPT_US: i64 = 60_000_000;

/// What the claim writes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ClaimPlan {
    /// Runs to lease (their reason becomes their lasting note again).
    pub claim: Vec<String>,
    /// Held runs whose reason must change to say which limit holds them.
    pub held_reasons: Vec<(String, String)>,
    /// How many candidates a limit held back (for `sundial_limit_held_total`).
    pub held: u64,
    /// A start to log per claimed run and key a rate governs.
    pub starts: Vec<String>,
}

impl ClaimPlan {
    /// Counts the held runs in `sundial_limit_held_total`.
    pub(crate) fn count_held(&self) {
        crate::metrics::limit_held(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limit::{LimitKey, Rate};
    use std::time::Duration;

    #[test]
    fn a_later_page_is_sized_by_the_room_left_within_the_budget() {
        // One held run in a claim of 100: the next read is short.
        assert_eq!(next_page_size(100, 99, 100), 18);
        assert_eq!(next_page_size(100, 0, 100), 216);
        // Never past the budget (4 × max + 64 rows in all).
        assert_eq!(next_page_size(100, 0, 400), 64);
        assert_eq!(next_page_size(100, 0, 464), 0);
    }

    fn cand(id: &str, keys: &[&str], note: Option<&str>, reason: Option<&str>) -> Candidate {
        let keys: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        Candidate {
            id: id.into(),
            limits: keys_json(&keys),
            note: note.map(Into::into),
            reason: reason.map(Into::into),
        }
    }
    fn def(key: &str, bounds: LimitBounds) -> LimitDef {
        LimitDef {
            key: LimitKey::parse(key).unwrap(),
            bounds,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }
    fn max_running(n: u32) -> LimitBounds {
        LimitBounds { max_running: Some(n), rate: None }
    }
    /// Resolves and "locks" every unknown key of `page`, all free of running runs.
    fn lock_all(st: &mut ClaimState, page: &[Candidate], defs: &[LimitDef]) {
        let keys = st.unknown_keys(page);
        let governed = st.resolve(keys, defs);
        st.counted(governed.into_iter().map(|(k, b)| (k, b, KeyUse::default())).collect(), vec![]);
    }

    #[test]
    fn a_page_without_keys_needs_no_limit_reads() {
        let st = ClaimState::default();
        assert!(st.unknown_keys(&[cand("1", &[], None, None)]).is_empty());
    }

    #[test]
    fn patterns_govern_each_key_separately_and_held_runs_say_why() {
        let defs = vec![def("t:*", max_running(1))];
        let page = [cand("1", &["t:1"], None, None), cand("2", &["t:2"], None, None), cand("3", &["t:1"], None, None)];
        let mut st = ClaimState::default();
        assert_eq!(st.unknown_keys(&page), vec!["t:1".to_string(), "t:2".to_string()]);
        lock_all(&mut st, &page, &defs);
        assert_eq!(st.admit_page(&page, 10), 2);
        assert_eq!(st.plan.claim, vec!["1".to_string(), "2".to_string()]);
        assert_eq!(st.plan.held, 1);
        assert_eq!(st.plan.held_reasons, vec![("3".to_string(), "waiting for limit t:1".to_string())]);
    }

    #[test]
    fn a_held_reason_follows_the_lasting_note_and_is_not_rewritten_when_unchanged() {
        let defs = vec![def("a", max_running(1))];
        let mut st = ClaimState::default();
        let page = [cand("1", &["a"], None, None)];
        lock_all(&mut st, &page, &defs);
        st.admit_page(&page, 5);
        let page2 = [
            cand("2", &["a"], Some("missed 2"), Some("missed 2")),
            cand("3", &["a"], None, Some("waiting for limit a")),
        ];
        assert!(st.unknown_keys(&page2).is_empty(), "a is already locked and counted");
        st.admit_page(&page2, 5);
        assert_eq!(st.plan.held, 2);
        assert_eq!(st.plan.held_reasons, vec![("2".to_string(), "missed 2; waiting for limit a".to_string())]);
        assert_eq!(st.seen.len(), 3);
    }

    #[test]
    fn runs_of_keys_another_claimer_holds_are_left_alone() {
        let defs = vec![def("a", max_running(5))];
        let page = [cand("1", &["a"], None, None), cand("2", &["b"], None, None)];
        let mut st = ClaimState::default();
        let keys = st.unknown_keys(&page);
        let governed = st.resolve(keys, &defs);
        assert_eq!(governed, vec![("a".to_string(), max_running(5))]);
        st.counted(vec![], vec!["a".into()]);
        st.admit_page(&page, 5);
        assert_eq!((st.plan.claim.clone(), st.plan.held), (vec!["2".to_string()], 0));
    }

    #[test]
    fn claimed_runs_log_a_start_per_rate_governed_key() {
        let rate = Rate { count: 10, per: Duration::from_secs(60) };
        let defs = vec![def("r", LimitBounds { max_running: None, rate: Some(rate) }), def("m", max_running(5))];
        let page = [cand("1", &["m", "r", "free"], None, None)];
        let mut st = ClaimState::default();
        lock_all(&mut st, &page, &defs);
        st.admit_page(&page, 1);
        assert_eq!(st.plan.starts, vec!["r".to_string()]);
        let now = Timestamp::from_timestamp(1_000, 0).unwrap();
        assert_eq!(st.expired_starts(now), vec![("r".to_string(), 940_000_000)]);
        assert_eq!(window_floor_us(&max_running(1), now), i64::MAX);
    }

    #[test]
    fn pages_share_one_budget_of_room() {
        let mut st = ClaimState::default();
        let page: Vec<Candidate> = (0..3).map(|i| cand(&i.to_string(), &[], None, None)).collect();
        assert_eq!(st.admit_page(&page, 4), 3);
        let page2: Vec<Candidate> = (3..6).map(|i| cand(&i.to_string(), &[], None, None)).collect();
        assert_eq!(st.admit_page(&page2, 4), 4);
        assert_eq!(scan_budget(4), 80);
    }
}
