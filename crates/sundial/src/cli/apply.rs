//! `sundial apply -f jobs.yaml`: the file's shapes and what is sent for each job. Jobs are
//! matched by `namespace/name`, so a file can be applied again and again (like `kubectl apply`).

use anyhow::{bail, Context};
use serde_json::Value;

/// The jobs of a file: a list of job bodies, `{jobs: [...]}`, or one job. YAML is a superset
/// of JSON, so JSON files work too.
pub(crate) fn parse(text: &str) -> anyhow::Result<Vec<Value>> {
    let doc: Value = serde_yaml_ng::from_str(text).context("not valid YAML")?;
    let jobs = match doc {
        Value::Array(items) => items,
        Value::Object(mut o) if o.contains_key("jobs") => match o.remove("jobs") {
            Some(Value::Array(items)) => items,
            _ => bail!("jobs: expected a list of jobs"),
        },
        job @ Value::Object(_) => vec![job],
        _ => bail!("expected a list of jobs, {{jobs: [...]}}, or one job"),
    };
    for (i, j) in jobs.iter().enumerate() {
        if !j.is_object() {
            bail!("jobs[{i}]: expected a job object");
        }
        if j.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            bail!("jobs[{i}].name: apply matches jobs by namespace/name, so each needs a name");
        }
    }
    Ok(jobs)
}

/// `namespace/name` of a job body (`default` when it has no namespace).
pub(crate) fn label(job: &Value) -> String {
    let ns = job.get("namespace").and_then(Value::as_str).unwrap_or("default");
    format!("{ns}/{}", job.get("name").and_then(Value::as_str).unwrap_or_default())
}

/// The `PATCH` for an existing job: the file's fields, and `triggers: []` when the file has
/// none (triggers are replaced as a whole, so the file is what the job ends up with). Fields
/// the file leaves out keep their values; `idempotency_key` is not sent (it names a submission,
/// not the job).
pub(crate) fn patch_body(job: &Value) -> Value {
    let mut body = job.clone();
    let o = body.as_object_mut().expect("checked by parse");
    o.remove("idempotency_key");
    o.entry("triggers").or_insert_with(|| Value::Array(vec![]));
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_file_is_a_list_a_jobs_key_or_one_job() {
        let list = "- {name: a, handler: echo}\n- {name: b, namespace: billing, handler: echo}\n";
        assert_eq!(parse(list).unwrap().len(), 2);
        assert_eq!(parse("jobs:\n  - name: a\n    handler: echo\n").unwrap().len(), 1);
        assert_eq!(parse("name: a\nhandler: echo\n").unwrap()[0]["handler"], "echo");
        assert_eq!(parse(r#"[{"name": "a", "handler": "echo"}]"#).unwrap().len(), 1);
    }

    #[test]
    fn every_job_needs_a_name() {
        let e = parse("- {name: a, handler: echo}\n- {handler: echo}\n").unwrap_err().to_string();
        assert!(e.starts_with("jobs[1].name:"), "{e}");
    }

    #[test]
    fn labels_default_the_namespace() {
        assert_eq!(label(&json!({"name": "a"})), "default/a");
        assert_eq!(label(&json!({"name": "a", "namespace": "billing"})), "billing/a");
    }

    #[test]
    fn a_patch_replaces_triggers_and_drops_the_idempotency_key() {
        let p = patch_body(&json!({"name": "a", "handler": "echo", "idempotency_key": "k"}));
        assert_eq!(p, json!({"name": "a", "handler": "echo", "triggers": []}));
    }
}
