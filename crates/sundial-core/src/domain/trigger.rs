//! A trigger says when a job fires: `once`, `cron` or `interval`, within an optional window.

use super::{duration, FieldError, Timestamp};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What kind of schedule a trigger follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerKind {
    /// Fires once, at `at`.
    Once {
        /// The instant to fire.
        at: Timestamp,
    },
    /// Fires on a cron expression (5 fields, or 6 with leading seconds) in an IANA time zone.
    Cron {
        /// The cron expression as given.
        expr: String,
        /// IANA zone name; `UTC` when not given.
        timezone: String,
    },
    /// Fires every `every`, from `start_at` or from creation + `every`.
    Interval {
        /// The period.
        every: Duration,
    },
}

/// What to do with fire times the scheduler reaches more than the misfire threshold late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// One run for the latest missed time; its reason counts the others.
    FireOnce,
    /// One `skipped` run whose reason counts the missed times; then the next future time.
    Skip,
    /// One run per missed time, oldest first, at most `catch_up_limit`.
    CatchUp,
}

impl Misfire {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::FireOnce => "fire_once",
            Misfire::Skip => "skip",
            Misfire::CatchUp => "catch_up",
        }
    }
    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fire_once" => Some(Misfire::FireOnce),
            "skip" => Some(Misfire::Skip),
            "catch_up" => Some(Misfire::CatchUp),
            _ => None,
        }
    }
}

/// Default number of missed times `catch_up` replays.
pub const DEFAULT_CATCH_UP_LIMIT: u32 = 10;

/// Largest `catch_up_limit`: one scheduler pass writes at most this many runs for a trigger.
pub const MAX_CATCH_UP_LIMIT: u32 = 1000;

/// Most calendars one trigger names.
pub const MAX_CALENDARS: usize = 16;

/// A validated trigger definition, as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSpec {
    /// The schedule.
    pub kind: TriggerKind,
    /// No fire before this instant.
    pub start_at: Option<DateTime<Utc>>,
    /// No fire after this instant.
    pub end_at: Option<DateTime<Utc>>,
    /// At most this many due times in all (every due time counts, whatever became of it).
    pub max_fires: Option<u64>,
    /// Misfire policy.
    pub misfire: Misfire,
    /// With `catch_up`: how many missed times to replay (default 10); `None` otherwise.
    pub catch_up_limit: Option<u32>,
    /// Names of the calendars whose excluded times are not fires (API.md "Calendars").
    pub calendars: Vec<String>,
}

/// A trigger as stored and returned: its definition plus its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Opaque id.
    pub id: String,
    /// The definition.
    pub spec: TriggerSpec,
    /// The next due time; `None` when the trigger has no fire left.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// How many due times have passed (run, skipped or summarised alike).
    pub fires: u64,
}

/// The flat JSON shape of a trigger, in and out: every field present, `null` when unset.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerWire {
    /// Output only (accepted and ignored on input, so a trigger read back can be sent again).
    #[serde(default)]
    pub id: Option<String>,
    /// `once`, `cron` or `interval`.
    pub kind: String,
    /// `once`: when.
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// `cron`: the expression.
    #[serde(default)]
    pub expr: Option<String>,
    /// `cron`: IANA zone, default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// `interval`: the period.
    #[serde(default, with = "duration::optional")]
    #[schema(value_type = Option<String>)]
    pub every: Option<Duration>,
    /// Window start.
    #[serde(default)]
    pub start_at: Option<DateTime<Utc>>,
    /// Window end.
    #[serde(default)]
    pub end_at: Option<DateTime<Utc>>,
    /// Cap on due times.
    #[serde(default)]
    pub max_fires: Option<u64>,
    /// Misfire policy; default `fire_once`.
    #[serde(default)]
    pub misfire: Option<Misfire>,
    /// `catch_up` only.
    #[serde(default)]
    pub catch_up_limit: Option<u32>,
    /// Names of stored calendars; a due time any of them excludes is not a fire. `[]` when unset.
    #[serde(default)]
    pub calendars: Vec<String>,
    /// Output only (ignored on input).
    #[serde(default)]
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Output only (ignored on input).
    #[serde(default)]
    pub fires: Option<u64>,
}

