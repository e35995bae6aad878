//! The files endpoints: declare an upload, put its chunks as raw bodies,
//! read its progress, cancel it, and download it with HTTP ranges. Every
//! request carries the session token (`Authorization: Bearer`).

use crate::error::ApiError;
use crate::http::{bearer, AppState, HttpError};
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::TryStreamExt;
use imlog_domain::files::Files;
use imlog_domain::Writes;
use imlog_projections::files::UploadRow;
use imlog_protocol::{
    ChunkChecksum, DeclareUpload, ErrorCode, UploadId, CHUNK_CRC32C_HEADER, CHUNK_SHA256_HEADER,
};
use serde_json::json;
use std::ops::Range;

pub(crate) fn routes(app: Router<AppState>, files: &Files) -> Router<AppState> {
    // A chunk body is read whole (to check its digest before storing it),
    // after the token: at most the largest chunk any upload can have.
    let chunk_limit = usize::try_from(files.settings().max_chunk_size()).unwrap_or(usize::MAX);
    app.route("/v1/uploads", post(declare))
        .route("/v1/uploads/{upload_id}", get(progress).delete(cancel))
        .route(
            "/v1/uploads/{upload_id}/chunks/{index}",
            put(put_chunk).layer(DefaultBodyLimit::max(chunk_limit)),
        )
        .route("/v1/uploads/{upload_id}/content", get(download))
}

fn upload_id(path: &str) -> Result<UploadId, HttpError> {
    UploadId::parse(path).ok_or_else(|| ApiError::bad_request("upload_id must be a UUID").into())
}

fn ok(status: StatusCode, data: impl serde::Serialize) -> Response {
    (status, Json(json!({ "ok": true, "data": data }))).into_response()
}

async fn declare(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<DeclareUpload>, JsonRejection>,
) -> Result<Response, HttpError> {
    let session = bearer(&state, &headers).await?;
    let Json(declared) = body.map_err(|e| match e {
        JsonRejection::JsonSyntaxError(_) => ApiError::new(ErrorCode::BadJson, e.body_text()),
        _ => ApiError::bad_request(e.body_text()),
    })?;
    let view = state
        .gateway
        .domain
        .files
        .declare(&mut Writes::default(), &session, declared)
        .await?;
    Ok(ok(StatusCode::CREATED, view))
}

async fn put_chunk(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, u32)>, PathRejection>,
    body: Body,
) -> Result<Response, HttpError> {
    // Who asks, before a byte of the body is read.
    let session = bearer(&state, &headers).await?;
    let Path((upload, index)) =
        path.map_err(|_| ApiError::bad_request("the chunk index must be a number from 0"))?;
    let upload_id = upload_id(&upload)?;
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let checksum = ChunkChecksum::parse(header(CHUNK_SHA256_HEADER), header(CHUNK_CRC32C_HEADER))
        .map_err(ApiError::from)?;
    let files = &state.gateway.domain.files;
    let limit = usize::try_from(files.settings().max_chunk_size()).unwrap_or(usize::MAX);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the chunk is larger than any chunk may be, or its body broke off",
        )
    })?;
    let ack = state
        .gateway
        .domain
        .files
        .put_chunk(
            &mut Writes::default(),
            &session,
            upload_id,
            index,
            &checksum,
            bytes,
        )
        .await?;
    Ok(ok(StatusCode::OK, ack))
}

async fn progress(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(upload): Path<String>,
) -> Result<Response, HttpError> {
    let session = bearer(&state, &headers).await?;
    let view = state
        .gateway
        .domain
        .files
        .progress(&mut Writes::default(), &session, upload_id(&upload)?)
        .await?;
    Ok(ok(StatusCode::OK, view))
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(upload): Path<String>,
) -> Result<Response, HttpError> {
    let session = bearer(&state, &headers).await?;
    state
        .gateway
        .domain
        .files
        .cancel(&mut Writes::default(), &session, upload_id(&upload)?)
        .await?;
    Ok(ok(StatusCode::OK, json!({})))
}

