//! The files endpoints over HTTP (docs/PROTOCOL.md, "Files"): declare an
//! upload, send its chunks as raw bodies with a window of them in flight,
//! resume from the server's progress, download with ranges.

use crate::{protocol, transport, ClientError, Result};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use imlog_protocol::{
    ChunkAckView, ChunkChecksum, DeclareUpload, UploadId, UploadStateView, UploadView, WireError,
    CHUNK_CRC32C_HEADER, CHUNK_SHA256_HEADER,
};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A logged-in user's handle on the files endpoints of one server.
#[derive(Clone)]
pub struct FilesClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// A download's answer: status, the headers that matter, and the bytes.
#[derive(Debug)]
pub struct Downloaded {
    pub status: u16,
    pub content_range: Option<String>,
    pub etag: Option<String>,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl FilesClient {
    /// `base` is the server's `http://host:port`; `token` a session token.
    pub fn new(base: &str, token: &str) -> FilesClient {
        FilesClient {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// The same user's handle on another address of the server (a proxy).
    pub fn with_base(&self, base: &str) -> FilesClient {
        FilesClient::new(base, &self.token)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn answer<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
        let body = response.bytes().await.map_err(transport)?;
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(protocol)?;
        if value["ok"] == true {
            serde_json::from_value(value["data"].clone()).map_err(protocol)
        } else {
            let error: WireError =
                serde_json::from_value(value["error"].clone()).map_err(protocol)?;
            Err(ClientError::Server(error))
        }
    }

    pub async fn declare(&self, declared: &DeclareUpload) -> Result<UploadView> {
        let response = self
            .http
            .post(self.url("/v1/uploads"))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(declared).map_err(protocol)?)
            .send()
            .await
            .map_err(transport)?;
        Self::answer(response).await
    }

    /// Sends chunk `index` with its CRC-32C (cheap; the whole file's SHA-256
    /// is checked at completion).
    pub async fn put_chunk(
        &self,
        upload_id: UploadId,
        index: u32,
        bytes: Bytes,
    ) -> Result<ChunkAckView> {
        let crc = ChunkChecksum::Crc32c(crc32c::crc32c(&bytes));
        self.put_chunk_claiming(upload_id, index, bytes, &crc).await
    }

    /// Sends chunk `index` with its SHA-256.
    pub async fn put_chunk_sha256(
        &self,
        upload_id: UploadId,
        index: u32,
        bytes: Bytes,
    ) -> Result<ChunkAckView> {
        let sha = ChunkChecksum::Sha256(sha256_hex(&bytes));
        self.put_chunk_claiming(upload_id, index, bytes, &sha).await
    }

    /// Sends chunk `index` claiming `checksum` (tests send wrong ones).
    pub async fn put_chunk_claiming(
        &self,
        upload_id: UploadId,
        index: u32,
        bytes: Bytes,
        checksum: &ChunkChecksum,
    ) -> Result<ChunkAckView> {
        let (name, value) = match checksum {
            ChunkChecksum::Sha256(hex) => (CHUNK_SHA256_HEADER, hex.clone()),
            ChunkChecksum::Crc32c(crc) => (CHUNK_CRC32C_HEADER, format!("{crc:08x}")),
        };
        let response = self
            .http
            .put(self.url(&format!("/v1/uploads/{upload_id}/chunks/{index}")))
            .bearer_auth(&self.token)
            .header(name, value)
            .body(bytes)
            .send()
            .await
            .map_err(transport)?;
        Self::answer(response).await
    }

    pub async fn progress(&self, upload_id: UploadId) -> Result<UploadView> {
        let response = self
            .http
            .get(self.url(&format!("/v1/uploads/{upload_id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(transport)?;
        Self::answer(response).await
    }

    pub async fn cancel(&self, upload_id: UploadId) -> Result<()> {
        let response = self
            .http
            .delete(self.url(&format!("/v1/uploads/{upload_id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(transport)?;
        Self::answer::<serde_json::Value>(response)
            .await
            .map(|_| ())
    }

    /// Sends the chunks of `data` the server has not acknowledged, `window`
    /// at a time, in any order the acks come back.
    pub async fn send_missing(
        &self,
        upload: &UploadView,
        data: &Bytes,
        window: usize,
    ) -> Result<()> {
        let acked: std::collections::HashSet<u32> = upload.acked.iter().copied().collect();
        let missing: Vec<u32> = (0..upload.chunks).filter(|i| !acked.contains(i)).collect();
        let chunk = upload.chunk_size as usize;
        let mut sends = stream::iter(missing)
            .map(|index| {
                let start = index as usize * chunk;
                let end = (start + chunk).min(data.len());
                self.put_chunk(upload.upload_id, index, data.slice(start..end))
            })
            .buffer_unordered(window.max(1));
        while let Some(ack) = sends.next().await {
            ack?;
        }
        Ok(())
    }

    /// Waits until the upload has ended (completed or failed).
    pub async fn wait_ended(&self, upload_id: UploadId, within: Duration) -> Result<UploadView> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let view = self.progress(upload_id).await?;
            if view.state != UploadStateView::Uploading {
                return Ok(view);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ClientError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Declares, sends every chunk (`window` in flight) and waits for the
    /// server to complete the upload.
    pub async fn upload(
        &self,
        declared: &DeclareUpload,
        data: Bytes,
        window: usize,
    ) -> Result<UploadView> {
        let upload = self.declare(declared).await?;
        self.send_missing(&upload, &data, window).await?;
        self.wait_ended(upload.upload_id, Duration::from_secs(120))
            .await
    }

    /// `GET /v1/uploads/{id}/content`, with a `Range` header if given.
    pub async fn download(&self, upload_id: UploadId, range: Option<&str>) -> Result<Downloaded> {
        let mut request = self
            .http
            .get(self.url(&format!("/v1/uploads/{upload_id}/content")))
            .bearer_auth(&self.token);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_range, etag, sha256, content_type) = (
            header("content-range"),
            header("etag"),
            header("x-content-sha256"),
            header("content-type"),
        );
        if !(200..300).contains(&status) && status != 416 {
            return Self::answer::<serde_json::Value>(response)
                .await
                .and_then(|v| Err(ClientError::Protocol(format!("status {status} with {v}"))));
        }
        let body = response.bytes().await.map_err(transport)?;
        Ok(Downloaded {
            status,
            content_range,
            etag,
            sha256,
            content_type,
            body,
        })
    }
}
