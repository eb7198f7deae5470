//! Calendars as stored and returned (API.md "Calendars"), and the backfill request and answer
//! (API.md "Backfill"). The exclusion rules themselves live in [`crate::schedule::calendar`].

use super::{FieldError, Overlap, Timestamp};
use crate::schedule::Calendar;
use serde::{Deserialize, Serialize};

/// `PUT /v1/calendars/{name}` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarRequest {
    /// IANA zone the entries are read in; default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Entries: `{"date": "2026-12-25"}`, `{"from": "2026-12-24T12:00:00", "until":
    /// "2026-12-27T00:00:00"}` (local, `until` exclusive) or `{"cron": "* * * * SAT,SUN"}`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub exclude: Vec<serde_json::Value>,
}

impl CalendarRequest {
    /// Validates the calendar named `name` (paths `name`, `timezone`, `exclude[i]…`).
    pub fn validate(&self, name: &str) -> Result<Calendar, FieldError> {
        Calendar::new(name, self.timezone.as_deref(), &self.exclude)
    }
}

/// A stored calendar: what the API returns.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CalendarDef {
    /// Unique name, what triggers refer to.
    pub name: String,
    /// IANA zone the entries are read in.
    pub timezone: String,
    /// The entries, echoed as sent.
    #[schema(value_type = Vec<Object>)]
    pub exclude: Vec<serde_json::Value>,
    /// When first stored (a replace keeps it).
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When last stored.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl CalendarDef {
    /// The calendar's rules. A stored calendar was validated when it was put.
    pub fn compile(&self) -> Result<Calendar, FieldError> {
        Calendar::new(&self.name, Some(&self.timezone), &self.exclude)
    }
}

/// `POST /v1/jobs/{id}/backfill` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// First instant of the range (inclusive).
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    /// End of the range (exclusive); not in the future, after `from`.
    #[schema(value_type = String, format = DateTime)]
    pub until: Timestamp,
    /// Only this trigger's due times (one of the job's triggers); default all of them.
    #[serde(default)]
    pub trigger_id: Option<String>,
    /// The overlap policy the backfill runs follow; default `allow`, whatever the job's is.
    #[serde(default)]
    pub overlap: Option<Overlap>,
}

/// What a backfill did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BackfillOutcome {
    /// Runs created (one per due time that had none).
    pub created: u64,
    /// Due times in the range that already had a run.
    pub existing: u64,
}
