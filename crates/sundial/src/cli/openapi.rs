//! `sundial openapi [--markdown]`: the server's OpenAPI document as JSON, or rendered as the
//! Markdown reference committed at `docs/api.md` (a test fails when that file is stale).

use clap::Args;
use serde_json::Value;
use std::fmt::Write;

/// `sundial openapi` flags.
#[derive(Args, Debug)]
pub struct OpenapiArgs {
    /// Render Markdown (the `docs/api.md` reference) instead of JSON.
    #[arg(long)]
    pub markdown: bool,
}

/// Prints the document.
pub(crate) fn run(args: OpenapiArgs) -> anyhow::Result<()> {
    let doc = sundial_server::openapi::document();
    if args.markdown {
        print!("{}", markdown(&doc));
    } else {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The Markdown reference of an OpenAPI document (as JSON).
pub(crate) fn markdown(doc: &Value) -> String {
    let mut out = String::new();
    let title = doc.pointer("/info/title").and_then(Value::as_str).unwrap_or("API");
    let _ = writeln!(out, "# {title} HTTP API reference\n");
    if let Some(d) = doc.pointer("/info/description").and_then(Value::as_str) {
        let _ = writeln!(out, "{d}\n");
    }
    out.push_str(
        "Generated from the server's `/openapi.json` by `sundial openapi --markdown > docs/api.md`; \
         do not edit by hand (a test fails when this file is stale). Errors are \
         `{\"error\": {\"code\", \"message\"}}` with the status listed per route.\n\n",
    );
    let empty = serde_json::Map::new();
    let paths = doc.get("paths").and_then(Value::as_object).unwrap_or(&empty);
    out.push_str("## Routes\n\n| Method | Path | Operation |\n|---|---|---|\n");
    for (path, item) in paths {
        for m in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let op = &item[*m];
            let id = op.get("operationId").and_then(Value::as_str).unwrap_or("");
            let heading = format!("{} {path}", m.to_uppercase());
            let _ = writeln!(out, "| {} | [`{path}`](#{}) | {id} |", m.to_uppercase(), anchor(&heading));
        }
    }
    out.push('\n');
    for (path, item) in paths {
        for m in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            operation(&mut out, &m.to_uppercase(), path, &item[*m]);
        }
    }
    if let Some(schemas) = doc.pointer("/components/schemas").and_then(Value::as_object) {
        out.push_str("## Schemas\n\n");
        for (name, s) in schemas {
            let _ = writeln!(out, "### {name}\n");
            if let Some(d) = s.get("description").and_then(Value::as_str) {
                let _ = writeln!(out, "{}\n", d.trim());
            }
            fields(&mut out, s);
        }
    }
    out
}

/// The anchor a Markdown renderer (GitHub's rules) gives a heading.
fn anchor(heading: &str) -> String {
    heading
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn operation(out: &mut String, method: &str, path: &str, op: &Value) {
    let id = op.get("operationId").and_then(Value::as_str).unwrap_or("");
    let _ = writeln!(out, "## {method} {path}\n\nOperation `{id}`.\n");
    for k in ["summary", "description"] {
        if let Some(t) = op.get(k).and_then(Value::as_str).filter(|t| !t.trim().is_empty()) {
            let _ = writeln!(out, "{}\n", t.trim());
        }
    }
    if let Some(params) = op.get("parameters").and_then(Value::as_array).filter(|p| !p.is_empty()) {
        out.push_str("Parameters:\n\n");
        for p in params {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
            let place = p.get("in").and_then(Value::as_str).unwrap_or("?");
            let required = if p.get("required").and_then(Value::as_bool) == Some(true) { ", required" } else { "" };
            let ty = p.get("schema").map(type_of).unwrap_or_default();
            let desc =
                p.get("description").and_then(Value::as_str).map(|d| format!(": {}", one_line(d))).unwrap_or_default();
            let _ = writeln!(out, "- `{name}` ({place}, {ty}{required}){desc}");
        }
        out.push('\n');
    }
    if let Some(body) = op.get("requestBody") {
        let schema = body.pointer("/content/application~1json/schema").map(type_of).unwrap_or_else(|| "any".into());
        let _ = writeln!(out, "Request body (JSON): {schema}\n");
    }
    if let Some(resps) = op.get("responses").and_then(Value::as_object) {
        out.push_str("Responses:\n\n");
        for (status, r) in resps {
            let desc = r.get("description").and_then(Value::as_str).map(one_line).unwrap_or_default();
            let schema = r
                .get("content")
                .and_then(Value::as_object)
                .and_then(|c| c.values().next())
                .and_then(|c| c.get("schema"))
                .map(|s| format!(" — {}", type_of(s)))
                .unwrap_or_default();
            let _ = writeln!(out, "- `{status}` {desc}{schema}");
        }
        out.push('\n');
    }
}

fn fields(out: &mut String, schema: &Value) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        if let Some(variants) = schema.get("enum").and_then(Value::as_array) {
            let vs: Vec<String> = variants.iter().map(|v| format!("`{}`", v.as_str().unwrap_or("?"))).collect();
            let _ = writeln!(out, "One of {}.\n", vs.join(", "));
        } else {
            let _ = writeln!(out, "Type: {}.\n", type_of(schema));
        }
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| Field | Type | Required | Description |\n|---|---|---|---|\n");
    for (name, p) in props {
        let req = if required.contains(&name.as_str()) { "yes" } else { "" };
        let desc = p.get("description").and_then(Value::as_str).map(one_line).unwrap_or_default();
        let _ =
            writeln!(out, "| `{name}` | {} | {req} | {} |", type_of(p).replace('|', "\\|"), desc.replace('|', "\\|"));
    }
    out.push('\n');
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A short human type: `string`, `integer`, `Job`, `array of Run`, `string or null`, `any`.
fn type_of(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#{})", name.to_ascii_lowercase());
    }
    for k in ["oneOf", "anyOf", "allOf"] {
        if let Some(alts) = s.get(k).and_then(Value::as_array) {
            let ts: Vec<String> = alts.iter().map(type_of).collect();
            return ts.join(if k == "allOf" { " and " } else { " or " });
        }
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
        _ => return "any".into(),
    };
    if ty.starts_with("array") {
        let item = s.get("items").map(type_of).unwrap_or_else(|| "any".into());
        return ty.replacen("array", &format!("array of {item}"), 1);
    }
    match s.get("format").and_then(Value::as_str) {
        Some(f) => format!("{ty} ({f})"),
        None => ty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_matches_the_servers_openapi_document() {
        let doc = sundial_server::openapi::document();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == markdown(&doc),
            "docs/api.md is stale: run `cargo run -p sundial -- openapi --markdown > docs/api.md`"
        );
    }

    #[test]
    fn types_read_as_words() {
        let t = |v: Value| type_of(&v);
        assert_eq!(
            t(serde_json::json!({"type": ["string", "null"], "format": "date-time"})),
            "string or null (date-time)"
        );
        assert_eq!(
            t(serde_json::json!({"type": "array", "items": {"$ref": "#/components/schemas/Run"}})),
            "array of [Run](#run)"
        );
        assert_eq!(t(serde_json::json!({})), "any");
    }
}
