//! The built-in handlers of API.md: `echo`, `shell` and `http`, and [`register_builtins`] to
//! put them on a [`Worker`].

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::handler::{Handler, HandlerError, RunContext};
use crate::worker::Worker;

/// Names of the built-in handlers.
pub const BUILTIN_HANDLERS: &[&str] = &["echo", "shell", "http"];

/// Most bytes of a response body or of a command's stdout/stderr kept in the output.
pub const OUTPUT_LIMIT: usize = 1024 * 1024;

/// Add the built-in handlers to `worker`: `echo` and `http` always, `shell` only when
/// `enable_shell` (it runs arbitrary commands).
pub fn register_builtins(worker: Worker, enable_shell: bool) -> Worker {
    register_builtins_with(worker, enable_shell.then(ShellPolicy::default))
}

/// [`register_builtins`], with `shell` served under `shell`'s policy when it is `Some`.
pub fn register_builtins_with(worker: Worker, shell: Option<ShellPolicy>) -> Worker {
    let worker = worker.handler("echo", Echo).handler("http", Http::new());
    match shell {
        Some(policy) => worker.handler("shell", Shell::new(policy)),
        None => worker,
    }
}

/// What a `shell` command may see and run (`--shell-env`, `--shell-allow`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellPolicy {
    /// Environment variables passed on besides `PATH`, `HOME` and `LANG`.
    pub env: Vec<String>,
    /// When not empty: the command is split into words (POSIX quoting) and run directly, and
    /// its first word must be one of these program names.
    pub allow: Vec<String>,
}

/// Variables every command gets (when the worker has them).
const SHELL_BASE_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

/// The error of a command the allow-list refuses.
pub const COMMAND_NOT_ALLOWED: &str = "command not allowed";

impl ShellPolicy {
    /// The program and its arguments: `sh -c COMMAND`, or with an allow-list the command's own
    /// words, whose first must be allowed.
    fn argv(&self, command: &str) -> Result<Vec<String>, HandlerError> {
        if self.allow.is_empty() {
            return Ok(vec!["sh".into(), "-c".into(), command.into()]);
        }
        match shlex::split(command) {
            Some(words) if words.first().is_some_and(|w| self.allow.contains(w)) => Ok(words),
            // Not retried: the same command is refused on every attempt.
            _ => Err(HandlerError::new(COMMAND_NOT_ALLOWED).no_retry()),
        }
    }

    /// The command's environment: the base variables and the named ones, nothing else.
    fn env(&self) -> Vec<(String, String)> {
        SHELL_BASE_ENV
            .iter()
            .map(|n| n.to_string())
            .chain(self.env.iter().cloned())
            .filter_map(|name| std::env::var(&name).ok().map(|v| (name, v)))
            .collect()
    }
}

fn bad_payload(e: serde_json::Error) -> HandlerError {
    HandlerError::new(format!("payload: {e}"))
}

/// `echo`: output = payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

#[async_trait::async_trait]
impl Handler for Echo {
    async fn call(&self, ctx: RunContext) -> Result<Value, HandlerError> {
        Ok(ctx.payload)
    }
}

/// `shell`: payload `{"command": "..."}`, run by `sh -c` (or, with an allow-list, directly)
/// in a process group of its own, with a clean environment (see [`ShellPolicy`]); output
/// `{"exit_code", "stdout", "stderr"}`; a non-zero exit is a failure (with that output).
///
/// The run owns its process group: when the command ends, is cancelled or times out, the
/// whole group is killed, so background children neither outlive the run nor hold its pipes.
#[derive(Debug, Clone, Default)]
pub struct Shell {
    policy: Arc<ShellPolicy>,
}

impl Shell {
    /// A `shell` handler under `policy`.
    pub fn new(policy: ShellPolicy) -> Self {
        Self { policy: Arc::new(policy) }
    }
}

#[derive(Deserialize)]
struct ShellPayload {
    command: String,
}

#[async_trait::async_trait]
impl Handler for Shell {
    async fn call(&self, ctx: RunContext) -> Result<Value, HandlerError> {
        let payload: ShellPayload = serde_json::from_value(ctx.payload).map_err(bad_payload)?;
        let argv = self.policy.argv(&payload.command)?;
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            // Only what the policy names: the worker's own secrets stay with the worker.
            .env_clear()
            .envs(self.policy.env())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HandlerError::new(format!("spawning {}: {e}", argv[0])))?;
        // Killed on drop too: if this future is aborted, the group still dies.
        let mut group = ProcessGroup(child.id().and_then(|pid| i32::try_from(pid).ok()));
        let stdout = Capture::start(child.stdout.take());
        let stderr = Capture::start(child.stderr.take());

