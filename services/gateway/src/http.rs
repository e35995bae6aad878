//! The HTTP surface: `/ws` (the chat session), the web app at `/`,
//! `/healthz`, `/metrics`, and the read-only query API under `/v1` (what the
//! `query` role serves alone).

use crate::connection::{self, HARD_FRAME_LIMIT};
use crate::error::ApiError;
use crate::Gateway;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use imlog_domain::accounts::Session;
use imlog_domain::Writes;
use imlog_protocol::{
    ErrorCode, GatewayView, MessageId, PageSize, ThreadId, DEFAULT_MESSAGE_PAGE,
    DEFAULT_THREAD_PAGE,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Which parts of the surface a process serves.
#[derive(Debug, Clone, Copy)]
pub struct Surface {
    /// The WebSocket chat session.
    pub chat: bool,
    /// The `/v1` query API.
    pub queries: bool,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) gateway: Arc<Gateway>,
}

/// Health and metrics only, for roles without a gateway (the projector).
pub fn ops_router(
    db: imlog_postgres::Pool,
    log: imlog_log::SharedLog,
    metrics: PrometheusHandle,
) -> Router {
    Router::new()
        .route("/healthz", get(move || health(db.clone(), log.clone())))
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
}

pub fn router(gateway: Arc<Gateway>, surface: Surface, metrics: PrometheusHandle) -> Router {
    let mut app = Router::new();
    if surface.chat {
        app = app.route("/ws", get(upgrade));
        app = crate::files::routes(app, &gateway.domain.files);
        app = crate::transfers::routes(app);
        app = crate::webapp::routes(app);
    }
    if surface.chat || surface.queries {
        app = app.route("/v1/gateway", get(least_loaded));
    }
    if surface.queries {
        app = app
            .route("/v1/threads", get(threads))
            .route("/v1/threads/{thread_id}/messages", get(messages));
    }
    let state = AppState {
        gateway: gateway.clone(),
    };
    app.with_state(state).merge(ops_router(
        gateway.domain.journal.read().pool().clone(),
        gateway.domain.journal.log().clone(),
        metrics,
    ))
}

async fn upgrade(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    // The router is served with connect info (`imlog::app`).
    let peer = peer.ip();
    let Ok(permit) = state.gateway.connections.clone().try_acquire_owned() else {
        metrics::counter!("imlog_gateway_connections_refused_total").increment(1);
        let body = json!({ "ok": false, "error": { "code": "unavailable", "message": "this gateway is full; try another or retry" } });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    };
    ws.max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        // The default 128 KiB read buffer is zero-filled on every read: with
        // a thousand chatty connections that memset was a third of the CPU.
        // Frames here are small; a 2 KiB buffer reads most in one go, and
        // each reply or push is flushed as it is sent.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            connection::serve(socket, state.gateway, peer).await;
            drop(permit);
        })
}

/// Bytes a connection reads from its socket at a time: requests are small
/// JSON, and every idle connection holds this much.
const READ_BUFFER: usize = 1024;

/// `/healthz`: the database answers a query and the log its end offsets,
/// each within 2 s. What failed is named; the cause goes to the server's
/// log, not to whoever asks.
async fn health(db: imlog_postgres::Pool, log: imlog_log::SharedLog) -> Response {
    let database = async {
        let client = db.get().await.map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let log_check = async {
        log.end_offsets(imlog_events::Topic::Users)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let (database, log_state) = tokio::join!(within_2s(database), within_2s(log_check));
    let mut down = Vec::new();
    for (part, result) in [("database", database), ("log", log_state)] {
        if let Err(cause) = result {
            tracing::warn!(part, error = %cause, "health check failed");
            down.push(part);
        }
    }
    if down.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response()
    } else {
        let body = json!({ "status": "down", "down": down, "error": format!("{} unavailable", down.join(" and ")) });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn within_2s(
    check: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(result) => result,
        Err(_) => Err("no answer within 2 s".to_owned()),
    }
}

/// Where a new client should connect: the least-loaded live gateway. No
/// token: it is asked before logging in.
async fn least_loaded(State(state): State<AppState>) -> Response {
    match state.gateway.domain.gateways.least_loaded().await {
        Ok(Some(g)) => {
            let view = GatewayView {
                gateway_id: g.gateway_id,
                ws_url: g.ws_url,
                connections: g.connections,
            };
            Json(json!({ "ok": true, "data": view })).into_response()
        }
        Ok(None) => {
            HttpError(ApiError::new(ErrorCode::Unavailable, "no live gateway")).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the gateway registry");
            HttpError(ApiError::new(
                ErrorCode::Unavailable,
                "the database is unavailable; retry shortly",
            ))
            .into_response()
        }
    }
}

pub(crate) struct HttpError(pub(crate) ApiError);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match self.0.code() {
            ErrorCode::BadJson
            | ErrorCode::BadRequest
            | ErrorCode::UnknownOp
            | ErrorCode::TooLong => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthenticated | ErrorCode::BadCredentials | ErrorCode::BadToken => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::Forbidden | ErrorCode::TooLate => StatusCode::FORBIDDEN,
            ErrorCode::BadChecksum => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::QuotaExceeded => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::NameTaken | ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::Unavailable | ErrorCode::ProjectionLagging => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::Internal | ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({ "ok": false, "error": self.0 .0 });
        (status, Json(body)).into_response()
    }
}

impl<E: Into<ApiError>> From<E> for HttpError {
    fn from(e: E) -> Self {
        HttpError(e.into())
    }
}

pub(crate) async fn bearer(state: &AppState, headers: &HeaderMap) -> Result<Session, HttpError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "send Authorization: Bearer <token>",
            )
        })?;
    Ok(state
        .gateway
        .domain
        .accounts
        .authenticate(token.trim())
        .await?)
}

#[derive(Deserialize)]
struct ThreadsQuery {
    #[serde(default)]
    after: i64,
    limit: Option<PageSize>,
}

async fn threads(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ThreadsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let session = bearer(&state, &headers).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.map_or(DEFAULT_THREAD_PAGE, PageSize::get);
    let page = state
        .gateway
        .domain
        .threads
        .sync(&mut Writes::default(), &session, q.after.max(0), limit)
        .await?;
    Ok(Json(json!({ "ok": true, "data": page })).into_response())
}

#[derive(Deserialize)]
struct MessagesQuery {
    #[serde(default)]
    since: i64,
    /// Scrollback: the page just before this message.
    before: Option<i64>,
    limit: Option<PageSize>,
}

async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<i64>, axum::extract::rejection::PathRejection>,
    query: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let session = bearer(&state, &headers).await?;
    let Path(thread_id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let thread_id = ThreadId::parse(thread_id)
        .ok_or_else(|| ApiError::bad_request("thread_id must be a positive id"))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.map_or(DEFAULT_MESSAGE_PAGE, PageSize::get);
    let before = match q.before {
        None => None,
        Some(raw) => Some(
            MessageId::parse(raw)
                .ok_or_else(|| ApiError::bad_request("before must be a positive message id"))?,
        ),
    };
    let page = state
        .gateway
        .domain
        .messages
        .sync(
            &mut Writes::default(),
            &session,
            thread_id,
            MessageId::new(q.since.max(0)),
            before,
            limit,
        )
        .await?;
    Ok(Json(json!({ "ok": true, "data": page })).into_response())
}
