//! Access: bearer tokens (from `--token` and `--tokens-file`), their roles and namespaces, and
//! the policy that decides what a token may do.
//!
//! The policy is one pure function, [`decide`]: role × [`RouteClass`] × [`Target`] →
//! [`Decision`]. The `/v1` layer ([`authenticate`]) finds the token's [`Principal`], applies the
//! role part of the policy to the matched route, and leaves the principal in the request for the
//! handlers, which apply the namespace part once they know the object ([`Access`]).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

/// What a token may do (API.md "Roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every `GET` under `/v1` in its namespaces.
    Read,
    /// `read`, plus changing jobs and operating runs in its namespaces.
    Submit,
    /// The worker protocol only.
    Worker,
    /// Everything in its namespaces; global objects too with `*`.
    Admin,
}

/// The namespaces a token can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// `["*"]`: every namespace.
    All,
    /// Only these.
    Only(BTreeSet<String>),
}

impl Namespaces {
    /// Whether `ns` is one of them.
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(set) => set.contains(ns),
        }
    }
    /// Whether every namespace of `other` is one of these.
    pub fn covers(&self, other: &Namespaces) -> bool {
        match (self, other) {
            (Namespaces::All, _) => true,
            (Namespaces::Only(_), Namespaces::All) => false,
            (Namespaces::Only(mine), Namespaces::Only(theirs)) => theirs.is_subset(mine),
        }
    }
}

/// Who is calling: a token's name (never the token), role and namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name from the tokens file (`--token` flags are `flag-1`, `flag-2`, …).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its namespaces.
    pub namespaces: Namespaces,
}

impl Principal {
    /// The caller when no tokens are configured: admin of every namespace.
    pub fn open() -> Self {
        Self { name: "anonymous".into(), role: Role::Admin, namespaces: Namespaces::All }
    }
}

/// The kinds of route the roles speak of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// A `GET` of namespaced objects (jobs, runs, fires, …).
    Read,
    /// Changing jobs, operating runs (create, patch, delete, pause, resume, run, backfill,
    /// cancel, retry, bulk).
    Submit,
    /// Register, claim, heartbeat, complete, deregister.
    WorkerProtocol,
    /// A `GET` of global objects: limits, calendars, the worker list, stats.
    GlobalRead,
    /// Changing limits or calendars (global objects).
    GlobalWrite,
}

/// Which object a request touches, as far as namespaces go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// No particular namespace (lists, global objects, the role check alone).
    None,
    /// An existing object in this namespace (reads and writes by id).
    Existing(&'a str),
    /// A new object in this namespace.
    Create(&'a str),
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 403 `forbidden`: the role may not use the route, or may not create there.
    Deny,
    /// 404: the object is in a namespace the token cannot see; its existence is not disclosed.
    Hide,
}

/// The access policy of API.md "Roles, precisely", as one pure function.
pub fn decide(p: &Principal, class: RouteClass, target: Target<'_>) -> Decision {
    let role_allows = match (p.role, class) {
        (Role::Admin, RouteClass::GlobalWrite) => p.namespaces == Namespaces::All,
        (Role::Admin, _) => true,
        (Role::Worker, RouteClass::WorkerProtocol) => true,
        (Role::Worker, _) => false,
        (Role::Read | Role::Submit, RouteClass::Read | RouteClass::GlobalRead) => true,
        (Role::Submit, RouteClass::Submit) => true,
        (Role::Read | Role::Submit, _) => false,
    };
    if !role_allows {
        return Decision::Deny;
    }
    match target {
        Target::None => Decision::Allow,
        Target::Existing(ns) if p.namespaces.contains(ns) => Decision::Allow,
        Target::Existing(_) => Decision::Hide,
        Target::Create(ns) if p.namespaces.contains(ns) => Decision::Allow,
        Target::Create(_) => Decision::Deny,
    }
}

/// The class of a `/v1` route, from its method and path template (`/v1/jobs/{id}`). New routes
/// fall into the right class by these rules: `GET`s read; the worker protocol and the global
/// objects are named; every other write is a submit.
pub fn classify(method: &Method, template: &str) -> RouteClass {
    let path = template.strip_prefix("/v1").unwrap_or(template);
    let global = path.starts_with("/limits") || path.starts_with("/calendars");
    let worker_protocol = (path == "/workers" && method == Method::POST)
        || (path == "/workers/{id}" && method == Method::DELETE)
        || path.starts_with("/workers/{id}/")
        || path == "/runs/{id}/complete";
    if worker_protocol {
        RouteClass::WorkerProtocol
    } else if method == Method::GET || method == Method::HEAD {
        if global || path == "/workers" || path.starts_with("/stats") {
            RouteClass::GlobalRead
        } else {
            RouteClass::Read
        }
    } else if global {
        RouteClass::GlobalWrite
    } else if path == "/triggers/preview" {
        // Computes fire times of an unsaved trigger: touches nothing.
        RouteClass::Read
    } else {
        RouteClass::Submit
    }
}

/// One entry of `--tokens-file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    name: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    token: Option<String>,
    role: Role,
    namespaces: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<FileToken>,
}

