//! `sundial calendar set|list|get|delete`: calendars of excluded times, as thin calls of
//! `/v1/calendars`.

use super::client::{urlencode, Client};
use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

/// `sundial calendar …`
#[derive(Subcommand)]
pub enum CalendarCmd {
    /// Create or replace a calendar (the entries given replace all of its entries).
    Set {
        /// The calendar's name (what triggers name in `"calendars"`).
        name: String,
        /// IANA zone the entries are read in (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// Exclude this local day, e.g. 2026-12-25 (repeatable).
        #[arg(long = "date", value_name = "DATE")]
        dates: Vec<String>,
        /// Exclude the local range FROM..UNTIL, e.g. 2026-12-24T12:00:00..2026-12-27T00:00:00
        /// (UNTIL exclusive; repeatable).
        #[arg(long = "range", value_name = "FROM..UNTIL")]
        ranges: Vec<String>,
        /// Exclude every minute a 5-field cron expression matches, e.g. "* * * * SAT,SUN"
        /// (repeatable).
        #[arg(long = "cron", value_name = "EXPR")]
        crons: Vec<String>,
        /// The whole `PUT` body as JSON (other flags then ignored).
        #[arg(long)]
        json: Option<String>,
    },
    /// List calendars.
    List,
    /// Show one calendar.
    Get {
        /// The calendar's name.
        name: String,
    },
    /// Delete a calendar (refused while a trigger names it).
    Delete {
        /// The calendar's name.
        name: String,
    },
}

const COLS: &[&str] = &["name", "timezone", "exclude", "updated_at"];

/// The `PUT` body of `sundial calendar set`'s flags, entries in the order dates, ranges, crons.
fn set_body(timezone: Option<String>, dates: &[String], ranges: &[String], crons: &[String]) -> anyhow::Result<Value> {
    let mut exclude: Vec<Value> = dates.iter().map(|d| json!({"date": d})).collect();
    for r in ranges {
        let Some((from, until)) = r.split_once("..") else {
            bail!("--range: expected FROM..UNTIL, e.g. 2026-12-24T12:00:00..2026-12-27T00:00:00, got {r:?}")
        };
        exclude.push(json!({"from": from, "until": until}));
    }
    exclude.extend(crons.iter().map(|c| json!({"cron": c})));
    Ok(json!({"timezone": timezone, "exclude": exclude}))
}

impl Client {
    /// `sundial calendar …`
    pub(crate) async fn calendar(&self, cmd: CalendarCmd) -> anyhow::Result<()> {
        match cmd {
            CalendarCmd::Set { name, timezone, dates, ranges, crons, json } => {
                let body = match json {
                    Some(j) => serde_json::from_str(&j).context("--json is not valid JSON")?,
                    None => set_body(timezone, &dates, &ranges, &crons)?,
                };
                let v = self.call(Method::PUT, &format!("/v1/calendars/{}", urlencode(&name)), Some(&body)).await?;
                self.print(&v, COLS)?;
            }
            CalendarCmd::List => self.print(&self.call(Method::GET, "/v1/calendars", None).await?, COLS)?,
            CalendarCmd::Get { name } => {
                self.print(&self.call(Method::GET, &format!("/v1/calendars/{}", urlencode(&name)), None).await?, COLS)?
            }
            CalendarCmd::Delete { name } => {
                self.call(Method::DELETE, &format!("/v1/calendars/{}", urlencode(&name)), None).await?;
                println!("deleted calendar {name}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_flags_become_entries_in_order() {
        let body = set_body(
            Some("Europe/Berlin".into()),
            &["2026-12-25".into()],
            &["2026-12-24T12:00:00..2026-12-27T00:00:00".into()],
            &["* * * * SAT,SUN".into()],
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"timezone": "Europe/Berlin", "exclude": [
                {"date": "2026-12-25"},
                {"from": "2026-12-24T12:00:00", "until": "2026-12-27T00:00:00"},
                {"cron": "* * * * SAT,SUN"},
            ]})
        );
        assert!(set_body(None, &[], &["2026-12-24".into()], &[]).is_err());
        assert_eq!(set_body(None, &[], &[], &[]).unwrap(), json!({"timezone": null, "exclude": []}));
    }
}
