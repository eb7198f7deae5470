//! One module per subcommand.

pub mod bench;
pub mod client;
pub mod cron;
pub mod serve;
pub mod worker;

/// Tracing to stderr; `RUST_LOG` overrides the default level; `SUNDIAL_LOG_FORMAT=json` for
/// structured logs.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("SUNDIAL_LOG_FORMAT").as_deref() == Ok("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Parses a duration flag (`30s`, `1h 30m`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    sundial_core::domain::duration::parse(s)
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