/// The configured tokens: SHA-256 digests (never the tokens) and who each one is.
#[derive(Debug, Default)]
pub struct TokenSet {
    entries: Vec<([u8; 32], Arc<Principal>)>,
}

impl TokenSet {
    /// The set from `--token` flags (admin of every namespace) and the tokens file's text.
    pub fn build(flag_tokens: &[String], file: Option<&str>) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (i, t) in flag_tokens.iter().enumerate() {
            let p = Principal { name: format!("flag-{}", i + 1), role: Role::Admin, namespaces: Namespaces::All };
            entries.push((digest(t), Arc::new(p)));
        }
        if let Some(text) = file {
            let parsed: TokensFile = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text))
                .map_err(|e| format!("tokens file: {}: {}", e.path(), e.inner()))?;
            for (i, t) in parsed.tokens.into_iter().enumerate() {
                let at = |m: &str| format!("tokens file: tokens[{i}]: {m}");
                let d = match (&t.sha256, &t.token) {
                    (Some(hex_digest), None) => {
                        let bytes = hex::decode(hex_digest.trim()).map_err(|_| at("sha256: expected 64 hex digits"))?;
                        <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| at("sha256: expected 64 hex digits"))?
                    }
                    (None, Some(plain)) if !plain.is_empty() => digest(plain),
                    _ => return Err(at("give exactly one of sha256 or token")),
                };
                let namespaces = if t.namespaces.iter().any(|n| n == "*") {
                    Namespaces::All
                } else if t.namespaces.is_empty() || t.namespaces.iter().any(|n| n.trim().is_empty()) {
                    return Err(at("namespaces: list at least one namespace, or \"*\""));
                } else {
                    Namespaces::Only(t.namespaces.into_iter().collect())
                };
                entries.push((d, Arc::new(Principal { name: t.name, role: t.role, namespaces })));
            }
        }
        Ok(Self { entries })
    }

    /// Who `token` is. Every entry is compared, in constant time, whatever matches.
    pub fn find(&self, token: &str) -> Option<Arc<Principal>> {
        let d = digest(token);
        let mut found = None;
        for (known, p) in &self.entries {
            if bool::from(known.ct_eq(&d)) && found.is_none() {
                found = Some(p.clone());
            }
        }
        found
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Where tokens come from, and the set in force (replaced on SIGHUP).
#[derive(Debug, Default)]
pub struct Tokens {
    flag_tokens: Vec<String>,
    file: Option<std::path::PathBuf>,
    current: RwLock<Arc<TokenSet>>,
}

impl Tokens {
    /// Reads the tokens file (when given); an error names what is wrong and where.
    pub fn load(flag_tokens: Vec<String>, file: Option<std::path::PathBuf>) -> Result<Self, String> {
        let tokens = Self { flag_tokens, file, current: RwLock::default() };
        tokens.reload()?;
        Ok(tokens)
    }

    /// Whether access control is on: some `--token`, or a tokens file (even an empty one,
    /// which then refuses every `/v1` request).
    pub fn enabled(&self) -> bool {
        !self.flag_tokens.is_empty() || self.file.is_some()
    }

    /// Reads the sources again; on error the set in force stays and the error is returned.
    pub fn reload(&self) -> Result<usize, String> {
        let text = match &self.file {
            Some(path) => {
                Some(std::fs::read_to_string(path).map_err(|e| format!("tokens file {}: {e}", path.display()))?)
            }
            None => None,
        };
        let set = TokenSet::build(&self.flag_tokens, text.as_deref())?;
        let n = set.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(n)
    }

    /// The set in force.
    pub fn current(&self) -> Arc<TokenSet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Reloads the tokens on every SIGHUP until the process ends; a bad file is logged and the old
/// set stays in force.
pub fn reload_on_sighup(tokens: Arc<Tokens>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match tokens.reload() {
                Ok(n) => tracing::info!(tokens = n, "tokens reloaded"),
                Err(e) => tracing::error!(error = %e, "tokens not reloaded; the previous set stays in force"),
            }
        }
    }))
}

fn unauthorized(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
}

