//! From a message's bytes to job definitions, exactly as `POST /v1/jobs` and `POST /v1/jobs/batch`
//! read a body: the same parser, the same validation, the same error codes and messages.
//!
//! A message is one job (`{"handler": …}`) or a batch (`{"jobs": [ … ]}`). A batch is all or
//! nothing: one invalid item dead-letters the whole message (its error names the item,
//! `jobs[2].handler: is required`), so a fixed message can simply be produced again.

use serde::Deserialize;
use sundial_core::domain::job::JobRequest;
use sundial_core::domain::{JobSpec, Timestamp};
use sundial_core::input::{self, JobLimits, Rejection, MAX_BATCH};
use sundial_core::store::JobCreate;

/// `{"jobs": [...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    jobs: Vec<JobRequest>,
}

/// Where a message came from; its identity in the derived idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl Source {
    /// The idempotency key of a message's job (`item` = its index in a `{"jobs": [...]}` batch)
    /// when the message carries none: a redelivered message maps to the same job.
    pub fn derived_key(&self, item: Option<usize>) -> String {
        match item {
            None => format!("kafka:{}/{}/{}", self.topic, self.partition, self.offset),
            Some(i) => format!("kafka:{}/{}/{}/{i}", self.topic, self.partition, self.offset),
        }
    }
}

/// A decoded message: its submissions (one, or one per batch item).
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Ready for [`Store::job_create_many`](sundial_core::store::Store::job_create_many).
    pub jobs: Vec<JobCreate>,
    /// Whether it was a `{"jobs": [...]}` batch (errors then name the item).
    pub batch: bool,
}

/// Parses and validates a message value at `now` (the node clock's reading) under the node's
/// `limits` (as the HTTP API applies them). `None` (a tombstone) reads as an empty body.
pub fn decode(source: &Source, value: Option<&[u8]>, now: Timestamp, limits: &JobLimits) -> Result<Decoded, Rejection> {
    let value: serde_json::Value = input::parse(value.unwrap_or_default())?;
    let is_batch = value.as_object().is_some_and(|o| o.contains_key("jobs"));
    if !is_batch {
        let req: JobRequest = input::typed(value)?;
        let spec = limits.validate(req, now)?;
        return Ok(Decoded { jobs: vec![create(source, spec, None)], batch: false });
    }
    let count = value["jobs"].as_array().map_or(0, Vec::len);
    if count > MAX_BATCH {
        return Err(Rejection::batch_too_large(count));
    }
    let batch: Batch = input::typed(value)?;
    let mut jobs = Vec::with_capacity(batch.jobs.len());
    for (i, req) in batch.jobs.into_iter().enumerate() {
        let spec = limits.validate(req, now).map_err(|e| Rejection { message: within_item(i, &e.message), ..e })?;
        jobs.push(create(source, spec, Some(i)));
    }
    Ok(Decoded { jobs, batch: true })
}

fn create(source: &Source, spec: JobSpec, item: Option<usize>) -> JobCreate {
    let derived_idempotency_key = spec.idempotency_key.is_none().then(|| source.derived_key(item));
    JobCreate { spec, derived_idempotency_key }
}

