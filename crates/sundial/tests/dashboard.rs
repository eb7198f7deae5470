//! The dashboard as the binary serves it, over real HTTP: the page, its embedded assets under a
//! versioned path with long cache headers, and the page staying open when tokens guard `/v1`.
//! What the page does in a browser is tested by `crates/sundial-server/ui/tests/` (Playwright
//! driving Chromium against a real `sundial serve`), run by scripts/test.sh.

use std::path::Path;

mod support;
use support::*;

fn ui_file(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sundial-server/ui").join(rel)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_the_page_and_its_embedded_assets_with_cache_headers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server =
        serve(&format!("sqlite://{}/dash.db", dir.path().display()), port, &["--workers", "0", "--token", "t0k"]);
    wait_ready(&base).await;

    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status(), 200, "the page is open even when /v1 needs a token");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    let start = html.find("/ui/").expect("the page names its assets");
    let version = html[start + 4..].split('/').next().unwrap().to_string();

    for (url, file, kind) in [
        ("app.js", "src/app.js", "text/javascript"),
        ("app.css", "src/app.css", "text/css"),
        ("vendor/preact.mjs", "vendor/preact.mjs", "text/javascript"),
        ("vendor/uplot.mjs", "vendor/uplot.mjs", "text/javascript"),
    ] {
        let res = reqwest::get(format!("{base}/ui/{version}/{url}")).await.unwrap();
        assert_eq!(res.status(), 200, "{url}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with(kind), "{url}");
        assert_eq!(res.headers()["cache-control"], "public, max-age=31536000, immutable", "{url}");
        assert_eq!(res.bytes().await.unwrap().as_ref(), ui_file(file).as_slice(), "{url} differs from ui/{file}");
    }

    // A page from an older binary still gets today's file, but not cached for long.
    let stale = reqwest::get(format!("{base}/ui/0000000000000000/app.js")).await.unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["cache-control"], "no-cache");

    let missing = reqwest::get(format!("{base}/ui/{version}/nope.js")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    // The data behind the page still needs the token.
    assert_eq!(reqwest::get(format!("{base}/v1/jobs")).await.unwrap().status(), 401);
}
