//! The files surface: declaring an upload, its chunks' acks, its progress,
//! and the values a declaration parses into. Chunk bytes never travel in
//! JSON: they are raw HTTP bodies (docs/PROTOCOL.md, "Files").

use crate::values::string_value;
use crate::WireError;
use chrono::{DateTime, Utc};
use imlog_events::{TaskId, TransferMode, TransferState, UploadId, UploadKind, UserId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The header carrying a chunk's SHA-256 (lower-case or upper-case hex).
pub const CHUNK_SHA256_HEADER: &str = "x-chunk-sha256";
/// Or: the header carrying its CRC-32C (Castagnoli), 8 hex digits — much
/// cheaper to compute; the whole file is still checked against its SHA-256.
pub const CHUNK_CRC32C_HEADER: &str = "x-chunk-crc32c";

/// What a chunk's bytes must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkChecksum {
    Sha256(String),
    Crc32c(u32),
}

impl ChunkChecksum {
    /// From the request's headers (`sha256` or `crc32c` value, as sent).
    pub fn parse(sha256: Option<&str>, crc32c: Option<&str>) -> Result<ChunkChecksum, WireError> {
        match (sha256.map(str::trim), crc32c.map(str::trim)) {
            (Some(sha), None) => Sha256Hex::parse(sha)
                .map(|h| ChunkChecksum::Sha256(h.0))
                .map_err(|_| WireError::bad_request("X-Chunk-SHA256 must be 64 hexadecimal digits")),
            (None, Some(crc)) if crc.len() == 8 => u32::from_str_radix(crc, 16)
                .map(ChunkChecksum::Crc32c)
                .map_err(|_| WireError::bad_request("X-Chunk-CRC32C must be 8 hexadecimal digits")),
            (None, Some(_)) => Err(WireError::bad_request("X-Chunk-CRC32C must be 8 hexadecimal digits")),
            _ => Err(WireError::bad_request(
                "send the chunk's checksum in one header: X-Chunk-SHA256 (hex) or X-Chunk-CRC32C (8 hex digits)",
            )),
        }
    }

    /// Of `bytes`, in the same algorithm.
    pub fn of(&self, bytes: &[u8]) -> ChunkChecksum {
        use sha2::Digest;
        match self {
            ChunkChecksum::Sha256(_) => {
                ChunkChecksum::Sha256(hex::encode(sha2::Sha256::digest(bytes)))
            }
            ChunkChecksum::Crc32c(_) => ChunkChecksum::Crc32c(crc32c::crc32c(bytes)),
        }
    }
}

impl std::fmt::Display for ChunkChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkChecksum::Sha256(hex) => write!(f, "SHA-256 {hex}"),
            ChunkChecksum::Crc32c(crc) => write!(f, "CRC-32C {crc:08x}"),
        }
    }
}

/// `POST /v1/uploads`: what the client is about to upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclareUpload {
    pub name: FileName,
    pub size: u64,
    #[serde(default = "ContentType::octet_stream")]
    pub content_type: ContentType,
    pub sha256: Sha256Hex,
    pub kind: UploadKind,
}

/// An upload as the server keeps it: how to cut the bytes, and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadView {
    pub upload_id: UploadId,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    pub kind: UploadKind,
    /// Every chunk has this size but the last (`size - (chunks-1) * chunk_size`).
    pub chunk_size: u64,
    pub chunks: u32,
    pub state: UploadStateView,
    /// Why it failed, said to people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The indexes of the stored chunks (while uploading): send the others.
    #[serde(default)]
    pub acked: Vec<u32>,
    pub acked_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadStateView {
    Uploading,
    Completed,
    /// With `failure`: `checksum_mismatch`, `expired` or `cancelled`.
    Failed,
}

/// `PUT /v1/uploads/{id}/chunks/{index}`: the chunk is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkAckView {
    pub upload_id: UploadId,
    pub index: u32,
    pub size: u64,
    /// Chunks acknowledged so far (this one included).
    pub acked_chunks: u32,
}

/// A file transfer task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferView {
    pub task_id: TaskId,
    pub from: UserId,
    pub to: UserId,
    pub name: String,
    pub size: u64,
    pub mode: TransferMode,
    pub state: TransferState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Online: the WebSocket URL both join (`.../v1/transfers/{task_id}/ws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_url: Option<String>,
    /// Offline: download it from `GET /v1/uploads/{upload_id}/content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<UploadId>,
    pub offered_at: DateTime<Utc>,
}

/// A file's display name: 1–255 characters, no control characters. It is
/// shown to people and never becomes a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(String);
string_value!(FileName);

impl FileName {
    pub fn parse(raw: impl Into<String>) -> Result<FileName, WireError> {
        let raw = raw.into();
        let chars = raw.chars().count();
        if (1..=255).contains(&chars) && !raw.chars().any(char::is_control) {
            Ok(FileName(raw))
        } else {
            Err(WireError::bad_request(
                "name must be 1-255 characters without control characters",
            ))
        }
    }
}

/// A MIME type, `type/subtype` of token characters (parameters dropped),
/// lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType(String);
string_value!(ContentType);

impl ContentType {
    pub fn octet_stream() -> ContentType {
        ContentType("application/octet-stream".into())
    }

    pub fn parse(raw: impl AsRef<str>) -> Result<ContentType, WireError> {
        let essence = raw.as_ref().split(';').next().unwrap_or("").trim();
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        match essence.split_once('/') {
            Some((kind, sub)) if essence.len() <= 127 && token(kind) && token(sub) => {
                Ok(ContentType(essence.to_ascii_lowercase()))
            }
            _ => Err(WireError::bad_request(
                "content_type must be a MIME type such as image/png",
            )),
        }
    }
}

/// A SHA-256 digest as 64 hex digits (kept lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Hex(String);
string_value!(Sha256Hex);

impl Sha256Hex {
    pub fn parse(raw: impl AsRef<str>) -> Result<Sha256Hex, WireError> {
        let raw = raw.as_ref().trim();
        if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256Hex(raw.to_ascii_lowercase()))
        } else {
            Err(WireError::bad_request(
                "a SHA-256 must be 64 hexadecimal digits",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_parse_and_refuse_what_they_must() {
        let ok: DeclareUpload = serde_json::from_str(&format!(
            r#"{{"name":"../../etc/passwd","size":3,"content_type":"Image/PNG; q=1","sha256":"{}","kind":"image"}}"#,
            "AB".repeat(32)
        ))
        .unwrap();
        assert_eq!(ok.name.as_str(), "../../etc/passwd", "a name is only shown");
        assert_eq!(ok.content_type.as_str(), "image/png");
        assert_eq!(ok.sha256.as_str(), "ab".repeat(32));
        assert!(FileName::parse("").is_err());
        assert!(FileName::parse("a\nb").is_err());
        assert!(FileName::parse("x".repeat(256)).is_err());
        assert!(ContentType::parse("text").is_err());
        assert!(ContentType::parse("text/<script>").is_err());
        assert!(Sha256Hex::parse("zz".repeat(32)).is_err());
        assert!(serde_json::from_str::<DeclareUpload>(
            r#"{"name":"a","size":1,"sha256":"x","kind":"image"}"#
        )
        .is_err());
    }
}
