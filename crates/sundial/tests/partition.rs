//! A network-partitioned worker stops its run before its lease ends (self-fencing).
//! The worker process reaches the server through a TCP proxy that the test cuts; the running
//! shell command writes a heartbeat file every 100 ms, and must stop before the server's lease
//! (counted from the worker's last successful heartbeat) runs out.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod support;
use sundial_core::testing::eventually;
use support::*;

/// Forwards TCP to `target` until `cut` is set; then drops every connection and refuses new ones.
async fn proxy(target: String, cut: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            if cut.load(Ordering::SeqCst) {
                continue; // dropped: the connection closes
            }
            let target = target.clone();
            let cut = cut.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                tokio::select! {
                    _ = copy => {}
                    _ = async { while !cut.load(Ordering::SeqCst) { tokio::time::sleep(Duration::from_millis(10)).await } } => {}
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn partitioned_worker_stops_its_run_before_the_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let lease = Duration::from_secs(3);
    let _server = serve(&format!("sqlite://{}/p.db", dir.path().display()), port, &["--workers", "0", "--lease", "3s"]);
    wait_ready(&base).await;
    let http = reqwest::Client::new();
    let cut = Arc::new(AtomicBool::new(false));
    let proxy_port = proxy(format!("127.0.0.1:{port}"), cut.clone()).await;
    let proxied = format!("http://127.0.0.1:{proxy_port}");
    let _worker = worker(&proxied, &["--enable-shell", "--capacity", "1"]);
    let beat = dir.path().join("beat");
    // Written aside and renamed: a handler killed mid-write never leaves an empty file behind.
    let cmd = format!("while true; do date +%s%N > {0}.tmp && mv {0}.tmp {0}; sleep 0.1; done", beat.display());
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"handler": "shell", "payload": {"command": cmd}, "retry": {"max_attempts": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    // Let it run through a few heartbeats, then cut the network.
    let beat_ref = &beat;
    eventually("the run to start", Duration::from_secs(30), move || async move { beat_ref.exists().then_some(()) })
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let cut_at = SystemTime::now();
    cut.store(true, Ordering::SeqCst);

    // The server's lease can end no earlier than `lease` after the cut (the last renewal was
    // before it). The handler must have stopped writing before then.
    tokio::time::sleep(lease + Duration::from_millis(1500)).await;
    let last_beat_ns: u128 = std::fs::read_to_string(&beat).unwrap().trim().parse().unwrap();
    let cut_ns = cut_at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    let stopped_after_cut = Duration::from_nanos(last_beat_ns.saturating_sub(cut_ns) as u64);
    eprintln!("handler stopped {stopped_after_cut:?} after the partition (lease {lease:?})");
    assert!(stopped_after_cut < lease, "the handler ran {stopped_after_cut:?} past the cut: beyond the lease");

    // The server, for its part, expired the lease: the single attempt ended failed.
    let (http, base) = (&http, &base);
    let runs = eventually("the run to end failed", Duration::from_secs(20), move || async move {
        let runs: Value = http.get(format!("{base}/v1/runs?job_id={id}")).send().await.unwrap().json().await.unwrap();
        (runs["items"][0]["state"] == "failed").then_some(runs)
    })
    .await;
    assert_eq!(runs["items"][0]["reason"], "lease expired");
}
