//! The web dashboard at `/`: one static page that reads the `/v1` API (with the bearer token
//! the user enters, when auth is on) and shows jobs, runs, workers and what is waiting.

use axum::response::Html;

/// `GET /`.
pub async fn index() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}