        let status = tokio::select! {
            status = child.wait() => Some(status),
            _ = ctx.cancel.cancelled() => None,
        };
        group.kill();
        let status = match status {
            Some(status) => status,
            None => child.wait().await, // reap the killed leader
        }
        .map_err(|e| HandlerError::new(format!("waiting for {}: {e}", argv[0])))?;

        let exit_code = exit_code(&status);
        let output = json!({
            "exit_code": exit_code,
            "stdout": stdout.finish().await,
            "stderr": stderr.finish().await,
        });
        if ctx.cancel.is_cancelled() {
            Err(HandlerError::new("command killed").with_output(output))
        } else if status.success() {
            Ok(output)
        } else {
            Err(HandlerError::new(format!("command exited with code {exit_code}")).with_output(output))
        }
    }
}

/// Exit code, or 128 + signal for a command killed by a signal (the shell's convention).
fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

/// A process group to SIGKILL once: explicitly, or on drop.
struct ProcessGroup(Option<i32>);

impl ProcessGroup {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            kill_group(pgid);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL every process of group `pgid`.
#[allow(unsafe_code)]
fn kill_group(pgid: i32) {
    // kill(-1) would signal every process we may signal: never let a bad id get there.
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours; a negative pid
    // addresses the process group. ESRCH (group already gone) is fine and ignored.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Reads a pipe to its end in the background, keeping the first [`OUTPUT_LIMIT`] bytes (and
/// draining the rest, so the writer never blocks on a full pipe).
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    fn start<R: AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let task = pipe.map(|mut pipe| {
            let buf = buf.clone();
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 64 * 1024];
                while let Ok(n) = pipe.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    let mut buf = buf.lock().unwrap();
                    let keep = n.min(OUTPUT_LIMIT - buf.len());
                    buf.extend_from_slice(&chunk[..keep]);
                }
            })
        });
        Self { buf, task }
    }

    /// What was read. Waits briefly for the end of the pipe: a process that escaped the group
    /// (e.g. with `setsid`) could hold it open forever.
    async fn finish(mut self) -> String {
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(1), &mut task).await.is_err() {
                task.abort();
            }
        }
        let buf = std::mem::take(&mut *self.buf.lock().unwrap());
        utf8_prefix(buf)
    }
}