impl TriggerSpec {
    /// Validates the wire shape (paths relative to the trigger; the caller prefixes them).
    /// What only compiling the schedule can tell (a cron expression, a zone) is checked by the
    /// `schedule` module, which builds on this one, not the other way round.
    pub fn from_wire(w: &TriggerWire) -> Result<Self, FieldError> {
        let kind = Self::kind_from_wire(w)?;
        for (field, t) in [("at", w.at), ("start_at", w.start_at), ("end_at", w.end_at)] {
            if let Some(t) = t {
                super::validate::check_time_range(field, &t)?;
            }
        }
        for (field, present) in [
            ("at", w.at.is_some() && !matches!(kind, TriggerKind::Once { .. })),
            ("expr", w.expr.is_some() && !matches!(kind, TriggerKind::Cron { .. })),
            ("timezone", w.timezone.is_some() && !matches!(kind, TriggerKind::Cron { .. })),
            ("every", w.every.is_some() && !matches!(kind, TriggerKind::Interval { .. })),
        ] {
            if present {
                return Err(FieldError::new(field, format!("does not apply to a {} trigger", w.kind)));
            }
        }
        if let (Some(s), Some(e)) = (w.start_at, w.end_at) {
            if e < s {
                return Err(FieldError::new("end_at", "is before start_at"));
            }
        }
        if w.max_fires == Some(0) {
            return Err(FieldError::new("max_fires", "must be at least 1"));
        }
        let misfire = w.misfire.unwrap_or(Misfire::FireOnce);
        match (misfire, w.catch_up_limit) {
            (Misfire::CatchUp, Some(0)) => return Err(FieldError::new("catch_up_limit", "must be at least 1")),
            (Misfire::CatchUp, Some(n)) if n > MAX_CATCH_UP_LIMIT => {
                return Err(FieldError::new("catch_up_limit", format!("must be at most {MAX_CATCH_UP_LIMIT}")))
            }
            (Misfire::FireOnce | Misfire::Skip, Some(_)) => {
                return Err(FieldError::new("catch_up_limit", "applies only when misfire is catch_up"))
            }
            _ => {}
        }
        for (j, name) in w.calendars.iter().enumerate() {
            crate::schedule::calendar::check_name(name).map_err(|e| FieldError::new(format!("calendars[{j}]"), e))?;
        }
        if w.calendars.len() > MAX_CALENDARS {
            return Err(FieldError::new("calendars", format!("at most {MAX_CALENDARS} calendars")));
        }
        Self::from_wire_unchecked(w)
    }

    fn kind_from_wire(w: &TriggerWire) -> Result<TriggerKind, FieldError> {
        Ok(match w.kind.as_str() {
            "once" => {
                let at = w.at.ok_or_else(|| FieldError::new("at", "is required for a once trigger"))?;
                TriggerKind::Once { at }
            }
            "cron" => {
                let expr = w.expr.clone().ok_or_else(|| FieldError::new("expr", "is required for a cron trigger"))?;
                let timezone = w.timezone.clone().unwrap_or_else(|| "UTC".to_string());
                TriggerKind::Cron { expr, timezone }
            }
            "interval" => {
                let every = w.every.ok_or_else(|| FieldError::new("every", "is required for an interval trigger"))?;
                if every.is_zero() {
                    return Err(FieldError::new("every", "must be greater than zero"));
                }
                TriggerKind::Interval { every }
            }
            other => {
                return Err(FieldError::new(
                    "kind",
                    format!("unknown trigger kind {other:?}; expected once, cron or interval"),
                ))
            }
        })
    }

    /// Builds the spec without compiling the schedule (for rows the store already validated).
    pub(crate) fn from_wire_unchecked(w: &TriggerWire) -> Result<Self, FieldError> {
        let kind = Self::kind_from_wire(w)?;
        let misfire = w.misfire.unwrap_or(Misfire::FireOnce);
        let catch_up_limit = match misfire {
            Misfire::CatchUp => Some(w.catch_up_limit.unwrap_or(DEFAULT_CATCH_UP_LIMIT)),
            _ => None,
        };
        Ok(TriggerSpec {
            kind,
            start_at: w.start_at,
            end_at: w.end_at,
            max_fires: w.max_fires,
            misfire,
            catch_up_limit,
            calendars: w.calendars.clone(),
        })
    }

    /// The flat wire shape (definition fields only).
    pub fn to_wire(&self) -> TriggerWire {
        let mut w = TriggerWire {
            start_at: self.start_at,
            end_at: self.end_at,
            max_fires: self.max_fires,
            misfire: Some(self.misfire),
            catch_up_limit: self.catch_up_limit,
            calendars: self.calendars.clone(),
            ..Default::default()
        };
        match &self.kind {
            TriggerKind::Once { at } => {
                w.kind = "once".into();
                w.at = Some(*at);
            }
            TriggerKind::Cron { expr, timezone } => {
                w.kind = "cron".into();
                w.expr = Some(expr.clone());
                w.timezone = Some(timezone.clone());
            }
            TriggerKind::Interval { every } => {
                w.kind = "interval".into();
                w.every = Some(*every);
            }
        }
        w
    }
}

impl TriggerSpec {
    /// Checks the server's floor on interval periods (`--min-interval`): a shorter period would
    /// have the scheduler write runs faster than they can be worked. Path relative to the trigger.
    pub fn check_min_interval(&self, min: Duration) -> Result<(), FieldError> {
        match self.kind {
            TriggerKind::Interval { every } if every < min => Err(FieldError::new(
                "every",
                format!("must be at least {} (the server's --min-interval)", super::duration::format(min)),
            )),
            _ => Ok(()),
        }
    }
}

impl Trigger {
    /// The JSON shape returned by the API.
    pub fn to_wire(&self) -> TriggerWire {
        let mut w = self.spec.to_wire();
        w.id = Some(self.id.clone());
        w.next_fire_at = self.next_fire_at;
        w.fires = Some(self.fires);
        w
    }
}

impl Serialize for Trigger {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_wire().serialize(s)
    }
}
