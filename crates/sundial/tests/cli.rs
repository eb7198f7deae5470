//! The `sundial` client commands, run as the real binary against a real `sundial serve`.

use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use sundial_core::testing::eventually;

mod support;
use support::*;

struct Server {
    base: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

async fn start(workers: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let proc = serve(&format!("sqlite://{}/c.db", dir.path().display()), port, &["--workers", workers]);
    wait_ready(&base).await;
    Server { base, _proc: proc, _dir: dir }
}

/// `sundial --server BASE args…`, run to its end off the async runtime.
async fn cli(base: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--server").arg(base).args(args).env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "exit {}:\nstdout: {}\nstderr: {}", o.status, stdout(&o), stderr(&o));
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_are_named_by_id_namespace_slash_name_or_bare_name() {
    let s = start("1").await;
    let added = ok(cli(
        &s.base,
        &["-o", "json", "job", "add", "--name", "nightly", "--handler", "echo", "--cron", "0 3 * * *"],
    )
    .await);
    let id = serde_json::from_str::<Value>(&stdout(&added)).unwrap()["id"].as_str().unwrap().to_string();
    ok(cli(
        &s.base,
        &["job", "add", "--name", "nightly", "--namespace", "billing", "--handler", "echo", "--every", "1h"],
    )
    .await);

    let by_bare = ok(cli(&s.base, &["-o", "json", "job", "get", "nightly"]).await);
    assert_eq!(serde_json::from_str::<Value>(&stdout(&by_bare)).unwrap()["id"], id.as_str());
    ok(cli(&s.base, &["job", "pause", "billing/nightly"]).await);
    let jobs = get_json(&s.base, "/v1/jobs?namespace=billing").await;
    assert_eq!(jobs["items"][0]["paused"], true, "billing/nightly paused: {jobs}");
    assert_eq!(get_json(&s.base, &format!("/v1/jobs/{id}")).await["paused"], false, "default/nightly untouched");

    let run = ok(cli(&s.base, &["-o", "json", "job", "run", "default/nightly"]).await);
    let run: Value = serde_json::from_str(&stdout(&run)).unwrap();
    assert_eq!(run["job_id"], id.as_str());
    wait_run(&s.base, run["id"].as_str().unwrap(), "succeeded").await;
    let listed = ok(cli(&s.base, &["-o", "json", "run", "list", "--job", "nightly"]).await);
    let listed: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    let detail = stdout(&ok(cli(&s.base, &["job", "get", id.as_str()]).await));
    assert!(detail.contains("TRIGGERS") && detail.contains("0 3 * * *"), "{detail}");
    assert!(detail.contains("RECENT RUNS") && detail.contains("succeeded"), "{detail}");

    let missing = cli(&s.base, &["job", "get", "nope"]).await;
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no job named \"nope\" in namespace \"default\""), "{}", stderr(&missing));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_get_shows_payload_and_output_and_watch_follows_to_the_end() {
    let s = start("1").await;
    let job: Value =
        post_json(&s.base, "/v1/jobs", &json!({"handler": "echo", "payload": {"greeting": "hello-from-payload"}}))
            .await;
    let runs = get_json(&s.base, &format!("/v1/runs?job_id={}", job["id"].as_str().unwrap())).await;
    let run_id = runs["items"][0]["id"].as_str().unwrap().to_string();
    let watched = ok(cli(&s.base, &["run", "watch", &run_id]).await);
    assert!(stdout(&watched).contains("succeeded"), "{}", stdout(&watched));

    let detail = stdout(&ok(cli(&s.base, &["run", "get", &run_id]).await));
    assert!(detail.contains("output:") && detail.contains("hello-from-payload"), "{detail}");

    // A run that fails: watch exits non-zero and says how it ended.
    let bad: Value = post_json(
        &s.base,
        "/v1/jobs",
        &json!({"handler": "http", "payload": {"url": "http://127.0.0.1:1/"}, "retry": {"max_attempts": 1}}),
    )
    .await;
    let runs = get_json(&s.base, &format!("/v1/runs?job_id={}", bad["id"].as_str().unwrap())).await;
    let failed = cli(&s.base, &["run", "watch", runs["items"][0]["id"].as_str().unwrap()]).await;
    assert!(!failed.status.success());
    assert!(stderr(&failed).contains("ended failed"), "{}", stderr(&failed));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_list_watch_prints_runs_as_they_change() {
    let s = start("1").await;
    let mut watch = Command::new(BIN)
        .args(["--server", &s.base, "run", "list", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Lines::collect(watch.stdout.take().unwrap());
    lines.wait_for("of header", |_| true).await;
    let job: Value = post_json(&s.base, "/v1/jobs", &json!({"handler": "echo"})).await;
    let job_id = job["id"].as_str().unwrap();
    lines.wait_for("showing the run succeed", |l| l.contains(job_id) && l.contains("succeeded")).await;
    let _ = watch.kill();
    let _ = watch.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_creates_then_leaves_unchanged_then_updates_by_name() {
    let s = start("0").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.yaml");
    let write = |report: &str| {
        std::fs::write(
            &file,
            format!(
                "jobs:\n  - name: report\n    handler: echo\n    payload: {{kind: {report}}}\n    triggers:\n      - {{kind: cron, expr: \"0 6 * * *\", timezone: Europe/Berlin}}\n  - name: cleanup\n    namespace: ops\n    handler: echo\n"
            ),
        )
        .unwrap()
    };
    let f = file.to_str().unwrap();
    write("daily");
    let first = stdout(&ok(cli(&s.base, &["apply", "-f", f]).await));
    assert_eq!(first, "job default/report created\njob ops/cleanup created\n");
    let again = stdout(&ok(cli(&s.base, &["apply", "-f", f]).await));
    assert_eq!(again, "job default/report unchanged\njob ops/cleanup unchanged\n");
    write("weekly");
    let changed = stdout(&ok(cli(&s.base, &["apply", "-f", f]).await));
    assert_eq!(changed, "job default/report updated\njob ops/cleanup unchanged\n");
    let jobs = get_json(&s.base, "/v1/jobs?namespace=default").await;
    let items = jobs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "updated in place, not duplicated: {jobs}");
    assert_eq!(items[0]["payload"], json!({"kind": "weekly"}));

    std::fs::write(&file, "- handler: echo\n").unwrap();
    let unnamed = cli(&s.base, &["apply", "-f", f]).await;
    assert!(!unnamed.status.success());
    assert!(stderr(&unnamed).contains("jobs[0].name"), "{}", stderr(&unnamed));
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_hint_when_cut_and_print_yaml_or_json() {
    let s = start("0").await;
    for i in 0..3 {
        ok(cli(&s.base, &["job", "add", "--handler", "echo", "--name", &format!("j{i}"), "--every", "1h"]).await);
    }
    let cut = ok(cli(&s.base, &["job", "list", "--limit", "2"]).await);
    assert_eq!(stdout(&cut).lines().count(), 3, "header and two rows: {}", stdout(&cut));
    let hint = stderr(&cut);
    let cursor = hint.split("--cursor ").nth(1).expect("a hint naming --cursor").trim().trim_end_matches(')');
    let rest = ok(cli(&s.base, &["job", "list", "--limit", "2", "--cursor", cursor]).await);
    assert_eq!(stdout(&rest).lines().count(), 2, "the last job: {}", stdout(&rest));
    assert!(!stderr(&rest).contains("--cursor"), "the last page has no hint");

    let yaml = stdout(&ok(cli(&s.base, &["-o", "yaml", "job", "list"]).await));
    let parsed: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(parsed, get_json(&s.base, "/v1/jobs").await, "yaml is the API's object");
}

#[tokio::test(flavor = "multi_thread")]
async fn job_add_warns_when_no_live_worker_serves_the_handler() {
    let s = start("1").await;
    eventually("the in-process pool to register", Duration::from_secs(30), || async {
        get_json(&s.base, "/v1/workers").await["items"].as_array().is_some_and(|w| !w.is_empty()).then_some(())
    })
    .await;
    let served = ok(cli(&s.base, &["job", "add", "--handler", "echo"]).await);
    assert!(!stderr(&served).contains("warning"), "{}", stderr(&served));
    let unserved = ok(cli(&s.base, &["job", "add", "--handler", "resize-images"]).await);
    assert!(
        stderr(&unserved).contains("warning: no live worker serves handler \"resize-images\""),
        "{}",
        stderr(&unserved)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_server_urls_and_times_get_clear_messages() {
    let bad_url = cli("localhost:7070", &["job", "list"]).await;
    assert!(!bad_url.status.success());
    assert!(stderr(&bad_url).contains("--server: \"localhost:7070\""), "{}", stderr(&bad_url));

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let down = cli(&nobody, &["job", "list"]).await;
    assert!(!down.status.success());
    assert!(stderr(&down).contains(&format!("cannot reach the server at {nobody}")), "{}", stderr(&down));

    let bad_at = cli(&nobody, &["job", "add", "--handler", "echo", "--at", "tomorrow"]).await;
    assert!(!bad_at.status.success());
    assert!(stderr(&bad_at).contains("--at: \"tomorrow\" is not an RFC 3339 time"), "{}", stderr(&bad_at));
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(cli("http://127.0.0.1:1", &["completions", shell]).await);
        let script = stdout(&out);
        assert!(script.contains("apply") && script.contains("retry"), "{shell} completes subcommands:\n{script}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn calendar_commands_and_job_backfill() {
    let s = start("0").await;
    let set =
        ok(cli(&s.base, &["-o", "json", "calendar", "set", "hol", "--date", "2020-01-01", "--cron", "0 3 * * *"])
            .await);
    let cal: Value = serde_json::from_str(&stdout(&set)).unwrap();
    assert_eq!(cal["exclude"], json!([{"date": "2020-01-01"}, {"cron": "0 3 * * *"}]));
    let list = stdout(&ok(cli(&s.base, &["calendar", "list"]).await));
    assert!(list.contains("hol") && list.contains("UTC"), "{list}");
    assert_eq!(get_json(&s.base, "/v1/calendars/hol").await, cal);
    let trigger = json!({"kind": "cron", "expr": "0 * * * *", "calendars": ["hol"]});
    let body = json!({"handler": "echo", "name": "hourly", "triggers": [trigger]}).to_string();
    ok(cli(&s.base, &["job", "add", "--json", &body]).await);
    // 2020-01-02 00:00-06:00: six hours, 03:00 excluded.
    let args = [
        "-o",
        "json",
        "job",
        "backfill",
        "hourly",
        "--from",
        "2020-01-02T00:00:00Z",
        "--until",
        "2020-01-02T06:00:00Z",
    ];
    let out: Value = serde_json::from_str(&stdout(&ok(cli(&s.base, &args).await))).unwrap();
    assert_eq!(out, json!({"created": 5, "existing": 0}));
    let out: Value = serde_json::from_str(&stdout(&ok(cli(&s.base, &args).await))).unwrap();
    assert_eq!(out, json!({"created": 0, "existing": 5}));
    let refused = cli(&s.base, &["calendar", "delete", "hol"]).await;
    assert!(!refused.status.success() && stderr(&refused).contains("calendar_in_use"), "{}", stderr(&refused));
    ok(cli(&s.base, &["job", "delete", "hourly"]).await);
    ok(cli(&s.base, &["calendar", "delete", "hol"]).await);
}
