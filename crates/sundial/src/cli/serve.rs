//! `sundial serve`: one node. Every flag is also read from `SUNDIAL_<FLAG>`.

use anyhow::Context;
use clap::Args;
use std::time::Duration;
use sundial_server::node::{Node, NodeConfig};

/// `sundial serve` flags.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SUNDIAL_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Database: sqlite://path (created if missing) or postgres://…
    #[arg(long, env = "SUNDIAL_DB", default_value = "sqlite://sundial.db")]
    pub db: String,
    /// In-process worker slots (0 = none).
    #[arg(long, env = "SUNDIAL_WORKERS", default_value_t = 4)]
    pub workers: u32,
    /// Lease length; workers heartbeat every third of it.
    #[arg(long, env = "SUNDIAL_LEASE", default_value = "30s", value_parser = super::parse_duration)]
    pub lease: Duration,
    /// Serve the `shell` handler in the in-process pool (it runs commands).
    #[arg(long, env = "SUNDIAL_ENABLE_SHELL", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_shell: bool,
    /// Bearer token clients must present (repeatable; none = no auth).
    #[arg(long = "token", env = "SUNDIAL_TOKEN", value_delimiter = ',')]
    pub tokens: Vec<String>,
    /// Tokens with roles and namespaces (JSON; see SECURITY.md), read at start and on SIGHUP.
    #[arg(long, env = "SUNDIAL_TOKENS_FILE")]
    pub tokens_file: Option<std::path::PathBuf>,
    /// Largest job payload, measured as its JSON text (B, KiB, MiB, GiB).
    #[arg(long, env = "SUNDIAL_MAX_PAYLOAD", default_value = "1MiB", value_parser = parse_size)]
    pub max_payload: usize,
    /// Shortest interval trigger period accepted.
    #[arg(long, env = "SUNDIAL_MIN_INTERVAL", default_value = "1s", value_parser = super::parse_duration)]
    pub min_interval: Duration,
    /// Requests per second per token under /v1 (`N/s`; a bucket of N with a burst of N).
    #[arg(long, env = "SUNDIAL_RATE_LIMIT", value_parser = sundial_server::limits::parse_rate)]
    pub rate_limit: Option<std::num::NonZeroU32>,
    #[command(flatten)]
    pub shell: ShellArgs,
    /// Fire times later than this are misfires.
    #[arg(long, env = "SUNDIAL_MISFIRE_THRESHOLD", default_value = "60s", value_parser = super::parse_duration)]
    pub misfire_threshold: Duration,
    /// Largest request body (B, KiB, MiB, GiB).
    #[arg(long, env = "SUNDIAL_MAX_BODY", default_value = "10MiB", value_parser = parse_size)]
    pub max_body: usize,
    /// Finished runs older than this are pruned ("0s" keeps them forever).
    #[arg(long, env = "SUNDIAL_RETENTION", default_value = "7days", value_parser = super::parse_duration)]
    pub retention: Duration,
    /// Dead workers silent longer than this are forgotten: no longer listed, and deleted by the
    /// reaper (a forgotten worker registers again).
    #[arg(long, env = "SUNDIAL_WORKER_RETENTION", default_value = "1h", value_parser = super::parse_duration)]
    pub worker_retention: Duration,
    /// Log lines as text or JSON (one object per line).
    #[arg(long, env = "SUNDIAL_LOG_FORMAT", value_enum, default_value_t = super::LogFormat::Text)]
    pub log_format: super::LogFormat,
    /// Kafka brokers (`HOST:PORT[,…]`): when given, the node also consumes job messages (each
    /// the JSON of `POST /v1/jobs`, or `{"jobs": [...]}`) from `--kafka-topic`.
    #[arg(long, env = "SUNDIAL_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Topic of job messages.
    #[arg(long, env = "SUNDIAL_KAFKA_TOPIC", default_value = "jobs")]
    pub kafka_topic: String,
    /// Consumer group; every node joins the same one and they share the partitions.
    #[arg(long, env = "SUNDIAL_KAFKA_GROUP", default_value = "sundial")]
    pub kafka_group: String,
    /// Topic invalid messages go to, with the reason in headers (default `<topic>.dlq`).
    #[arg(long, env = "SUNDIAL_KAFKA_DLQ_TOPIC")]
    pub kafka_dlq_topic: Option<String>,
    /// Extra librdkafka setting `KEY=VALUE` for the consumer and dead-letter producer
    /// (repeatable, or comma-separated in the environment), e.g. `session.timeout.ms=30000`.
    #[arg(long = "kafka-config", env = "SUNDIAL_KAFKA_CONFIG", value_delimiter = ',', value_parser = parse_key_value)]
    pub kafka_config: Vec<(String, String)>,
}

