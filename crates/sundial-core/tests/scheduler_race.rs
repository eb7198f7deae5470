//! Guarantee 2 with two scheduler loops on one SQLite file: a cron trigger every second, the
//! shared manual clock stepped a second at a time; both loops wake on every step and race.
//! Exactly one run per second, no gaps.

use std::sync::Arc;
use std::time::Duration;
use sundial_core::clock::{Clock, ManualClock, SharedClock};
use sundial_core::domain::{job::JobRequest, trigger::TriggerWire, JobSpec};
use sundial_core::scheduler::{Scheduler, SchedulerConfig};
use sundial_core::signals::Signals;
use sundial_core::store::{JobCreate, RunFilter};
use sundial_core::testing::eventually;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_scheduler_loops_on_one_file_fire_each_second_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/race.db", dir.path().display());
    let a = sundial_core::store::open(&url).await.unwrap();
    let b = sundial_core::store::open(&url).await.unwrap();
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-24T08:00:00.500Z").unwrap().with_timezone(&chrono::Utc);
    let clock = Arc::new(ManualClock::new(start));
    let shared: SharedClock = clock.clone();

    let spec = JobSpec::from_request(JobRequest {
        handler: "echo".into(),
        triggers: Some(vec![TriggerWire {
            kind: "cron".into(),
            expr: Some("* * * * * *".into()),
            ..Default::default()
        }]),
        ..Default::default()
    })
    .unwrap();
    let job = a.job_create_many(vec![JobCreate { spec, derived_idempotency_key: None }], start).await.unwrap();
    let job_id = job.into_iter().next().unwrap().unwrap().job.id;

    let stop = CancellationToken::new();
    let config = SchedulerConfig { max_idle: Duration::from_secs(3600), ..Default::default() };
    for store in [a.clone(), b.clone()] {
        let s = Scheduler::new(store, shared.clone(), Arc::new(Signals::default()), config);
        tokio::spawn(s.run(stop.clone()));
    }

    let seconds = 10;
    for _ in 0..seconds {
        clock.advance(Duration::from_secs(1));
        let now = clock.now();
        // Bounded wait for the loops to catch up with the clock (not a timing assertion).
        eventually(&format!("the schedulers to catch up at {now}"), Duration::from_secs(10), || async {
            let j = a.job_get(&job_id, now).await.unwrap();
            j.triggers[0].next_fire_at.is_some_and(|n| n > now).then_some(())
        })
        .await;
    }
    stop.cancel();

    let runs = a.run_list(&RunFilter { job_id: Some(job_id), limit: 1000, ..Default::default() }).await.unwrap().items;
    let mut times: Vec<_> = runs.iter().map(|r| r.scheduled_for).collect();
    times.sort();
    let base = chrono::DateTime::parse_from_rfc3339("2026-11-24T08:00:00Z").unwrap().with_timezone(&chrono::Utc);
    let expected: Vec<_> = (1..=seconds).map(|i| base + chrono::Duration::seconds(i)).collect();
    assert_eq!(times, expected, "one run per second, no duplicates, no gaps");
}