/// Bytes as text: lossy for invalid UTF-8, but a character cut by the size limit at the very
/// end is dropped rather than shown as U+FFFD.
fn utf8_prefix(mut bytes: Vec<u8>) -> String {
    if let Err(e) = std::str::from_utf8(&bytes) {
        if e.error_len().is_none() {
            bytes.truncate(e.valid_up_to());
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `http`: payload `{"url", "method", "headers", "body"}`; a string body is sent as is, other
/// JSON as `application/json`; output `{"status", "body"}` with the first 1 MiB of the
/// response text; a non-2xx status is a failure (with that output).
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A handler with its own connection pool.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("sundial-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("building an HTTP client with static settings");
        Self { client }
    }
}

#[derive(Deserialize)]
struct HttpPayload {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    #[serde(default)]
    body: Value,
}

#[async_trait::async_trait]
impl Handler for Http {
    async fn call(&self, ctx: RunContext) -> Result<Value, HandlerError> {
        let payload: HttpPayload = serde_json::from_value(ctx.payload).map_err(bad_payload)?;
        let method = payload.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| HandlerError::new(format!("payload.method: not an HTTP method: {method:?}")))?;
        let mut req = self.client.request(method, &payload.url);
        for (name, value) in &payload.headers {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            req = req.header(name.as_str(), value);
        }
        req = match payload.body {
            Value::Null => req,
            Value::String(s) => req.body(s),
            other => req.json(&other),
        };
        let exchange = async {
            let mut resp = req.send().await.map_err(|e| HandlerError::new(format!("request failed: {e}")))?;
            let status = resp.status();
            let mut body = Vec::new();
            while body.len() < OUTPUT_LIMIT {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let keep = chunk.len().min(OUTPUT_LIMIT - body.len());
                        body.extend_from_slice(&chunk[..keep]);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(HandlerError::new(format!("reading the response: {e}"))),
                }
            }
            Ok((status, body))
        };
        let (status, body) = tokio::select! {
            r = exchange => r?,
            _ = ctx.cancel.cancelled() => return Err(HandlerError::new("request abandoned")),
        };
        let output = json!({"status": status.as_u16(), "body": utf8_prefix(body)});
        if status.is_success() {
            Ok(output)
        } else {
            Err(HandlerError::new(format!("HTTP status {}", status.as_u16())).with_output(output))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn ctx(payload: Value) -> RunContext {
        crate::handler::test_ctx(payload)
    }

    #[tokio::test]
    async fn echo_returns_payload() {
        let payload = json!({"a": [1, 2], "b": null});
        assert_eq!(Echo.call(ctx(payload.clone())).await.unwrap(), payload);
    }

    #[tokio::test]
    async fn shell_success_reports_exit_code_stdout_stderr() {
        let out = Shell::default().call(ctx(json!({"command": "echo hello; echo oops >&2"}))).await.unwrap();
        assert_eq!(out, json!({"exit_code": 0, "stdout": "hello\n", "stderr": "oops\n"}));
    }

    #[tokio::test]
    async fn shell_nonzero_exit_fails_with_output() {
        let err = Shell::default().call(ctx(json!({"command": "echo partial; exit 3"}))).await.unwrap_err();
        assert!(err.message.contains('3'), "{}", err.message);
        assert_eq!(err.output, Some(json!({"exit_code": 3, "stdout": "partial\n", "stderr": ""})));
    }

    #[tokio::test]
    async fn shell_environment_holds_only_path_home_lang_and_named_variables() {
        // The worker's environment holds a secret; the command must not see it.
        std::env::set_var("SUNDIAL_TEST_SERVER_SECRET", "hunter2");
        std::env::set_var("SUNDIAL_TEST_PASSED_ON", "visible");
        let shell = Shell::new(ShellPolicy { env: vec!["SUNDIAL_TEST_PASSED_ON".into()], allow: vec![] });
        let out = shell.call(ctx(json!({"command": "env"}))).await.unwrap();
        let stdout = out["stdout"].as_str().unwrap();
        assert!(!stdout.contains("hunter2"), "secret leaked: {stdout}");
        assert!(stdout.contains("SUNDIAL_TEST_PASSED_ON=visible"), "{stdout}");
        assert!(stdout.contains("PATH="), "{stdout}");
        let names: Vec<&str> = stdout.lines().filter_map(|l| l.split_once('=').map(|(n, _)| n)).collect();
        for n in names {
            assert!(
                ["PATH", "HOME", "LANG", "SUNDIAL_TEST_PASSED_ON", "PWD", "SHLVL", "_", "OLDPWD"].contains(&n),
                "unexpected variable {n} in {stdout}"
            );
        }
    }

    #[tokio::test]
    async fn shell_allow_list_runs_words_directly_and_refuses_other_programs() {
        let shell = Shell::new(ShellPolicy { env: vec![], allow: vec!["echo".into()] });
        // Run directly: no expansion, quotes honoured, `;` is just an argument.
        let out = shell.call(ctx(json!({"command": "echo 'a  b' $HOME ; true"}))).await.unwrap();
        assert_eq!(out["stdout"], "a  b $HOME ; true\n");
        for refused in ["sh -c 'echo hi'", "/bin/echo hi", "", "echo 'unbalanced"] {
            let err = shell.call(ctx(json!({ "command": refused }))).await.unwrap_err();
            assert_eq!(err.message, COMMAND_NOT_ALLOWED, "{refused:?}");
            assert!(!err.retry, "{refused:?}: refused on every attempt, so not retried");
        }
    }

    #[tokio::test]
    async fn shell_rejects_payload_without_command() {
        let err = Shell::default().call(ctx(json!({"cmd": "true"}))).await.unwrap_err();
        assert!(err.message.starts_with("payload"), "{}", err.message);
    }

    #[tokio::test]
    async fn shell_does_not_wait_for_background_children() {
        // The leader exits at once; its background child holds stdout but dies with the group.
        let started = std::time::Instant::now();
        let out = Shell::default().call(ctx(json!({"command": "sleep 30 & echo done"}))).await.unwrap();
        assert_eq!(out["stdout"], "done\n");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Whether `pid` still exists as a live (non-zombie) process.
    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            Ok(stat) => {
                let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
                !matches!(state, Some("Z" | "X"))
            }
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn shell_cancel_kills_the_whole_process_group() {
        let marker = std::env::temp_dir().join(format!("sundial-shell-cancel-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        // The marker appears once the background child exists and its pid is on stdout.
        let command = format!("sleep 30 & echo $!; : > '{}'; sleep 30", marker.display());
        let c = ctx(json!({ "command": command }));
        let token = c.cancel.clone();
        let call = tokio::spawn(async move { Shell::default().call(c).await });
        let wait = Duration::from_secs(10);
        crate::test_support::eventually("the command to start its child", wait, || marker.exists()).await;
        let _ = std::fs::remove_file(&marker);
        token.cancel();
        let err = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap().unwrap_err();
        let output = err.output.expect("output of a killed command");
        assert_eq!(output["exit_code"], 128 + libc::SIGKILL);
        let pid: u32 = output["stdout"].as_str().unwrap().trim().parse().unwrap();
        // The kernel may take a moment to tear the killed child down.
        crate::test_support::eventually("the background child to die", wait, || !alive(pid)).await;
    }

    #[test]
    fn utf8_prefix_drops_a_cut_character() {
        let mut bytes = "ab€".as_bytes().to_vec();
        bytes.pop();
        assert_eq!(utf8_prefix(bytes), "ab");
        assert_eq!(utf8_prefix(vec![b'a', 0xff, b'b']), "a\u{fffd}b");
    }

    async fn canned(status: &'static str, body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        crate::test_support::canned(status, "text/plain", body).await
    }

    #[tokio::test]
    async fn http_200_reports_status_and_body() {
        let (url, server) = canned("200 OK", "hello").await;
        let payload =
            json!({"url": format!("{url}/hook"), "method": "post", "headers": {"x-token": "t"}, "body": {"k": 1}});
        let out = Http::new().call(ctx(payload)).await.unwrap();
        assert_eq!(out, json!({"status": 200, "body": "hello"}));
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1"), "{request}");
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("x-token: t"), "{request}");
        assert!(lower.contains("content-type: application/json"), "{request}");
        assert!(request.ends_with(r#"{"k":1}"#), "{request}");
    }

    #[tokio::test]
    async fn http_string_body_is_sent_as_is() {
        let (url, server) = canned("204 No Content", "").await;
        let out = Http::new().call(ctx(json!({"url": url, "method": "PUT", "body": "raw text"}))).await.unwrap();
        assert_eq!(out["status"], 204);
        let request = server.await.unwrap();
        assert!(request.starts_with("PUT / HTTP/1.1"), "{request}");
        assert!(!request.to_ascii_lowercase().contains("application/json"), "{request}");
        assert!(request.ends_with("raw text"), "{request}");
    }

    #[tokio::test]
    async fn http_500_fails_with_status_and_body() {
        let (url, _server) = canned("500 Internal Server Error", "broken").await;
        let err = Http::new().call(ctx(json!({"url": url}))).await.unwrap_err();
        assert!(err.message.contains("500"), "{}", err.message);
        assert_eq!(err.output, Some(json!({"status": 500, "body": "broken"})));
    }

    #[tokio::test]
    async fn http_body_is_truncated_to_one_mib() {
        static BIG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let big: &'static str = BIG.get_or_init(|| "x".repeat(OUTPUT_LIMIT + 10));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            crate::test_support::read_request(&mut sock).await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", big.len());
            sock.write_all(head.as_bytes()).await.ok();
            sock.write_all(big.as_bytes()).await.ok();
        });
        let out = Http::new().call(ctx(json!({"url": url}))).await.unwrap();
        assert_eq!(out["body"].as_str().unwrap().len(), OUTPUT_LIMIT);
    }

    #[test]
    fn register_builtins_adds_shell_only_when_enabled() {
        let transport: Arc<dyn crate::Transport> =
            Arc::new(crate::http::HttpTransport::new("http://127.0.0.1:1", None));
        let w = register_builtins(Worker::new(transport.clone()), false);
        assert_eq!(w.handler_names(), vec!["echo", "http"]);
        let w = register_builtins(Worker::new(transport), true);
        assert_eq!(w.handler_names(), vec!["echo", "http", "shell"]);
    }
}
