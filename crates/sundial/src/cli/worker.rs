//! `sundial worker`: a remote worker process serving the built-in handlers over HTTP.

use clap::Args;
use std::sync::Arc;
use sundial_worker::builtin;
use sundial_worker::http::HttpTransport;
use tokio_util::sync::CancellationToken;

/// `sundial worker` flags.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Handlers to serve (default: the built-ins enabled).
    #[arg(long, env = "SUNDIAL_HANDLERS", value_delimiter = ',')]
    pub handlers: Vec<String>,
    /// Runs at once.
    #[arg(long, env = "SUNDIAL_CAPACITY", default_value_t = 4)]
    pub capacity: u32,
    /// Serve the `shell` handler.
    #[arg(long, env = "SUNDIAL_ENABLE_SHELL", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = super::serve::parse_bool)]
    pub enable_shell: bool,
    /// Worker name (default: hostname-pid).
    #[arg(long, env = "SUNDIAL_WORKER_NAME")]
    pub name: Option<String>,
    /// Log lines as text or JSON (one object per line).
    #[arg(long, env = "SUNDIAL_LOG_FORMAT", value_enum, default_value_t = super::LogFormat::Text)]
    pub log_format: super::LogFormat,
    #[command(flatten)]
    pub shell: super::serve::ShellArgs,
}

/// Runs until SIGTERM, then drains and deregisters.
pub(crate) async fn run(args: WorkerArgs, server: String, token: Option<String>) -> anyhow::Result<()> {
    super::init_logging(args.log_format);
    let name = args.name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "worker".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let transport = Arc::new(HttpTransport::new(&server, token));
    let mut worker = sundial_worker::Worker::new(transport).name(name.clone()).capacity(args.capacity);
    if args.handlers.is_empty() {
        worker = builtin::register_builtins_with(worker, args.enable_shell.then(|| args.shell.policy()));
    } else {
        for h in &args.handlers {
            worker = match h.as_str() {
                "echo" => worker.handler("echo", builtin::Echo),
                "http" => worker.handler("http", builtin::Http::new()),
                "shell" if args.enable_shell => worker.handler("shell", builtin::Shell::new(args.shell.policy())),
                "shell" => anyhow::bail!("--handlers shell needs --enable-shell (it runs commands)"),
                other => anyhow::bail!(
                    "handler {other:?} is not built in (built-ins: echo, http, shell); \
                     serve your own handlers with the Rust SDK or the HTTP worker protocol"
                ),
            };
        }
    }
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        s.cancel();
    });
    tracing::info!(server = %server, name = %name, capacity = args.capacity, "sundial worker starting");
    worker.run(shutdown).await?;
    Ok(())
}
