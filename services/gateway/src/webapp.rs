//! The web chat app (`clients/web`) and the JavaScript SDK it runs on
//! (`clients/js/src`), embedded in the binary and served by every gateway:
//! `/` is the app, `/app/…` its files, `/sdk/…` the SDK's modules. Nothing
//! is read from disk at run time, so `imlog serve` alone is enough to chat.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::{EmbeddedFile, RustEmbed};

#[derive(RustEmbed)]
#[folder = "../../clients/web"]
#[exclude = "tsconfig.json"]
struct WebApp;

#[derive(RustEmbed)]
#[folder = "../../clients/js/src"]
struct Sdk;

/// What a page of ours may load and connect to: only this origin, plus
/// WebSockets (a transfer's relay may be on another gateway) and the
/// `blob:`/`data:` URLs that downloaded images and previews are shown from.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

pub(crate) fn routes<S: Clone + Send + Sync + 'static>(app: Router<S>) -> Router<S> {
    app.route(
        "/",
        get(|headers: HeaderMap| async move { web("index.html", &headers) }),
    )
    .route(
        "/app/{*path}",
        get(|Path(path): Path<String>, headers: HeaderMap| async move { web(&path, &headers) }),
    )
    .route(
        "/sdk/{*path}",
        get(|Path(path): Path<String>, headers: HeaderMap| async move {
            serve(Sdk::get(&path), &headers)
        }),
    )
}

fn web(path: &str, headers: &HeaderMap) -> Response {
    serve(WebApp::get(path), headers)
}

/// One embedded file, revalidated by its hash on every load (`no-cache`):
/// a new binary's app is picked up at once, an unchanged one costs a 304.
fn serve(file: Option<EmbeddedFile>, headers: &HeaderMap) -> Response {
    let Some(file) = file else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, "no-cache".to_owned()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        (header::REFERRER_POLICY, "no-referrer".to_owned()),
        (
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY.to_owned(),
        ),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let content_type = HeaderValue::from_str(file.metadata.mimetype())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    (
        common,
        [(header::CONTENT_TYPE, content_type)],
        file.data.into_owned(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