/// `--shell-env` and `--shell-allow`, shared by `serve` and `worker`.
#[derive(Args, Debug, Clone, Default)]
pub struct ShellArgs {
    /// An environment variable `shell` commands get besides PATH, HOME and LANG (repeatable).
    #[arg(long = "shell-env", env = "SUNDIAL_SHELL_ENV", value_delimiter = ',')]
    pub shell_env: Vec<String>,
    /// A program `shell` commands may run (repeatable); with any, commands are split into words
    /// and run directly (no `sh -c`), and other programs fail with "command not allowed".
    #[arg(long = "shell-allow", env = "SUNDIAL_SHELL_ALLOW", value_delimiter = ',')]
    pub shell_allow: Vec<String>,
}

impl ShellArgs {
    /// The handler's policy.
    pub fn policy(&self) -> sundial_worker::builtin::ShellPolicy {
        let clean = |v: &[String]| v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        sundial_worker::builtin::ShellPolicy { env: clean(&self.shell_env), allow: clean(&self.shell_allow) }
    }
}

/// `KEY=VALUE`.
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `true`/`false`/`1`/`0`.
pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("expected true, false, 1 or 0, got {s:?}")),
    }
}

/// `10MiB`, `512KiB`, `1GiB`, `1000B`, `1000`.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("expected a size like 10MiB, got {s:?}"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        u => return Err(format!("unknown size unit {u:?}; use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

/// Runs a node until SIGTERM, then drains and exits 0.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    super::init_logging(args.log_format);
    let config = NodeConfig {
        db: args.db.clone(),
        listen: args.listen,
        workers: args.workers,
        lease: args.lease,
        enable_shell: args.enable_shell,
        tokens: args.tokens.into_iter().filter(|t| !t.is_empty()).collect(),
        tokens_file: args.tokens_file,
        job_limits: sundial_server::limits::JobLimits {
            max_payload: args.max_payload,
            min_interval: args.min_interval,
        },
        rate_limit: args.rate_limit,
        shell: args.shell.policy(),
        misfire_threshold: args.misfire_threshold,
        max_body: args.max_body,
        retention: (!args.retention.is_zero()).then_some(args.retention),
        worker_retention: args.worker_retention,
        ..NodeConfig::default()
    };
    let node = Node::start(config).await.with_context(|| format!("cannot start sundial serve (--db {})", args.db))?;
    let ingest = match args.kafka_brokers.filter(|b| !b.trim().is_empty()) {
        Some(brokers) => {
            let mut config = sundial_ingest::IngestConfig::new(brokers, args.kafka_topic);
            config.group = args.kafka_group;
            config.extra = args.kafka_config;
            config.job_limits = node.state.config.job_limits;
            if let Some(dlq) = args.kafka_dlq_topic.filter(|d| !d.is_empty()) {
                config.dlq_topic = dlq;
            }
            let s = &node.state;
            let target =
                sundial_ingest::Target { store: s.store.clone(), clock: s.clock.clone(), signals: s.signals.clone() };
            Some(sundial_ingest::Ingest::start(config, target)?)
        }
        None => None,
    };
    tracing::info!(addr = %node.addr, db = %args.db, workers = args.workers, "sundial ready on http://{}", node.addr);
    super::shutdown_signal().await;
    tracing::info!("signal received: claiming nothing new; running runs may finish");
    if let Some(ingest) = ingest {
        // Commit what is stored and leave the group before the store goes away.
        tracing::info!("shutting down: stopping kafka ingest");
        ingest.stop().await;
    }
    tracing::info!("shutting down: draining workers");
    node.stop().await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100B"), Ok(100));
        assert!(parse_size("10MB").is_err());
    }

    #[test]
    fn booleans_take_true_false_one_zero() {
        assert_eq!(parse_bool("1"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert!(parse_bool("maybe").is_err());
    }
}
