//! Limits: flow control per key. A claim admits a run only while each governed key it names
//! has room under `max_running` and its rate window; patterns apply per concrete key; claims
//! take turns across first keys; limits are stored objects.

use super::*;
use crate::domain::limit::{LimitBounds, LimitKey, Rate};
use std::collections::HashMap;

fn key(s: &str) -> LimitKey {
    LimitKey::parse(s).expect("valid key")
}
fn max_running(n: u32) -> LimitBounds {
    LimitBounds { max_running: Some(n), rate: None }
}
fn keyed(keys: &[&str]) -> JobRequest {
    JobRequest { limits: Some(keys.iter().map(|k| k.to_string()).collect()), ..job("echo") }
}

/// Creates `n` due-now jobs naming `keys`; returns their jobs' ids.
async fn due(h: &Harness, keys: &[&str], n: usize, now: Timestamp) -> Vec<String> {
    let subs = (0..n).map(|_| submission(keyed(keys))).collect();
    let out = h.store.job_create_many(subs, now).await.expect("create");
    out.into_iter().map(|r| r.expect("created").job.id).collect()
}

/// Running runs per key, as the store counts them.
async fn running(h: &Harness, k: &str) -> u64 {
    h.store.limit_running(&[k.to_string()]).await.expect("limit_running").get(k).copied().unwrap_or(0)
}

/// A limit written is read back, listed and deleted as written.
pub async fn limit_put_get_list_delete_round_trip(h: Harness) {
    let t = h.store.limit_put(&key("tenant:*"), max_running(2), h.now).await.expect("put");
    assert_eq!((t.key.as_string(), t.bounds.max_running, t.created_at), ("tenant:*".into(), Some(2), h.now));
    let rate = Rate { count: 100, per: Duration::from_secs(60) };
    h.store.limit_put(&key("smtp"), LimitBounds { max_running: None, rate: Some(rate) }, h.now).await.expect("put");
    // A replace keeps created_at and moves updated_at.
    let r = h.store.limit_put(&key("tenant:*"), max_running(3), h.t(5.0)).await.expect("replace");
    assert_eq!((r.bounds.max_running, r.created_at, r.updated_at), (Some(3), h.now, h.t(5.0)));
    let mut defs = h.other.limit_defs().await.expect("defs");
    defs.sort_by_key(|d| d.key.as_string());
    let shown: Vec<_> = defs.iter().map(|d| (d.key.as_string(), d.bounds)).collect();
    assert_eq!(
        shown,
        vec![
            ("smtp".to_string(), LimitBounds { max_running: None, rate: Some(rate) }),
            ("tenant:*".to_string(), max_running(3)),
        ]
    );
    h.store.limit_delete(&key("smtp")).await.expect("delete");
    assert_not_found(h.store.limit_delete(&key("smtp")).await, "second delete");
    assert_eq!(h.store.limit_defs().await.expect("defs").len(), 1);
}

/// Runs keep the keys their job had when they were created.
pub async fn runs_keep_their_jobs_keys_from_when_they_were_created(h: Harness) {
    let j = h.create(keyed(&["tenant:1", "smtp"]), h.now).await;
    assert_eq!(j.limits, vec!["tenant:1".to_string(), "smtp".to_string()]);
    let mut changed = spec(j.to_request());
    changed.limits = vec!["tenant:2".into()];
    let j2 = h.store.job_update(&j.id, changed, h.t(1.0)).await.expect("update");
    assert_eq!(j2.limits, vec!["tenant:2".to_string()]);
    let runs = h.runs(&j.id).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].limits, vec!["tenant:1".to_string(), "smtp".to_string()]);
}

/// A claim leaves runs past `max_running` pending, with a reason naming the limit.
pub async fn claim_holds_runs_past_max_running_and_says_why(h: Harness) {
    h.store.limit_put(&key("a"), max_running(2), h.now).await.expect("put");
    due(&h, &["a"], 3, h.now).await;
    let free = due(&h, &[], 1, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    let got = h.claim(&w.id, 10, h.now).await;
    assert_eq!(got.len(), 3, "two of key a and the one without keys");
    assert!(got.iter().any(|c| c.job_id == free[0]));
    assert_eq!(running(&h, "a").await, 2);
    let pending: Vec<Run> = h
        .store
        .run_list(&RunFilter { state: Some(RunState::Pending), limit: 10, ..Default::default() })
        .await
        .expect("list")
        .items;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].reason.as_deref(), Some("waiting for limit a"));
    // One finishes: the held run is claimed, and its waiting reason goes.
    let first = got.iter().find(|c| c.job_id != free[0]).expect("a run of a");
    h.complete(completion(first, &w.id, RunState::Succeeded), h.t(1.0)).await.expect("complete");
    assert_eq!(running(&h, "a").await, 1);
    let next = h.claim(&w.id, 10, h.t(1.0)).await;
    assert_eq!(next.len(), 1);
    assert_eq!(h.run(&next[0].run_id).await.reason, None);
    assert_eq!(running(&h, "a").await, 2);
}

