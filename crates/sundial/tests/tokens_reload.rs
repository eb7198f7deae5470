//! The tokens file is read again on SIGHUP (API.md "Tokens file"): a real `sundial serve`, a
//! token swapped in the file, a signal, and the new set in force; a bad file leaves the old set.

use std::process::{Command, Stdio};
use std::time::Duration;
use sundial_core::testing::eventually;

mod support;
use support::*;

fn tokens(plain: &str) -> String {
    format!(r#"{{"tokens": [{{"name": "ops", "token": "{plain}", "role": "admin", "namespaces": ["*"]}}]}}"#)
}

async fn status_with(base: &str, token: &str) -> u16 {
    let r = reqwest::Client::new().get(format!("{base}/v1/jobs")).bearer_auth(token).send().await.unwrap();
    r.status().as_u16()
}

fn hup(proc: &Proc) {
    let pid = proc.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_swaps_the_token_set_and_a_bad_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.json");
    std::fs::write(&file, tokens("first-secret")).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["serve", "--workers", "0", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--db", &format!("sqlite://{}/t.db", dir.path().display())])
        .args(["--tokens-file", file.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Lines::collect(child.stderr.take().unwrap());
    let server = Proc(child);
    wait_ready(&base).await;
    assert_eq!(status_with(&base, "first-secret").await, 200);
    assert_eq!(status_with(&base, "second-secret").await, 401);

    std::fs::write(&file, tokens("second-secret")).unwrap();
    hup(&server);
    eventually("the new token to be accepted", Duration::from_secs(30), || async {
        (status_with(&base, "second-secret").await == 200).then_some(())
    })
    .await;
    assert_eq!(status_with(&base, "first-secret").await, 401, "the old token is gone with its file entry");

    std::fs::write(&file, "{ not json").unwrap();
    hup(&server);
    log.wait_for("saying the tokens were not reloaded", |l| l.contains("tokens not reloaded")).await;
    assert_eq!(status_with(&base, "second-secret").await, 200, "a bad file leaves the previous set in force");
    assert!(
        log.all().iter().all(|l| !l.contains("second-secret") && !l.contains("first-secret")),
        "tokens are never logged"
    );
}
