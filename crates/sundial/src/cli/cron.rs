//! `sundial cron next EXPR`: upcoming fire times, computed locally (no server needed).

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
        /// How many times.
        #[arg(short = 'n', default_value_t = 5)]
        n: usize,
    },
}

/// Runs a cron subcommand.
pub fn run(cmd: CronCmd) -> anyhow::Result<()> {
    match cmd {
        CronCmd::Next { expr, timezone, n } => {
            let times = sundial_core::schedule::cron_next(&expr, &timezone, chrono::Utc::now(), n)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for t in times {
                println!("{}", t.to_rfc3339());
            }
            Ok(())
        }
    }
}