/// `GET /v1/uploads/{id}/content`: the bytes, whole (200) or one range
/// (206), with what lets curl and browsers resume (`Accept-Ranges`, a
/// strong `ETag` — the SHA-256 — and `If-Range`).
async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(upload): Path<String>,
) -> Result<Response, HttpError> {
    let session = bearer(&state, &headers).await?;
    let files = &state.gateway.domain.files;
    let upload = files
        .readable(&mut Writes::default(), &session, upload_id(&upload)?)
        .await?;
    let etag = format!("\"{}\"", upload.sha256);
    let wanted = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| if_range_holds(&headers, &etag));
    let range = match wanted.map(|r| parse_range(r, upload.size)) {
        None | Some(RangeAsked::Ignored) => None,
        Some(RangeAsked::Unsatisfiable) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            let value = format!("bytes */{}", upload.size);
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(response);
        }
        Some(RangeAsked::Bytes(range)) => Some(range),
    };
    let read = files.read(&upload, range.clone()).await?;
    let body = Body::from_stream(read.body.map_err(std::io::Error::other));
    let mut response = Response::new(body);
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!(
            "bytes {}-{}/{}",
            read.range.start,
            read.range.end.saturating_sub(1),
            read.size
        );
        insert(response.headers_mut(), header::CONTENT_RANGE, &value);
    }
    let h = response.headers_mut();
    insert(
        h,
        header::CONTENT_LENGTH,
        &(read.range.end - read.range.start).to_string(),
    );
    insert(h, header::ACCEPT_RANGES, "bytes");
    insert(h, header::ETAG, &etag);
    insert(h, "x-content-sha256", &upload.sha256);
    content_headers(h, &upload);
    Ok(response)
}

fn insert(headers: &mut HeaderMap, name: impl axum::http::header::IntoHeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// The declared type, but never as something a browser would run on our
/// origin: only images and videos are shown inline, everything else is an
/// attachment, nothing is sniffed, and scripts are sandboxed.
fn content_headers(h: &mut HeaderMap, upload: &UploadRow) {
    let media = upload.content_type.starts_with("image/") && upload.content_type != "image/svg+xml"
        || upload.content_type.starts_with("video/");
    let content_type = if media {
        upload.content_type.as_str()
    } else {
        "application/octet-stream"
    };
    insert(h, header::CONTENT_TYPE, content_type);
    let disposition = if media { "inline" } else { "attachment" };
    insert(
        h,
        header::CONTENT_DISPOSITION,
        &format!(
            "{disposition}; filename*=UTF-8''{}",
            percent_encode(&upload.name)
        ),
    );
    insert(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    insert(
        h,
        header::CONTENT_SECURITY_POLICY,
        "sandbox; default-src 'none'",
    );
    insert(
        h,
        header::CACHE_CONTROL,
        "private, max-age=31536000, immutable",
    );
}

/// RFC 5987 `attr-char`s pass; every other byte is `%XX`.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `If-Range` with another validator means "the file changed: send it all".
fn if_range_holds(headers: &HeaderMap, etag: &str) -> bool {
    match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(validator) => validator.trim() == etag,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RangeAsked {
    /// Serve one range.
    Bytes(Range<u64>),
    /// Not one satisfiable range of bytes: 416.
    Unsatisfiable,
    /// Malformed, or several ranges: RFC 9110 lets a server send it all.
    Ignored,
}

/// One `bytes=` range of an object of `size` bytes.
fn parse_range(header: &str, size: u64) -> RangeAsked {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeAsked::Ignored;
    };
    if spec.contains(',') {
        return RangeAsked::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsked::Ignored;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) if n > 0 => RangeAsked::Bytes(size.saturating_sub(n)..size),
        (true, _, Some(_)) => RangeAsked::Unsatisfiable,
        (false, Some(start), _) if start >= size => RangeAsked::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => RangeAsked::Bytes(start..size),
        (false, Some(start), Some(end)) if end >= start => {
            RangeAsked::Bytes(start..end.saturating_add(1).min(size))
        }
        _ => RangeAsked::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        use RangeAsked::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Bytes(0..100));
        assert_eq!(parse_range("bytes=900-", 1000), Bytes(900..1000));
        assert_eq!(parse_range("bytes=-10", 1000), Bytes(990..1000));
        assert_eq!(parse_range("bytes=-5000", 1000), Bytes(0..1000));
        assert_eq!(parse_range("bytes=990-5000", 1000), Bytes(990..1000));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Ignored);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ignored);
        assert_eq!(parse_range("items=0-1", 1000), Ignored);
        assert_eq!(parse_range("bytes=a-b", 1000), Ignored);
    }

    #[test]
    fn names_are_percent_encoded_in_the_disposition() {
        assert_eq!(percent_encode("a b\"/é.txt"), "a%20b%22%2F%C3%A9.txt");
    }
}