/// Lowering `max_running` stops new claims of the key until its running count is below it.
pub async fn lowering_max_running_stops_new_claims_until_below(h: Harness) {
    h.store.limit_put(&key("a"), max_running(3), h.now).await.expect("put");
    due(&h, &["a"], 5, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    let got = h.claim(&w.id, 10, h.now).await;
    assert_eq!(got.len(), 3);
    h.store.limit_put(&key("a"), max_running(1), h.now).await.expect("lower");
    h.complete(completion(&got[0], &w.id, RunState::Succeeded), h.t(1.0)).await.expect("complete");
    assert!(h.claim(&w.id, 10, h.t(1.0)).await.is_empty(), "2 running, max 1: nothing new");
    h.complete(completion(&got[1], &w.id, RunState::Succeeded), h.t(2.0)).await.expect("complete");
    h.complete(completion(&got[2], &w.id, RunState::Succeeded), h.t(2.0)).await.expect("complete");
    assert_eq!(h.claim(&w.id, 10, h.t(2.0)).await.len(), 1);
}

/// A pattern governs each matching key on its own, and an exact limit wins over it.
pub async fn a_pattern_governs_each_key_separately_and_an_exact_limit_wins(h: Harness) {
    h.store.limit_put(&key("tenant:*"), max_running(1), h.now).await.expect("put");
    h.store.limit_put(&key("tenant:vip"), max_running(3), h.now).await.expect("put");
    for k in ["tenant:1", "tenant:2", "tenant:vip"] {
        due(&h, &[k], 4, h.now).await;
    }
    let w = h.worker(&["echo"], h.now).await;
    let got = h.claim(&w.id, 100, h.now).await;
    assert_eq!(got.len(), 5, "one each for tenant:1 and tenant:2, three for tenant:vip");
    let counts = h.store.limit_running(&["tenant:1".into(), "tenant:2".into(), "tenant:vip".into()]).await.unwrap();
    assert_eq!(counts, HashMap::from([("tenant:1".into(), 1), ("tenant:2".into(), 1), ("tenant:vip".into(), 3)]));
}

/// A run is claimed only when every governed key it names has room.
pub async fn every_governed_key_of_a_run_must_have_room(h: Harness) {
    h.store.limit_put(&key("smtp"), max_running(1), h.now).await.expect("put");
    due(&h, &["tenant:1", "smtp"], 1, h.now).await;
    due(&h, &["tenant:2", "smtp"], 1, h.now).await;
    due(&h, &["tenant:3"], 1, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    assert_eq!(h.claim(&w.id, 10, h.now).await.len(), 2, "smtp admits one; tenant:3 is not limited");
}

/// The rate window is `[t, t + per)`: a start at `t` holds its slot until just before `t + per`.
pub async fn rate_window_is_exact_at_its_edges(h: Harness) {
    let rate = Rate { count: 2, per: Duration::from_secs(60) };
    h.store.limit_put(&key("api"), LimitBounds { max_running: None, rate: Some(rate) }, h.now).await.expect("put");
    due(&h, &["api"], 5, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    let first = h.claim(&w.id, 10, h.now).await;
    assert_eq!(first.len(), 2);
    for c in &first {
        h.complete(completion(c, &w.id, RunState::Succeeded), h.t(0.5)).await.expect("complete");
    }
    let one_more = h.claim(&w.id, 10, h.t(30.0)).await;
    assert!(one_more.is_empty(), "finished runs still count as starts in their window");
    assert!(h.claim(&w.id, 10, h.t(59.999_999)).await.is_empty(), "one microsecond before the window ends");
    let second = h.claim(&w.id, 10, h.t(60.0)).await;
    assert_eq!(second.len(), 2, "at t + per both slots are free again");
    // Each attempt is a start: the two just claimed fill the window from t+60 s.
    assert!(h.claim(&w.id, 10, h.t(119.999_999)).await.is_empty());
    assert_eq!(h.claim(&w.id, 10, h.t(120.0)).await.len(), 1);
}

/// A run whose lease expired still counts until the reaper recovers it.
pub async fn an_expired_lease_counts_until_it_is_reaped(h: Harness) {
    h.store.limit_put(&key("a"), max_running(1), h.now).await.expect("put");
    due(&h, &["a"], 2, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    assert_eq!(h.claim(&w.id, 10, h.now).await.len(), 1);
    let after_expiry = h.t(LEASE.as_secs_f64() + 1.0);
    let w2 = h.worker(&["echo"], after_expiry).await;
    assert!(h.claim(&w2.id, 10, after_expiry).await.is_empty(), "not reaped yet: still running");
    assert_eq!(running(&h, "a").await, 1);
    let report = h.reap(after_expiry).await;
    assert_eq!(report.expired.len(), 1);
    assert_eq!(running(&h, "a").await, 0);
    assert_eq!(h.claim(&w2.id, 10, after_expiry).await.len(), 1);
}

/// Claims take turns across first keys: a key with a backlog does not hold back another's runs.
pub async fn claims_take_turns_across_first_keys(h: Harness) {
    due(&h, &["A"], 200, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    assert_eq!(h.claim(&w.id, 20, h.t(1.0)).await.len(), 20);
    let b = due(&h, &["B"], 5, h.t(2.0)).await;
    let mut b_claimed = 0;
    let mut a_claimed = 0;
    while b_claimed < 5 {
        for c in h.claim(&w.id, 2, h.t(3.0)).await {
            if b.contains(&c.job_id) {
                b_claimed += 1;
            } else {
                a_claimed += 1;
            }
        }
        assert!(a_claimed <= 6, "B's 5 runs wait behind {a_claimed} of A's");
    }
}

/// A run naming no key takes the floor turn (beside the oldest waiting run), so a plain job
/// submitted behind a key's backlog is claimed right after the backlog's (older) head, neither
/// before it nor behind the rest: whether submitted alone or in a batch with a named job.
pub async fn plain_runs_take_the_floor_turn_beside_a_backlog(h: Harness) {
    due(&h, &["A"], 100, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    assert_eq!(h.claim(&w.id, 20, h.t(1.0)).await.len(), 20);
    let alone = h.store.job_create_many(vec![submission(job("echo"))], h.t(2.0)).await.expect("create");
    let alone = alone.into_iter().next().unwrap().expect("created").job.id;
    let named = submission(JobRequest { name: Some("n".into()), ..job("echo") });
    let mixed = h.store.job_create_many(vec![submission(job("echo")), named], h.t(2.0)).await.expect("create");
    let mut plain: Vec<String> = mixed.into_iter().map(|r| r.expect("created").job.id).collect();
    plain.push(alone);
    let mut a_claimed = 0;
    while !plain.is_empty() {
        for c in h.claim(&w.id, 1, h.t(3.0)).await {
            match plain.iter().position(|id| *id == c.job_id) {
                Some(i) => {
                    plain.remove(i);
                }
                None => a_claimed += 1,
            }
        }
        assert!(a_claimed <= 1, "plain runs wait behind {a_claimed} of A's backlog");
    }
    // The floor is the turn of A's head, which is older: it goes first, then the plain runs.
    assert_eq!(a_claimed, 1, "plain runs took a turn below the floor");
}

/// Two handles (two nodes) racing claims on one key never have more than `max_running` running.
pub async fn concurrent_claims_on_two_handles_never_exceed_max_running(h: Harness) {
    h.store.limit_put(&key("hot"), max_running(2), h.now).await.expect("put");
    due(&h, &["hot"], 40, h.now).await;
    let w1 = h.worker(&["echo"], h.now).await;
    let w2 = h.worker(&["echo"], h.now).await;
    let mut done = 0;
    let mut round = 0;
    while done < 40 {
        round += 1;
        assert!(round < 200, "stuck after {done} runs");
        let now = h.t(round as f64);
        let p = |s: &SharedStore, w: &str| {
            let s = s.clone();
            let params = ClaimParams { worker_id: w.to_string(), max: 5, lease: LEASE, now };
            tokio::spawn(async move { s.run_claim(&params).await })
        };
        let (a, b) = (p(&h.store, &w1.id), p(&h.other, &w2.id));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let (a, b) = (retry_transient(a), retry_transient(b));
        assert!(a.len() + b.len() <= 2, "round {round}: {} + {} claimed with max_running 2", a.len(), b.len());
        assert!(running(&h, "hot").await <= 2);
        for (c, w) in a.iter().map(|c| (c, &w1.id)).chain(b.iter().map(|c| (c, &w2.id))) {
            h.complete(completion(c, w, RunState::Succeeded), now).await.expect("complete");
            done += 1;
        }
    }
}

/// A claim that lost a race to a deadlock or serialization check may simply be retried; here
/// it counts as having claimed nothing.
fn retry_transient(r: Result<Vec<ClaimedRun>, StoreError>) -> Vec<ClaimedRun> {
    match r {
        Ok(v) => v,
        Err(StoreError::Unavailable(_)) => Vec::new(),
        Err(e) => panic!("claim: {e}"),
    }
}