/// Names batch item `i` in an error message that may start with a field path
/// (`name: … is taken` → `jobs[3].name: … is taken`).
pub fn within_item(i: usize, message: &str) -> String {
    match message.split_once(": ") {
        Some((head, _)) if !head.is_empty() && !head.contains(char::is_whitespace) => {
            if head.starts_with('[') {
                format!("jobs[{i}]{message}")
            } else {
                format!("jobs[{i}].{message}")
            }
        }
        _ => format!("jobs[{i}]: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Source {
        Source { topic: "jobs".into(), partition: 2, offset: 41 }
    }

    fn decode(source: &Source, value: Option<&[u8]>) -> Result<Decoded, Rejection> {
        super::decode(source, value, Timestamp::from_timestamp(1_800_000_000, 0).unwrap(), &JobLimits::default())
    }

    #[test]
    fn a_job_without_a_key_gets_one_derived_from_its_offset() {
        let d = decode(&src(), Some(br#"{"handler": "echo"}"#)).unwrap();
        assert!(!d.batch);
        assert_eq!(d.jobs.len(), 1);
        assert_eq!(d.jobs[0].derived_idempotency_key.as_deref(), Some("kafka:jobs/2/41"));
    }

    #[test]
    fn a_job_with_its_own_key_keeps_it() {
        let d = decode(&src(), Some(br#"{"handler": "echo", "idempotency_key": "order-42"}"#)).unwrap();
        assert_eq!(d.jobs[0].derived_idempotency_key, None);
        assert_eq!(d.jobs[0].spec.idempotency_key.as_deref(), Some("order-42"));
    }

    #[test]
    fn batch_items_get_one_key_each() {
        let d =
            decode(&src(), Some(br#"{"jobs": [{"handler": "a"}, {"handler": "b", "idempotency_key": "k"}]}"#)).unwrap();
        assert!(d.batch);
        assert_eq!(d.jobs[0].derived_idempotency_key.as_deref(), Some("kafka:jobs/2/41/0"));
        assert_eq!(d.jobs[1].derived_idempotency_key, None);
    }

    #[test]
    fn malformed_json_is_malformed_json() {
        let e = decode(&src(), Some(b"{not json")).unwrap_err();
        assert_eq!(e.code, "malformed_json");
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    #[test]
    fn invalid_values_name_the_field_as_the_api_does() {
        let e =
            decode(&src(), Some(br#"{"handler": "x", "triggers": [{"kind": "cron", "expr": "nope"}]}"#)).unwrap_err();
        assert_eq!(e.code, "invalid_value");
        assert!(e.message.starts_with("triggers[0].expr"), "{}", e.message);
        let e = decode(&src(), None).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), ("invalid_value", "handler: is required"));
    }

    #[test]
    fn the_nodes_limits_apply_as_over_http() {
        let e = decode(&src(), Some(br#"{"handler": "x", "triggers": [{"kind": "interval", "every": "1ns"}]}"#))
            .unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.message.starts_with("triggers[0].every"), "{}", e.message);
        let tight = JobLimits { max_payload: 10, ..JobLimits::default() };
        let at = Timestamp::from_timestamp(1_800_000_000, 0).unwrap();
        let big = br#"{"handler": "x", "payload": {"text": "more than ten bytes"}}"#;
        let e = super::decode(&src(), Some(big), at, &tight).unwrap_err();
        assert_eq!((e.status, e.code), (413, "payload_too_large"));
        let batch = br#"{"jobs": [{"handler": "x"}, {"handler": "x", "payload": {"text": "more than ten bytes"}}]}"#;
        let e = super::decode(&src(), Some(batch), at, &tight).unwrap_err();
        assert_eq!((e.status, e.code), (413, "payload_too_large"));
        assert!(e.message.starts_with("jobs[1].payload"), "{}", e.message);
    }

    #[test]
    fn a_bad_batch_item_names_the_item() {
        let e = decode(&src(), Some(br#"{"jobs": [{"handler": "a"}, {"payload": 1}]}"#)).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), ("invalid_value", "jobs[1].handler: is required"));
        let e = decode(&src(), Some(br#"{"jobs": [{"handler": " "}]}"#)).unwrap_err();
        assert_eq!(e.code, "invalid_value");
        assert!(e.message.starts_with("jobs[0].handler:"), "{}", e.message);
    }

    #[test]
    fn item_prefixes_join_paths() {
        assert_eq!(within_item(3, "name: \"x\" is taken"), "jobs[3].name: \"x\" is taken");
        assert_eq!(within_item(1, "store error: boom"), "jobs[1]: store error: boom");
    }
}
