//! The OpenAPI document: generated from the handlers' annotations, then completed by rules that
//! hold for every route (the errors every `/v1` route may answer, output fields that are always
//! present, payloads and outputs that are any JSON), so no route can forget them.

use crate::api::{calendars, fires, jobs, limits, runs, stats, workers};
use crate::{metrics, ops};
use serde_json::{json, Value};
use utoipa::OpenApi;

/// sundial's API description, as annotated on the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sundial",
        description = "Distributed durable job scheduler: jobs, triggers, runs, workers. \
            Caps: lists `limit` at most 1000; claim `wait` at most 60s and `max` at most 1000; \
            a batch at most 10,000 jobs; a job at most 100 triggers and `catch_up_limit` at most 1000; \
            payload at most --max-payload (1 MiB); body at most --max-body (10 MiB)."
    ),
    paths(
        jobs::create,
        jobs::batch,
        jobs::list,
        jobs::get,
        jobs::patch,
        jobs::delete,
        jobs::pause,
        jobs::resume,
        jobs::run_now,
        fires::job_fires,
        fires::trigger_preview,
        runs::list,
        runs::get,
        runs::cancel,
        runs::retry,
        runs::attempts,
        runs::bulk,
        workers::register,
        workers::claim,
        workers::heartbeat,
        workers::complete,
        workers::deregister,
        workers::list,
        limits::put,
        limits::list,
        limits::get,
        limits::delete,
        stats::runs,
        stats::handlers,
        calendars::put,
        calendars::list,
        calendars::get,
        calendars::delete,
        jobs::backfill,
        ops::healthz,
        ops::readyz,
        metrics::metrics
    ),
    components(schemas(
        sundial_core::domain::Job,
        sundial_core::domain::Run,
        sundial_core::domain::Attempt,
        runs::BulkRequest,
        runs::BulkResponse,
        sundial_core::domain::Worker,
        sundial_core::domain::job::JobRequest,
        sundial_core::domain::trigger::TriggerWire,
        sundial_core::schedule::PreviewFire,
        sundial_core::domain::Limit,
        sundial_core::domain::limit::LimitRequest,
        sundial_core::domain::Rate,
        sundial_core::domain::RunBucket,
        sundial_core::domain::HandlerQueue,
        sundial_core::domain::CalendarDef,
        sundial_core::domain::CalendarRequest,
        sundial_core::domain::BackfillRequest,
        sundial_core::domain::BackfillOutcome,
        crate::error::ErrorBody,
        crate::error::ErrorDetail
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Schemas that are answers: every field is always present (`null` when unset), so all are
/// `required`.
const OUTPUT_SCHEMAS: &[&str] = &[
    "Job",
    "Run",
    "Worker",
    "Trigger",
    "ErrorBody",
    "ErrorDetail",
    "Registered",
    "ClaimResponse",
    "ClaimedRun",
    "HeartbeatResponse",
    "RunBucket",
    "HandlerQueue",
];

/// Fields that take any JSON value (not only objects).
const ANY_JSON_FIELDS: &[&str] = &["payload", "output"];

/// Errors any `/v1` route may answer, besides the ones its annotation lists.
const COMMON_V1_ERRORS: &[(&str, &str)] = &[
    ("401", "No or unknown bearer token (`unauthorized`)"),
    ("403", "The token's role may not use this route, or may not write in that namespace (`forbidden`)"),
    ("405", "Method not allowed (`method_not_allowed`)"),
    ("429", "Over --rate-limit for this token (`rate_limited`); see Retry-After"),
    ("503", "Store unavailable (`store_unavailable`)"),
];

/// The complete document served at `/openapi.json`.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    let error_ref = json!({"$ref": "#/components/schemas/ErrorBody"});
    let error_response = |description: &str| json!({"description": description, "content": {"application/json": {"schema": error_ref.clone()}}});

    // Triggers as answered: the input shape, every field present.
    if let Some(wire) = doc.pointer("/components/schemas/TriggerWire").cloned() {
        doc["components"]["schemas"]["Trigger"] = wire;
        if let Some(items) = doc.pointer_mut("/components/schemas/Job/properties/triggers/items") {
            *items = json!({"$ref": "#/components/schemas/Trigger"});
        }
    }
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for (name, schema) in schemas.iter_mut() {
            any_json(schema);
            if OUTPUT_SCHEMAS.contains(&name.as_str()) {
                require_all(schema);
            }
        }
    }

    refine(&mut doc);

    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        let Some(ops) = item.as_object_mut() else { continue };
        for (_method, op) in ops.iter_mut() {
            let has_body = op.get("requestBody").is_some();
            any_json(op);
            if path.starts_with("/v1") {
                op["security"] = json!([{"bearer": []}]);
            }
            let responses = op["responses"].as_object_mut().expect("responses");
            if path.starts_with("/v1") {
                for (status, description) in COMMON_V1_ERRORS {
                    responses.entry(status.to_string()).or_insert_with(|| error_response(description));
                }
                if has_body {
                    responses.entry("400").or_insert_with(|| error_response("Malformed JSON (`malformed_json`)"));
                    responses.entry("413").or_insert_with(|| error_response("Body over --max-body (`body_too_large`)"));
                    responses
                        .entry("422")
                        .or_insert_with(|| error_response("Invalid value; the message names the field"));
                }
                if path.contains('{') {
                    responses.entry("404").or_insert_with(|| error_response("Unknown id"));
                }
            }
            // Every error answer has the error body, whatever the annotation said.
            for (status, resp) in responses.iter_mut() {
                if status.starts_with('4') || status.starts_with('5') {
                    resp["content"] = json!({"application/json": {"schema": error_ref.clone()}});
                }
            }
        }
    }
    doc
}