/// 403 for a route the caller's role may not use, or a namespace it may not create in.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The `/v1` layer: token → principal (401), route × role (403), per-token rate limit (429);
/// the principal goes on to the handler as [`Access`].
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let principal = if state.tokens.enabled() {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(given) = given else {
            return unauthorized("Authorization: a bearer token is required (Authorization: Bearer <token>)");
        };
        match state.tokens.current().find(given) {
            Some(p) => p,
            None => return unauthorized("Authorization: unknown bearer token"),
        }
    } else {
        Arc::new(Principal::open())
    };
    if let Some(limiter) = &state.rate_limiter {
        if let Err(wait) = limiter.check(&principal.name) {
            return crate::limits::rate_limited(wait);
        }
    }
    if let Some(template) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()) {
        let class = classify(req.method(), &template);
        if decide(&principal, class, Target::None) == Decision::Deny {
            return forbidden(format!(
                "token {:?} ({:?}) may not use {} {template}",
                principal.name,
                principal.role,
                req.method()
            ))
            .into_response();
        }
    }
    req.extensions_mut().insert(Access(principal));
    next.run(req).await
}

/// The caller, for the handlers' namespace checks.
#[derive(Debug, Clone)]
pub struct Access(pub Arc<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        // The layer always runs first under /v1; without it (in-process calls) the caller is open.
        Ok(parts.extensions.get::<Access>().cloned().unwrap_or_else(|| Access(Arc::new(Principal::open()))))
    }
}

/// How a list is narrowed to the caller's namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    /// Whatever the request asked (one namespace or all); the caller sees it all.
    AsAsked(Option<String>),
    /// Nothing: the asked namespace is hidden.
    Empty,
    /// Keep only items in these namespaces (a token of several namespaces listing them all).
    Filter(BTreeSet<String>),
}

impl Access {
    /// The caller may see an existing object in `ns`; else 404 for `what` (not disclosed).
    pub fn see(&self, ns: &str, what: impl FnOnce() -> String) -> Result<(), ApiError> {
        match self.0.namespaces.contains(ns) {
            true => Ok(()),
            false => Err(ApiError::not_found(what())),
        }
    }

    /// The caller may create (or move an object) in `ns`; else 403.
    pub fn create(&self, ns: &str) -> Result<(), ApiError> {
        match self.0.namespaces.contains(ns) {
            true => Ok(()),
            false => Err(forbidden(format!("namespace: token {:?} may not write in namespace {ns:?}", self.0.name))),
        }
    }

