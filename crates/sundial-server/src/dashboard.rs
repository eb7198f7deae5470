//! The web dashboard: `GET /` serves the page and `GET /ui/{version}/{file}` its scripts, styles
//! and vendored libraries, all embedded into the binary at build time from `ui/` (no CDN, no
//! files to deploy). The page is a client of the public `/v1` API only.
//!
//! Asset URLs carry a digest of every embedded file, so they can be cached for a year: a new
//! binary with changed assets has a new digest, hence new URLs. The page itself is `no-cache`.

use crate::error::ApiError;
use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

/// One embedded file.
struct Asset {
    /// Path under `/ui/{version}/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $file)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("app.js", "src/app.js", JS),
    asset!("api.js", "src/api.js", JS),
    asset!("util.js", "src/util.js", JS),
    asset!("charts.js", "src/charts.js", JS),
    asset!("html.js", "src/html.js", JS),
    asset!("app.css", "src/app.css", CSS),
    asset!("vendor/preact.mjs", "vendor/preact.mjs", JS),
    asset!("vendor/preact-hooks.mjs", "vendor/preact-hooks.mjs", JS),
    asset!("vendor/htm.mjs", "vendor/htm.mjs", JS),
    asset!("vendor/uplot.mjs", "vendor/uplot.mjs", JS),
    asset!("vendor/uplot.css", "vendor/uplot.css", CSS),
    asset!("vendor/LICENSES.txt", "vendor/LICENSES.txt", "text/plain; charset=utf-8"),
];

const INDEX: &str = include_str!("../ui/src/index.html");

/// A digest of every embedded file: the version segment of asset URLs.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    // SipHash with fixed keys: stable within one binary, which is all a cache key needs.
    let mut h = std::hash::DefaultHasher::new();
    INDEX.hash(&mut h);
    for a in ASSETS {
        a.path.hash(&mut h);
        a.body.hash(&mut h);
    }
    format!("{:016x}", h.finish())
});

static PAGE: LazyLock<String> = LazyLock::new(|| INDEX.replace("{{base}}", &format!("/ui/{}", *VERSION)));

/// `GET /`: the page, pointing at this binary's asset version.
pub async fn index() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE.as_str())).into_response()
}

/// `GET /ui/{version}/{file}`: an embedded asset. A stale version (a page from an older binary)
/// still gets today's file, but uncached.
pub async fn asset(Path(path): Path<String>) -> Response {
    let (version, file) = path.split_once('/').unwrap_or(("", path.as_str()));
    let Some(a) = ASSETS.iter().find(|a| a.path == file) else {
        return ApiError::not_found(format!("dashboard asset {file:?}")).into_response();
    };
    let cache = if version == VERSION.as_str() { "public, max-age=31536000, immutable" } else { "no-cache" };
    ([(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, cache)], a.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_points_at_embedded_assets_of_this_version() {
        let page = PAGE.as_str();
        assert!(!page.contains("{{base}}"), "placeholder left in the page");
        // Every local URL the page names is an embedded asset of this version.
        let prefix = format!("/ui/{}/", *VERSION);
        let mut named = 0;
        for part in page.split('"').filter(|p| p.starts_with("/ui/")) {
            let file = part.strip_prefix(&prefix).unwrap_or_else(|| panic!("{part} is not under {prefix}"));
            assert!(ASSETS.iter().any(|a| a.path == file), "{file} is not embedded");
            named += 1;
        }
        assert!(named >= 5, "the page names only {named} assets");
    }
}