/// Bounds and shapes the annotations cannot state, found by Schemathesis (each one a value the
/// server refused although the document allowed it, or accepted although the document did not).
fn refine(doc: &mut Value) {
    // Unsigned integers: utoipa writes `u32` as `int32` (at most 2^31 - 1), but every `u32`
    // up to 2^32 - 1 is accepted.
    uints(doc);
    let schemas = &mut doc["components"]["schemas"];
    // Validation trims handler names and refuses blank ones.
    let non_blank = json!({"type": "string", "pattern": "\\S"});
    schemas["JobRequest"]["properties"]["handler"]["pattern"] = json!("\\S");
    schemas["RegisterBody"]["properties"]["handlers"]["items"] = non_blank;
    schemas["RegisterBody"]["properties"]["handlers"]["minItems"] = json!(1);
    schemas["ClaimBody"]["additionalProperties"] = json!(false);
    for bound in ["since", "until"] {
        schemas["BulkFilter"]["properties"][bound]["format"] = json!("date-time");
    }
    // `{}` (or both bounds null) is 422: a limit needs a bound.
    schemas["LimitRequest"]["minProperties"] = json!(1);
    schemas["HeartbeatRequest"]["additionalProperties"] = json!(false);
    schemas["PreviewRequest"]["properties"]["limit"]["minimum"] = json!(1);
    schemas["PreviewRequest"]["properties"]["limit"]["maximum"] = json!(1000);
    // A PATCH takes any fields of a submission, none required, and no others.
    let mut patch = schemas["JobRequest"].clone();
    if let Some(o) = patch.as_object_mut() {
        o.remove("required");
        o.insert("description".into(), json!("Any definition fields of a job; `{}` changes nothing."));
    }

    let paths = &mut doc["paths"];
    if let Some(body) = paths.pointer_mut("/~1v1~1jobs~1{id}/patch/requestBody/content/application~1json/schema") {
        *body = patch;
    }
    if let Some(ps) = paths.pointer_mut("/~1v1~1runs/get/parameters").and_then(Value::as_array_mut) {
        for p in ps.iter_mut().filter(|p| p["name"] == "state") {
            p["schema"] = json!({"$ref": "#/components/schemas/RunState"});
        }
    }
    let key = json!({"type": "string", "pattern": "^([A-Za-z0-9._:/-]{1,200}\\*?|\\*)$"});
    if let Some(ops) = paths.pointer_mut("/~1v1~1limits~1{key}").and_then(Value::as_object_mut) {
        for op in ops.values_mut() {
            for p in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
                if p["name"] == "key" {
                    p["schema"] = key.clone();
                }
            }
        }
    }
    // An empty body reads as `{}`, so a body whose fields are all optional may be left out.
    let schemas = doc["components"]["schemas"].clone();
    let paths = &mut doc["paths"];
    for item in paths.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
        for op in item.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
            let Some(body) = op.get_mut("requestBody") else { continue };
            let mut schema = &body["content"]["application/json"]["schema"];
            if let Some(name) = schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
                schema = &schemas[name];
            }
            let all_optional = schema["type"] == "object"
                && schema.get("minProperties").is_none()
                && schema.get("required").and_then(Value::as_array).is_none_or(|r| r.is_empty());
            if all_optional {
                body["required"] = json!(false);
            }
        }
    }
    // Query parameters: an empty value counts as absent (`?until=` is no `until`).
    for item in paths.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
        for op in item.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
            for p in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
                if p["in"] == "query" && p["schema"] != json!({"type": "string"}) {
                    let typed = p["schema"].take();
                    p["schema"] = json!({"anyOf": [typed, {"type": "string", "maxLength": 0}]});
                }
            }
        }
    }
}

