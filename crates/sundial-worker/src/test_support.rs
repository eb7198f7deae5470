//! Helpers shared by the unit tests: a one-shot HTTP server with a canned answer.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Answer one request with `status`, `content_type` and `body`; returns the base URL (no
/// trailing slash) and, when awaited, the raw request received.
pub(crate) async fn canned(
    status: &'static str,
    content_type: &'static str,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let request = read_request(&mut sock).await;
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await.ok();
        sock.write_all(body.as_bytes()).await.ok();
        sock.shutdown().await.ok();
        request
    });
    (url, task)
}

/// Read one request: headers, then `content-length` bytes of body.
pub(crate) async fn read_request(sock: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&data).into_owned()
}

/// Re-checks `holds` on the real clock until it is true; panics naming `what` after `timeout`.
/// For conditions no event reports (a child process's effects).
pub(crate) async fn eventually(what: &str, timeout: std::time::Duration, mut holds: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !holds() {
        assert!(std::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
