//! One module per subcommand.

pub(crate) mod apply;
pub(crate) mod bench;
pub(crate) mod calendar;
pub(crate) mod client;
pub(crate) mod cron;
pub(crate) mod limit;
pub(crate) mod openapi;
pub(crate) mod serve;
pub(crate) mod worker;

/// How `serve` and `worker` write their logs.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Tracing to stderr in `format`; `RUST_LOG` overrides the default level.
pub(crate) fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => {
            let _ = builder.json().flatten_event(true).try_init();
        }
        LogFormat::Text => {
            let _ = builder.try_init();
        }
    }
}

/// Parses a duration flag (`30s`, `1h 30m`).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    sundial_core::domain::duration::parse(s)
}

/// Waits for SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
