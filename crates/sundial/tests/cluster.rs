//! Issue C's cluster test: 3 nodes on one PostgreSQL, 2 remote workers, 200 per-second cron
//! triggers and a stream of one-time jobs for about a minute while processes are SIGKILLed and
//! restarted. Nothing accepted is lost, no due time fires twice.

mod chaos;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_survives_sigkill_with_nothing_lost_or_doubled() {
    let report = chaos::run(chaos::Config {
        cron_triggers: 200,
        jobs_per_s: 20,
        ..chaos::Config::cluster(env!("CARGO_BIN_EXE_sundial"), 60)
    })
    .await;
    eprintln!("{report}");
    assert!(report.accepted_jobs > 0 && report.kills > 0);
    assert_eq!(report.runs_lost, 0, "{report}");
    assert_eq!(report.fires_duplicated, 0, "{report}");
    assert_eq!(report.fire_gaps, 0, "{report}");
    assert_eq!(report.one_time_runs_found as usize, report.accepted_jobs, "{report}");
    assert_eq!(report.cron_runs_found, report.cron_fires_expected, "every due time has its run: {report}");
}
