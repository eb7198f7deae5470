//! `sundial limit set|list|get|delete`: flow-control limits per key, as thin calls of
//! `/v1/limits` (a `/` in a key is sent as `%2F`).

use super::client::{urlencode, Client};
use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

/// `sundial limit …`
#[derive(Subcommand)]
pub enum LimitCmd {
    /// Create or replace the limit of a key or pattern (`tenant:*`, `*`).
    Set {
        /// A key, or a pattern ending in `*`.
        key: String,
        /// At most this many runs naming the key run at once.
        #[arg(long)]
        max_running: Option<u32>,
        /// At most COUNT/PER starts, e.g. `100/1m`.
        #[arg(long, value_name = "COUNT/PER")]
        rate: Option<String>,
    },
    /// List limits with their running counts.
    List,
    /// Show the limit governing a key (its own, or the pattern's).
    Get {
        /// A key or pattern.
        key: String,
    },
    /// Delete a limit.
    Delete {
        /// A key or pattern.
        key: String,
    },
}

const COLS: &[&str] = &["key", "pattern", "max_running", "rate", "running", "updated_at"];

/// `--rate 100/1m` → `{"count": 100, "per": "1m"}`.
fn rate_body(s: &str) -> anyhow::Result<Value> {
    let Some((count, per)) = s.split_once('/') else { bail!("--rate: expected COUNT/PER, e.g. 100/1m, got {s:?}") };
    let count: u32 = count.trim().parse().map_err(|_| anyhow::anyhow!("--rate: {count:?} is not a count"))?;
    Ok(json!({"count": count, "per": per.trim()}))
}

impl Client {
    /// `sundial limit …`
    pub(crate) async fn limit(&self, cmd: LimitCmd) -> anyhow::Result<()> {
        match cmd {
            LimitCmd::Set { key, max_running, rate } => {
                let rate = rate.as_deref().map(rate_body).transpose()?;
                let body = json!({"max_running": max_running, "rate": rate});
                let v = self.call(Method::PUT, &format!("/v1/limits/{}", urlencode(&key)), Some(&body)).await?;
                self.print(&v, COLS)?;
            }
            LimitCmd::List => self.print(&self.call(Method::GET, "/v1/limits", None).await?, COLS)?,
            LimitCmd::Get { key } => {
                self.print(&self.call(Method::GET, &format!("/v1/limits/{}", urlencode(&key)), None).await?, COLS)?
            }
            LimitCmd::Delete { key } => {
                self.call(Method::DELETE, &format!("/v1/limits/{}", urlencode(&key)), None).await?;
                println!("deleted limit {key}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_flag_is_count_slash_per() {
        assert_eq!(rate_body("100/1m").unwrap(), json!({"count": 100, "per": "1m"}));
        assert!(rate_body("100").is_err());
        assert!(rate_body("x/1m").is_err());
    }
}