    /// How a list filtered by `asked` (the `namespace` parameter) is narrowed.
    pub fn scope(&self, asked: Option<String>) -> ListScope {
        match (&self.0.namespaces, asked) {
            (Namespaces::All, asked) => ListScope::AsAsked(asked),
            (Namespaces::Only(set), Some(ns)) if set.contains(&ns) => ListScope::AsAsked(Some(ns)),
            (Namespaces::Only(_), Some(_)) => ListScope::Empty,
            (Namespaces::Only(set), None) if set.len() == 1 => ListScope::AsAsked(set.iter().next().cloned()),
            (Namespaces::Only(set), None) => ListScope::Filter(set.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, ns: &[&str]) -> Principal {
        let namespaces =
            if ns == ["*"] { Namespaces::All } else { Namespaces::Only(ns.iter().map(|s| s.to_string()).collect()) };
        Principal { name: "t".into(), role, namespaces }
    }

    #[test]
    fn roles_reach_exactly_their_route_classes() {
        use Decision::*;
        use RouteClass::*;
        let classes = [Read, Submit, WorkerProtocol, GlobalRead, GlobalWrite];
        let table = [
            (Role::Read, [Allow, Deny, Deny, Allow, Deny]),
            (Role::Submit, [Allow, Allow, Deny, Allow, Deny]),
            (Role::Worker, [Deny, Deny, Allow, Deny, Deny]),
            (Role::Admin, [Allow, Allow, Allow, Allow, Deny]),
        ];
        for (role, expected) in table {
            for (class, want) in classes.iter().zip(expected) {
                assert_eq!(decide(&who(role, &["a"]), *class, Target::None), want, "{role:?} {class:?}");
            }
        }
        // Global writes need admin of every namespace.
        assert_eq!(decide(&who(Role::Admin, &["*"]), GlobalWrite, Target::None), Allow);
    }

    #[test]
    fn other_namespaces_are_hidden_for_existing_objects_and_denied_for_new_ones() {
        let p = who(Role::Submit, &["a"]);
        assert_eq!(decide(&p, RouteClass::Submit, Target::Existing("a")), Decision::Allow);
        assert_eq!(decide(&p, RouteClass::Submit, Target::Existing("b")), Decision::Hide);
        assert_eq!(decide(&p, RouteClass::Read, Target::Existing("b")), Decision::Hide);
        assert_eq!(decide(&p, RouteClass::Submit, Target::Create("a")), Decision::Allow);
        assert_eq!(decide(&p, RouteClass::Submit, Target::Create("b")), Decision::Deny);
        // A route the role may not use is 403 whatever the namespace (nothing is disclosed).
        assert_eq!(decide(&who(Role::Read, &["a"]), RouteClass::Submit, Target::Existing("b")), Decision::Deny);
        assert_eq!(decide(&who(Role::Admin, &["*"]), RouteClass::Submit, Target::Existing("b")), Decision::Allow);
    }

    #[test]
    fn routes_are_classified_by_method_and_template() {
        use RouteClass::*;
        let cases = [
            (Method::GET, "/v1/jobs", Read),
            (Method::POST, "/v1/jobs", Submit),
            (Method::PATCH, "/v1/jobs/{id}", Submit),
            (Method::GET, "/v1/jobs/{id}/fires", Read),
            (Method::POST, "/v1/jobs/{id}/backfill", Submit),
            (Method::POST, "/v1/runs/{id}/cancel", Submit),
            (Method::POST, "/v1/runs/{id}/complete", WorkerProtocol),
            (Method::POST, "/v1/workers", WorkerProtocol),
            (Method::GET, "/v1/workers", GlobalRead),
            (Method::DELETE, "/v1/workers/{id}", WorkerProtocol),
            (Method::POST, "/v1/workers/{id}/claim", WorkerProtocol),
            (Method::GET, "/v1/limits/{key}", GlobalRead),
            (Method::PUT, "/v1/limits/{key}", GlobalWrite),
            (Method::DELETE, "/v1/calendars/{name}", GlobalWrite),
            (Method::GET, "/v1/stats/runs", GlobalRead),
            (Method::POST, "/v1/triggers/preview", Read),
        ];
        for (m, path, want) in cases {
            assert_eq!(classify(&m, path), want, "{m} {path}");
        }
    }

    #[test]
    fn tokens_file_takes_digests_in_either_case_and_plain_tokens() {
        let upper = hex::encode_upper(Sha256::digest(b"s3cret"));
        let file = format!(
            r#"{{"tokens": [
                {{"name": "ci", "sha256": "{upper}", "role": "submit", "namespaces": ["billing"]}},
                {{"name": "ops", "token": "plain", "role": "admin", "namespaces": ["*"]}}
            ]}}"#
        );
        let set = TokenSet::build(&["flag".into()], Some(&file)).expect("valid file");
        assert_eq!(set.len(), 3);
        let ci = set.find("s3cret").expect("digest matches");
        assert_eq!((ci.name.as_str(), ci.role), ("ci", Role::Submit));
        assert!(ci.namespaces.contains("billing") && !ci.namespaces.contains("other"));
        assert_eq!(set.find("plain").expect("plain token").namespaces, Namespaces::All);
        assert_eq!(set.find("flag").expect("flag token").role, Role::Admin);
        assert!(set.find("nope").is_none());
        let lower = file.replace(&upper, &upper.to_lowercase());
        assert!(TokenSet::build(&[], Some(&lower)).expect("lower case").find("s3cret").is_some());
    }

    #[test]
    fn a_bad_tokens_file_is_refused_with_a_message() {
        let bad_role = r#"{"tokens": [{"name": "x", "token": "t", "role": "root", "namespaces": ["*"]}]}"#;
        assert!(TokenSet::build(&[], Some(bad_role)).unwrap_err().contains("role"));
        assert!(TokenSet::build(&[], Some("{not json")).is_err());
        let both = r#"{"tokens": [{"name": "x", "token": "t", "sha256": "00", "role": "read", "namespaces": ["*"]}]}"#;
        assert!(TokenSet::build(&[], Some(both)).unwrap_err().contains("tokens[0]"));
    }

    #[test]
    fn reload_keeps_the_old_set_when_the_file_turns_bad() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, r#"{"tokens": [{"name": "a", "token": "one", "role": "read", "namespaces": ["*"]}]}"#)
            .unwrap();
        let tokens = Tokens::load(vec![], Some(path.clone())).unwrap();
        assert!(tokens.current().find("one").is_some());
        std::fs::write(&path, "{").unwrap();
        assert!(tokens.reload().is_err());
        assert!(tokens.current().find("one").is_some(), "old set stays in force");
        std::fs::write(&path, r#"{"tokens": [{"name": "b", "token": "two", "role": "read", "namespaces": ["*"]}]}"#)
            .unwrap();
        tokens.reload().unwrap();
        assert!(tokens.current().find("one").is_none() && tokens.current().find("two").is_some());
    }

    #[test]
    fn lists_are_narrowed_to_the_token_namespaces() {
        let one = Access(Arc::new(who(Role::Read, &["a"])));
        assert_eq!(one.scope(None), ListScope::AsAsked(Some("a".into())));
        assert_eq!(one.scope(Some("b".into())), ListScope::Empty);
        let two = Access(Arc::new(who(Role::Read, &["a", "b"])));
        assert!(matches!(two.scope(None), ListScope::Filter(s) if s.len() == 2));
        let all = Access(Arc::new(who(Role::Read, &["*"])));
        assert_eq!(all.scope(None), ListScope::AsAsked(None));
    }
}
