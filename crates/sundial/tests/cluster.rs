//! Issue C's cluster test: 3 nodes on one PostgreSQL, 2 remote workers, 200 per-second cron
//! triggers and a stream of one-time jobs for about a minute while processes are SIGKILLed and
//! restarted. Nothing accepted is lost, no due time fires twice.

mod chaos;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_survives_sigkill_with_nothing_lost_or_doubled() {
    let pg = std::env::var("SUNDIAL_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/sundial_test".into());
    let admin = format!("{}/postgres", pg.rsplit_once('/').unwrap().0);
    let secs = std::env::var("SUNDIAL_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let report = chaos::run(chaos::Config {
        bin: env!("CARGO_BIN_EXE_sundial").into(),
        pg_admin_url: admin,
        duration: std::time::Duration::from_secs(secs),
        nodes: 3,
        workers: 2,
        cron_triggers: 200,
        jobs_per_s: 20,
        kill_every: std::time::Duration::from_secs(4),
        limits: None,
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
