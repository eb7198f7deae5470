//! `sundial cron next EXPR`: upcoming fire times, computed locally (no server needed) by the same
//! schedule code the scheduler and the preview API use.

use clap::Subcommand;

/// Cron helpers.
#[derive(Subcommand)]
pub enum CronCmd {
    /// Print the next fire times of a cron expression, one RFC 3339 time per line.
    Next {
        /// 5 fields (minute resolution) or 6 (leading seconds).
        expr: String,
        /// IANA time zone.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Times strictly after this RFC 3339 instant (default: now).
        #[arg(long, value_parser = parse_time)]
        after: Option<chrono::DateTime<chrono::Utc>>,
        /// How many times.
        #[arg(short = 'n', default_value_t = 5)]
        n: usize,
    },
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-03-28T00:00:00Z ({e})"))
}

/// Runs a cron subcommand.
pub(crate) fn run(cmd: CronCmd) -> anyhow::Result<()> {
    match cmd {
        CronCmd::Next { expr, timezone, after, n } => {
            let after = after.unwrap_or_else(chrono::Utc::now);
            let times =
                sundial_core::schedule::cron_next(&expr, &timezone, after, n).map_err(|e| anyhow::anyhow!("{e}"))?;
            for t in times {
                println!("{}", t.to_rfc3339());
            }
            Ok(())
        }
    }
}