/// Gives unsigned integer schemas (`minimum: 0` with an `int32`/`int64` format) their real range.
fn uints(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let unsigned = map.get("minimum").and_then(Value::as_i64).is_some_and(|m| m >= 0);
            if unsigned && map.get("maximum").is_none() {
                match map.get("format").and_then(Value::as_str) {
                    Some("int32") => {
                        map.insert("format".into(), json!("uint32"));
                        map.insert("maximum".into(), json!(u32::MAX));
                    }
                    Some("int64") => {
                        map.insert("format".into(), json!("uint64"));
                        map.insert("maximum".into(), json!(u64::MAX));
                    }
                    _ => {}
                }
            }
            map.values_mut().for_each(uints);
        }
        Value::Array(items) => items.iter_mut().for_each(uints),
        _ => {}
    }
}

/// Marks every property of an object schema `required`.
fn require_all(schema: &mut Value) {
    let names: Vec<Value> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(|k| Value::String(k.clone())).collect())
        .unwrap_or_default();
    if !names.is_empty() {
        schema["required"] = Value::Array(names);
    }
}

/// Turns `payload` and `output` properties anywhere below `v` into "any JSON" schemas.
fn any_json(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get_mut("properties") {
                for field in ANY_JSON_FIELDS {
                    if let Some(p) = props.get_mut(*field) {
                        let description = p.get("description").cloned().unwrap_or(json!("Any JSON value"));
                        *p = json!({"description": description});
                    }
                }
            }
            for (_, child) in map.iter_mut() {
                any_json(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(any_json),
        _ => {}
    }
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> axum::Json<Value> {
    axum::Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `(METHOD, path)` of every route `app()` registers, read from `lib.rs`'s `.route(...)`
    /// calls, so a route added there without documentation fails the tests.
    pub(crate) fn served_routes() -> BTreeSet<(String, String)> {
        let src = include_str!("lib.rs");
        let src = &src[..src.find("\n/// 405 with the error body").unwrap_or(src.len())];
        // Routes before `.nest("/v1", v1)` belong to the `/v1` router.
        let nest_at = src.find(".nest(\"/v1\"").expect("the /v1 router is nested");
        let mut out = BTreeSet::new();
        for (at, _) in src.match_indices(".route(\"") {
            let rest = &src[at + ".route(\"".len()..];
            let (path, call) = rest.split_once('"').expect("route path");
            let end = [".route(", ".fallback(", ".nest("].iter().filter_map(|m| call.find(m)).min();
            let call = &call[..end.unwrap_or(call.len())];
            let prefix = if at < nest_at { "/v1" } else { "" };
            for m in ["get", "post", "put", "patch", "delete"] {
                let pat = format!("{m}(");
                let is_method = |(i, _): (usize, &str)| {
                    i == 0 || !call.as_bytes()[i - 1].is_ascii_alphanumeric() && call.as_bytes()[i - 1] != b'_'
                };
                if call.match_indices(&pat).any(is_method) {
                    out.insert((m.to_uppercase(), format!("{prefix}{path}")));
                }
            }
        }
        out
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc = document();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn every_served_route_is_documented_and_nothing_else() {
        // The dashboard page and its assets are not API.
        let served: BTreeSet<_> = served_routes()
            .into_iter()
            .filter(|(_, p)| p != "/openapi.json" && p != "/" && !p.starts_with("/ui/"))
            .collect();
        assert!(served.len() >= 20, "route scan found too little: {served:?}");
        assert_eq!(served, documented(), "router vs OpenAPI");
    }

    #[test]
    fn operation_ids_are_unique_and_every_id_parameter_is_declared() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
                assert!(ids.insert(id.to_string()), "operationId {id} repeats");
                for name in path.split('{').skip(1).map(|s| s.split('}').next().unwrap()) {
                    let declared = op["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
                    });
                    assert!(declared, "{method} {path}: path parameter {name} not declared");
                }
                for (status, resp) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            resp.pointer("/content/application~1json/schema/$ref"),
                            Some(&json!("#/components/schemas/ErrorBody")),
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn answers_mark_always_present_fields_required_and_payloads_take_any_json() {
        let doc = document();
        let job = &doc["components"]["schemas"]["Job"];
        for f in ["id", "next_fire_time", "last_worker", "triggers", "payload"] {
            assert!(job["required"].as_array().unwrap().contains(&json!(f)), "Job.{f} not required");
        }
        assert!(job["properties"]["payload"].get("type").is_none(), "payload is any JSON");
        let trigger = &doc["components"]["schemas"]["Trigger"];
        assert!(trigger["required"].as_array().unwrap().contains(&json!("next_fire_at")));
        assert!(doc["paths"]["/v1/workers/{id}/claim"]["post"]["requestBody"].is_object());
        let claim = doc["paths"]["/v1/workers/{id}/claim"]["post"]["description"].as_str().unwrap();
        assert!(claim.contains("60s") && claim.contains("1000"), "{claim}");
        let batch = doc["paths"]["/v1/jobs/batch"]["post"]["description"].as_str().unwrap();
        assert!(batch.contains("10,000"), "{batch}");
    }

    /// What Schemathesis found the document and the server disagreeing on, stated as the server
    /// behaves (each bound here is one the server enforces, or the lack of one).
    #[test]
    fn the_document_states_bounds_the_server_enforces() {
        let doc = document();
        let s = &doc["components"]["schemas"];
        // u32 fields take all of u32, not only int32.
        assert_eq!(s["LimitRequest"]["properties"]["max_running"]["maximum"], json!(u32::MAX));
        assert_eq!(s["LimitRequest"]["minProperties"], json!(1));
        assert_eq!(s["RegisterBody"]["properties"]["handlers"]["minItems"], json!(1));
        assert_eq!(s["JobRequest"]["properties"]["handler"]["pattern"], json!("\\S"));
        assert_eq!(s["ClaimBody"]["additionalProperties"], json!(false));
        assert_eq!(s["BulkFilter"]["properties"]["until"]["format"], json!("date-time"));
        assert_eq!(s["PreviewRequest"]["properties"]["limit"]["minimum"], json!(1));
        let patch = &doc["paths"]["/v1/jobs/{id}"]["patch"]["requestBody"];
        assert_eq!(patch["required"], json!(false), "an empty PATCH body is `{{}}`");
        assert_eq!(patch["content"]["application/json"]["schema"]["additionalProperties"], json!(false));
        assert!(patch["content"]["application/json"]["schema"].get("required").is_none());
        assert_eq!(doc["paths"]["/v1/jobs"]["post"]["requestBody"]["required"], json!(true));
        let param = |path: &str, name: &str| {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{path} {name}"))["schema"]
                .clone()
        };
        // An empty query value is no value; list limits over 1000 count as 1000.
        let until = param("/v1/runs", "until");
        assert_eq!(until["anyOf"][1], json!({"type": "string", "maxLength": 0}));
        assert_eq!(param("/v1/runs", "state")["anyOf"][0]["$ref"], json!("#/components/schemas/RunState"));
        assert!(param("/v1/jobs", "limit")["anyOf"][0].get("maximum") != Some(&json!(1000)));
        assert_eq!(param("/v1/jobs/{id}/fires", "limit")["anyOf"][0]["maximum"], json!(1000));
        assert!(param("/v1/limits/{key}", "key")["pattern"].as_str().unwrap().contains("A-Za-z0-9._:/-"));
    }
}
