//! The cluster chaos driver for as long as you like:
//! `cargo build --release -p sundial --examples && ./target/release/examples/cluster_chaos --duration 10m`
//! (PostgreSQL admin URL from `--pg`, default `postgres://postgres@127.0.0.1:5432/postgres`).

#[path = "../tests/chaos/mod.rs"]
mod chaos;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut duration = std::time::Duration::from_secs(60);
    let mut pg = "postgres://postgres@127.0.0.1:5432/postgres".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--duration" => {
                duration = humantime::parse_duration(&args.next().expect("--duration VALUE")).expect("duration")
            }
            "--pg" => pg = args.next().expect("--pg URL"),
            other => panic!("unknown argument {other}; usage: cluster_chaos [--duration 10m] [--pg URL]"),
        }
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sundial");
    assert!(bin.exists(), "build the binary first: cargo build --release -p sundial");
    let report = chaos::run(chaos::Config {
        bin,
        pg_admin_url: pg,
        duration,
        nodes: 3,
        workers: 2,
        cron_triggers: 200,
        jobs_per_s: 20,
        kill_every: std::time::Duration::from_secs(4),
        limits: None,
    })
    .await;
    println!("{report}");
    let ok = report.runs_lost == 0 && report.fires_duplicated == 0 && report.fire_gaps == 0;
    std::process::exit(if ok { 0 } else { 1 });
}
